"""A report a marketer can read: a table per variant and a chart of lift over time.

`ExperimentReport` holds what is shown; `build_report` makes one from
cumulative per-variant Samples (one list per day), running the statistics
(`compare_all`, `srm_p_value`, `verdict`); `render_table` prints it with rich
and `write_chart` draws the cumulative relative lift of each variant with its
always-valid interval (the interval that stays honest when read every day).
rich and matplotlib come with the `report` extra of tessera-experiments and
are imported only by the two rendering functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tessera.experiments.domain.statistics import (
    Comparison,
    Sample,
    Verdict,
    compare_all,
    srm_p_value,
    verdict,
)

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "ExperimentReport",
    "TimelinePoint",
    "VariantRow",
    "build_report",
    "render_table",
    "write_chart",
]


@dataclass(frozen=True)
class VariantRow:
    """One variant's line of the table. Lift fields are None on the control row."""

    variant_key: str
    is_control: bool
    exposures: int
    conversions: float
    """People who converted (conversion goal) or revenue summed (revenue goal)."""
    mean: float
    """Conversion rate, or revenue per person."""
    absolute_lift: float | None = None
    relative_lift: float | None = None
    relative_ci: tuple[float, float] | None = None
    """Fixed-horizon interval of the relative lift."""
    sequential_ci: tuple[float, float] | None = None
    """Always-valid interval of the relative lift."""
    p_value: float | None = None
    sequential_p_value: float | None = None
    chance_to_beat_control: float | None = None


@dataclass(frozen=True)
class TimelinePoint:
    """Cumulative relative lift of one variant over the control at one moment."""

    at: datetime
    variant_key: str
    relative_lift: float
    ci_low: float
    """Always-valid (sequential) interval, so every point may be read."""
    ci_high: float


@dataclass(frozen=True)
class ExperimentReport:
    """Everything `tessera report` shows for one experiment."""

    key: str
    status: Verdict
    srm_p_value: float
    variants: list[VariantRow]
    timeline: list[TimelinePoint]
    goal: str = "conversion"
    """"conversion" or "revenue": names the columns."""
    alpha: float = 0.05


def build_report(
    key: str,
    variant_keys: Sequence[str],
    weights: Sequence[float],
    days: Sequence[tuple[datetime, Sequence[Sample]]],
    *,
    control_index: int = 0,
    goal: str = "conversion",
    min_sample: int = 100,
    alpha: float = 0.05,
    sequential_tuning: float | None = None,
) -> ExperimentReport:
    """A report from cumulative Samples per variant, one entry per moment, oldest first.

    The table reads the last moment; the timeline has every moment with
    enough people in both arms (two each) to say anything.
    """
    if not days:
        raise ValueError("a report needs at least one moment of data")
    for at, samples in days:
        if len(samples) != len(variant_keys):
            raise ValueError(f"{at}: {len(samples)} samples for {len(variant_keys)} variants")

    timeline: list[TimelinePoint] = []
    for at, samples in days:
        for index, result in _compare_indexed(samples, control_index, alpha, sequential_tuning):
            low, high = result.sequential_ci
            if math.isfinite(low) and math.isfinite(high):
                timeline.append(
                    TimelinePoint(at, variant_keys[index], result.relative_lift, low, high)
                )

    last = days[-1][1]
    latest = dict(_compare_indexed(last, control_index, alpha, sequential_tuning))
    srm = srm_p_value([s.n for s in last], weights)
    status = verdict(list(latest.values()), srm, min_sample=min_sample, alpha=alpha)
    rows: list[VariantRow] = []
    for index, (variant_key, sample) in enumerate(zip(variant_keys, last, strict=True)):
        if index == control_index:
            rows.append(VariantRow(variant_key, True, sample.n, sample.total, sample.mean))
            continue
        result = latest[index]
        rows.append(
            VariantRow(
                variant_key=variant_key,
                is_control=False,
                exposures=sample.n,
                conversions=sample.total,
                mean=sample.mean,
                absolute_lift=result.absolute_lift,
                relative_lift=result.relative_lift,
                relative_ci=result.relative_ci,
                sequential_ci=result.sequential_ci,
                p_value=result.p_value,
                sequential_p_value=result.sequential_p_value,
                chance_to_beat_control=result.chance_to_win,
            )
        )
    return ExperimentReport(key, status, srm, rows, timeline, goal, alpha)


def _compare_indexed(
    samples: Sequence[Sample],
    control_index: int,
    alpha: float,
    sequential_tuning: float | None,
) -> list[tuple[int, Comparison]]:
    results = compare_all(
        samples, control_index=control_index, alpha=alpha, sequential_tuning=sequential_tuning
    )
    treatments = [i for i in range(len(samples)) if i != control_index]
    return list(zip(treatments, results, strict=True))


_STATUS_TEXT = {
    Verdict.COLLECTING: ("COLLECTING", "yellow", "not enough people yet to say anything"),
    Verdict.SIGNIFICANT: (
        "SIGNIFICANT",
        "bold green",
        "a variant differs from control (always-valid p below alpha)",
    ),
    Verdict.INCONCLUSIVE: ("INCONCLUSIVE", "cyan", "no clear difference so far"),
    Verdict.BROKEN: (
        "BROKEN",
        "bold red",
        "the split does not match the weights (SRM): do not trust the lifts",
    ),
}


def _percent(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 100:+.{digits}f}%" if signed else f"{value * 100:.{digits}f}%"


