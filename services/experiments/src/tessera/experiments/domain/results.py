"""From people and their goal events to per-variant statistics, a status and a timeline.

Pure: the storage hands over each exposed person (their sticky variant,
first exposure, covariate and the experiment version they were first
exposed under) and the goal events they did after it; this module turns
them into the sums the statistics take (`statistics.Sample`), compares each
variant with the control, checks the split and gives the verdict, and does
the same at the end of every UTC day for the timeline.

What counts:

- a person counts in their sticky variant from their first exposure; people
  held out are counted apart and never in a variant;
- a goal event counts from the person's first exposure (inclusive) until
  the experiment's end time, if it has one;
- for a conversion goal a person's metric is 1 when they did the goal event
  at least once, else 0; for a revenue goal it is the `revenue` of their
  goal events summed. Revenue is summed for both kinds, for the table.

The sample-ratio test compares the people per variant with the split they
were assigned under: each person brings the weights of the experiment
version they were first exposed under, so changing the weights midway (the
sticky people keep their variant, newcomers follow the new weights) is not
mistaken for a broken split.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .model import GoalKind
from .statistics import Comparison, Sample, Verdict, compare_all, srm_p_value, verdict

__all__ = [
    "DayResults",
    "Outcome",
    "Results",
    "VariantResults",
    "compute_results",
]

MAX_TIMELINE_DAYS = 400
"""The timeline covers at most the last 400 days (the feed's retention)."""

_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One exposed person as results need them."""

    variant_key: str
    in_holdout: bool
    exposed_at: dt.datetime
    pre_value: float | None
    version: int = 0
    """The experiment's version at the first exposure (its split then)."""


@dataclass(frozen=True)
class VariantResults:
    """One variant's numbers; `comparison` is None for the control."""

    variant_key: str
    weight: float
    exposures: int
    conversions: int
    revenue: float
    mean: float
    """The goal metric per person: conversion rate or revenue per person."""
    comparison: Comparison | None


@dataclass(frozen=True)
class DayResults:
    """Cumulative results at the end of one UTC day."""

    date: dt.date
    variants: list[VariantResults]


@dataclass(frozen=True)
class Results:
    """Everything GetResults answers."""

    variants: list[VariantResults]
    srm_p_value: float
    status: Verdict
    status_reason: str
    holdout_exposures: int
    timeline: list[DayResults]


def _epoch(moment: dt.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def compute_results(
    variant_keys: Sequence[str],
    weights: Sequence[float],
    people: Sequence[tuple[str, Outcome]],
    events: Sequence[tuple[str, dt.datetime, float]],
    goal_kind: GoalKind,
    now: dt.datetime,
    *,
    end_time: dt.datetime | None = None,
    splits: Mapping[int, Mapping[str, float]] | None = None,
    cuped: bool = True,
    min_sample: int = 100,
    alpha: float = 0.05,
    timeline: bool = True,
) -> Results:
    """The results of one experiment at `now`.

    `variant_keys` start with the control; `weights` are the current ones,
    in the same order. `people` pairs a profile id with its outcome;
    `events` are (profile id, time, revenue) of goal events. `splits` maps
    an experiment version to its weights by variant key; a person whose
    version is not there is taken under the current weights.
    """
    index = {key: i for i, key in enumerate(variant_keys)}
    current = dict(zip(variant_keys, weights, strict=True))
    cutoff = min(_epoch(now), _epoch(end_time)) if end_time else _epoch(now)

    counted = [(pid, o) for pid, o in people if not o.in_holdout and o.variant_key in index]
    holdout = sum(1 for _, o in people if o.in_holdout)
    position = {pid: i for i, (pid, _) in enumerate(counted)}
    variant = np.array([index[o.variant_key] for _, o in counted], dtype=np.int64)
    exposed = np.array([_epoch(o.exposed_at) for _, o in counted], dtype=np.float64)
    covariate = np.array([o.pre_value or 0.0 for _, o in counted], dtype=np.float64)

    kept = [(position[pid], _epoch(at), revenue) for pid, at, revenue in events if pid in position]
    person = np.array([k[0] for k in kept], dtype=np.int64)
    at = np.array([k[1] for k in kept], dtype=np.float64)
    revenue = np.array([k[2] for k in kept], dtype=np.float64)
    valid = (at >= exposed[person]) & (at < cutoff) if kept else np.zeros(0, dtype=bool)
    person, at, revenue = person[valid], at[valid], revenue[valid]

    # Expected share per variant: each person brings the split of their version.
    expected = np.zeros(len(variant_keys))
    for version, people_of_version in Counter(o.version for _, o in counted).items():
        split = (splits or {}).get(version) or current
        total = math.fsum(w for k, w in split.items() if k in index and w > 0)
        if total > 0:
            for key, weight in split.items():
                if key in index and weight > 0:
                    expected[index[key]] += people_of_version * weight / total

    def at_cutoff(moment: float) -> tuple[list[Sample], np.ndarray, np.ndarray]:
        inside = exposed < moment
        happened = at < moment
        per_person_revenue = np.bincount(
            person[happened], weights=revenue[happened], minlength=len(counted)
        )
        converted = np.bincount(person[happened], minlength=len(counted)) > 0
        y = converted.astype(np.float64) if goal_kind is GoalKind.CONVERSION else per_person_revenue
        x = covariate
        samples = []
        for i in range(len(variant_keys)):
            mask = inside & (variant == i)
            samples.append(
                Sample(
                    int(mask.sum()),
                    float(y[mask].sum()),
                    float((y[mask] ** 2).sum()),
                    float(x[mask].sum()),
                    float((x[mask] ** 2).sum()),
                    float((x[mask] * y[mask]).sum()),
                )
            )
        conversions = np.array(
            [int((converted & inside & (variant == i)).sum()) for i in range(len(variant_keys))]
        )
        revenues = np.array(
            [
                float(per_person_revenue[inside & (variant == i)].sum())
                for i in range(len(variant_keys))
            ]
        )
        return samples, conversions, revenues

    def rows(moment: float) -> list[VariantResults]:
        samples, conversions, revenues = at_cutoff(moment)
        comparisons = _compare(samples, cuped, alpha)
        return [
            VariantResults(
                key,
                current[key],
                samples[i].n,
                int(conversions[i]),
                float(revenues[i]),
                samples[i].mean,
                None if i == 0 else comparisons[i - 1],
            )
            for i, key in enumerate(variant_keys)
        ]

    variants = rows(cutoff)
    comparisons = [v.comparison for v in variants if v.comparison is not None]
    counts = [v.exposures for v in variants]
    srm = srm_p_value(counts, list(expected)) if expected.sum() > 0 else 1.0
    status = verdict(comparisons, srm, min_sample=min_sample, alpha=alpha)
    return Results(
        variants=variants,
        srm_p_value=srm,
        status=status,
        status_reason=_reason(status, variants, srm, min_sample, alpha),
        holdout_exposures=holdout,
        timeline=[DayResults(day, rows(end)) for day, end in _days(exposed, cutoff)]
        if timeline
        else [],
    )


def _compare(samples: list[Sample], cuped: bool, alpha: float) -> list[Comparison]:
    return compare_all(samples, control_index=0, alpha=alpha, cuped=cuped)


def _days(exposed: np.ndarray, cutoff: float) -> list[tuple[dt.date, float]]:
    """Each UTC day from the first exposure to the cutoff, with the moment it ends."""
    if exposed.size == 0:
        return []
    first = dt.datetime.fromtimestamp(float(exposed.min()), dt.UTC).date()
    last = dt.datetime.fromtimestamp(cutoff, dt.UTC).date()
    first = max(first, last - dt.timedelta(days=MAX_TIMELINE_DAYS - 1))
    days = []
    day = first
    while day <= last:
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
        days.append((day, min(end, cutoff)))
        day += dt.timedelta(days=1)
    return days


def _reason(
    status: Verdict, variants: list[VariantResults], srm: float, min_sample: int, alpha: float
) -> str:
    if status is Verdict.BROKEN:
        split = ", ".join(f"{v.variant_key} {v.exposures}" for v in variants)
        return (
            f"sample ratio mismatch (p = {srm:.2g}): exposures ({split}) do not split by the "
            "weights; fix assignment or exposure logging before reading any lift"
        )
    if status is Verdict.COLLECTING:
        smallest = min(v.exposures for v in variants)
        return f"{smallest} people in the smallest arm; results are read from {min_sample}"
    treatments = [v for v in variants if v.comparison is not None]
    threshold = alpha / max(1, len(treatments))
    if status is Verdict.SIGNIFICANT:
        winners = [
            v.variant_key
            for v in treatments
            if v.comparison is not None and v.comparison.sequential_p_value < threshold
        ]
        return (
            f"{', '.join(winners)} differs from the control (always-valid p below {threshold:.3g})"
        )
    return f"no variant differs from the control yet (always-valid p at or above {threshold:.3g})"
