"""Learning the conversion model from this service's own sessions.

Sessions are rebuilt from the event log with the same session logic the
live path uses (`apply_event`): a profile's events, in time order, split into
visits by SESSION_TIMEOUT gaps. A visit is one example: its inputs are the
model's signals (`conversion.signals`) of the session as it stood just
before the first goal event (or at its end when there was none), with the
history of earlier visits; its label is whether the goal event happened in
the visit. Reading the session only up to the goal keeps the label out of
the inputs: a purchase empties the cart, and a model that saw that would
learn that empty carts convert.

The model is scikit-learn's logistic regression on standardised inputs,
turned back into weights on the raw signals so the live path needs no
scaler. It is judged on a held-out share of the visits: the area under the
ROC curve (how well it ranks) and the expected calibration error (how well
its probabilities match observed rates).

Needs the `train` extra (scikit-learn, numpy): `pip install tessera-profiles[train]`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tessera.profiles.domain.conversion import SIGNALS, ConversionModel, signals
from tessera.profiles.domain.history import History, add_to_history
from tessera.profiles.domain.model import EventData
from tessera.profiles.domain.session import SESSION_TIMEOUT, Session, apply_event


@dataclass(frozen=True)
class Example:
    """One visit: the model's inputs before the goal, and whether the goal happened."""

    inputs: tuple[float, ...]
    converted: bool


@dataclass(frozen=True)
class TrainingReport:
    """How a trained model did on visits it did not learn from."""

    version: str
    examples: int
    conversions: int
    held_out: int
    auc: float
    calibration_error: float


def examples_from_events(events: Iterable[EventData], goal_type: str) -> list[Example]:
    """One example per visit of every profile in `events` (any order)."""
    by_profile: dict[str, list[EventData]] = defaultdict(list)
    for event in events:
        by_profile[event.profile_id].append(event)
    examples: list[Example] = []
    for profile_events in by_profile.values():
        profile_events.sort(key=lambda e: (e.timestamp, e.event_id))
        history = History()
        for visit in _visits(profile_events):
            examples.append(_example(visit, history, goal_type))
            for event in visit:
                history = add_to_history(history, event)
    return examples


def _visits(events: Sequence[EventData]) -> list[list[EventData]]:
    visits: list[list[EventData]] = []
    last: dt.datetime | None = None
    for event in events:
        if last is None or event.timestamp - last > SESSION_TIMEOUT:
            visits.append([])
        visits[-1].append(event)
        last = event.timestamp
    return visits


def _example(visit: Sequence[EventData], history: History, goal_type: str) -> Example:
    session: Session | None = None
    for event in visit:
        if event.type == goal_type:
            return Example(signals(session, history), True)
        session = apply_event(session, event)
    return Example(signals(session, history), False)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (scikit-learn's roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)))


def expected_calibration_error(
    probabilities: Sequence[float], labels: Sequence[bool], bins: int = 10
) -> float:
    """Expected calibration error over `bins` equal-width probability bins.

    ECE = sum over bins b of (n_b / N) * |observed rate in b - mean probability in b|
    (Naeini, Cooper and Hauskrecht 2015; Guo et al. 2017, eq. 3).
    """
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels, dtype=float)
    if p.size == 0:
        return 0.0
    which = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        if count:
            error += count / p.size * abs(float(y[members].mean()) - float(p[members].mean()))
    return error


def split(count: int, held_out_share: float, seed: int) -> tuple[NDArray[np.int64], ...]:
    """Row numbers to fit on and to hold out: a seeded shuffle, then a cut."""
    order = np.random.default_rng(seed).permutation(count)
    cut = int(count * (1 - held_out_share))
    return order[:cut], order[cut:]


def train(
    examples: Sequence[Example],
    version: str,
    *,
    held_out_share: float = 0.3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[ConversionModel, TrainingReport]:
    """Fit the model on part of `examples` and judge it on the rest."""
    from sklearn.linear_model import LogisticRegression

    if len(examples) < 20:
        raise ValueError(f"{len(examples)} visits are too few to learn from (at least 20)")
    inputs: NDArray[np.float64] = np.asarray([e.inputs for e in examples], dtype=float)
    labels = np.asarray([e.converted for e in examples], dtype=int)
    if labels.min() == labels.max():
        raise ValueError("every visit has the same outcome: nothing to learn from")
    fit_rows, test_rows = split(len(examples), held_out_share, seed)

    if progress:
        progress(f"fitting on {len(fit_rows)} visits")
    mean = inputs[fit_rows].mean(axis=0)
    scale = inputs[fit_rows].std(axis=0)
    scale[scale == 0] = 1.0
    fitted = LogisticRegression(C=1e4, max_iter=1000)
    fitted.fit((inputs[fit_rows] - mean) / scale, labels[fit_rows])
    # Back to the raw signals: w_raw = w / scale, b_raw = b - sum(w * mean / scale).
    weights = fitted.coef_[0] / scale
    intercept = float(fitted.intercept_[0] - np.sum(fitted.coef_[0] * mean / scale))
    model = ConversionModel(
        version=version,
        intercept=intercept,
        weights={name: float(w) for name, w in zip(SIGNALS, weights, strict=True)},
    )

    if progress:
        progress(f"judging on {len(test_rows)} held-out visits")
    scores = 1 / (1 + np.exp(-np.clip(inputs[test_rows] @ weights + intercept, -700, 700)))
    report = TrainingReport(
        version=version,
        examples=len(examples),
        conversions=int(labels.sum()),
        held_out=len(test_rows),
        auc=roc_auc(scores.tolist(), labels[test_rows].astype(bool).tolist()),
        calibration_error=expected_calibration_error(
            scores.tolist(), labels[test_rows].astype(bool).tolist()
        ),
    )
    return model, report