def _interval(ci: tuple[float, float] | None) -> str:
    if ci is None or not all(math.isfinite(v) for v in ci):
        return "-"
    return f"{ci[0] * 100:+.1f}% to {ci[1] * 100:+.1f}%"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


def render_table(report: ExperimentReport, console: Console | None = None) -> None:
    """Print the report: a headline with the status, then one row per variant."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console()
    label, style, meaning = _STATUS_TEXT[report.status]
    level = round((1 - report.alpha) * 100)
    revenue = report.goal == "revenue"
    table = Table(
        title=f"Experiment {report.key}",
        caption=(
            f"Lift is relative to the control. Interval: {level}% fixed-horizon "
            f"(read once at the planned size); always-valid: {level}% confidence "
            "sequence, safe to read every day."
        ),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("Variant", style="bold")
    table.add_column("People", justify="right")
    table.add_column("Revenue" if revenue else "Converted", justify="right")
    table.add_column("Per person" if revenue else "Rate", justify="right")
    table.add_column("Lift", justify="right")
    table.add_column(f"{level}% interval", justify="right")
    table.add_column("Always-valid interval", justify="right")
    table.add_column("p-value", justify="right")
    table.add_column("Always-valid p", justify="right")
    table.add_column("Chance to beat control", justify="right")
    for row in report.variants:
        measured = f"{row.conversions:,.2f}" if revenue else f"{row.conversions:,.0f}"
        mean = f"{row.mean:,.2f}" if revenue else _percent(row.mean)
        if row.is_control:
            table.add_row(
                row.variant_key if row.variant_key == "control" else f"{row.variant_key} (control)",
                f"{row.exposures:,}",
                measured,
                mean,
                "baseline",
                "",
                "",
                "",
                "",
                "",
            )
            continue
        lift_style = ""
        if row.relative_lift is not None and math.isfinite(row.relative_lift):
            lift_style = "green" if row.relative_lift > 0 else "red"
        table.add_row(
            row.variant_key,
            f"{row.exposures:,}",
            measured,
            mean,
            f"[{lift_style}]{_percent(row.relative_lift, signed=True)}[/]"
            if lift_style
            else _percent(row.relative_lift, signed=True),
            _interval(row.relative_ci),
            _interval(row.sequential_ci),
            _p(row.p_value),
            _p(row.sequential_p_value),
            _percent(row.chance_to_beat_control, digits=1),
        )
    out.print(
        f"Status: [{style}]{label}[/] - {meaning}. "
        f"Sample ratio check p = {_p(report.srm_p_value)}"
        + (" (below 0.001: broken)" if report.status is Verdict.BROKEN else "")
    )
    out.print(table)


def write_chart(report: ExperimentReport, path: Path) -> Path:
    """Draw cumulative relative lift per variant with its always-valid band; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.ticker import PercentFormatter

    figure, axes = plt.subplots(figsize=(10, 6), dpi=120)
    keys = [row.variant_key for row in report.variants if not row.is_control]
    palette = plt.get_cmap("tab10")
    for number, key in enumerate(keys):
        points = [p for p in report.timeline if p.variant_key == key]
        if not points:
            continue
        color = palette(number % 10)
        # Naive UTC datetime64: what matplotlib's date axis reads without a timezone warning.
        at = np.array([p.at.astimezone(UTC).replace(tzinfo=None) for p in points], "datetime64[s]")
        lows = [p.ci_low * 100 for p in points]
        highs = [p.ci_high * 100 for p in points]
        axes.fill_between(at, lows, highs, color=color, alpha=0.12, linewidth=0)
        # Dashed edges keep each band readable where two overlap.
        axes.plot(at, lows, color=color, linewidth=1, linestyle="--", alpha=0.8)
        axes.plot(at, highs, color=color, linewidth=1, linestyle="--", alpha=0.8)
        axes.plot(
            at,
            [p.relative_lift * 100 for p in points],
            color=color,
            linewidth=2,
            marker="o",
            markersize=3,
            label=f"{key}: {points[-1].relative_lift * 100:+.1f}% "
            f"({points[-1].ci_low * 100:+.1f}% to {points[-1].ci_high * 100:+.1f}%)",
        )
    axes.axhline(0, color="black", linewidth=1)
    axes.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    axes.set_ylabel("Lift over control (cumulative)")
    axes.set_xlabel("Day (results up to the end of the day)")
    label = _STATUS_TEXT[report.status][0]
    axes.set_title(
        f"{report.key}: cumulative lift with {round((1 - report.alpha) * 100)}% "
        f"always-valid interval - {label}",
        loc="left",
    )
    axes.grid(True, alpha=0.3)
    axes.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=max(1, min(3, len(keys))),
        frameon=False,
        title="Variant: latest lift (always-valid interval); dashed lines bound each interval",
    )
    # Early days have very wide intervals; keep the latest ones readable.
    latest = [p for p in report.timeline if p.at >= report.timeline[len(report.timeline) // 4].at]
    if latest:
        low = min(p.ci_low for p in latest) * 100
        high = max(p.ci_high for p in latest) * 100
        margin = (high - low) * 0.15 + 1
        axes.set_ylim(min(low, 0) - margin, max(high, 0) + margin)
    axes.xaxis.set_major_locator(AutoDateLocator(maxticks=10))  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(DateFormatter("%b %d"))  # type: ignore[no-untyped-call]
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
