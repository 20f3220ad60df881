"""Pure summaries of recorded latencies: percentiles, throughput, ratios.

No I/O and no gRPC here, so the arithmetic the report rests on is tested with
known values (tests/unit/bench/test_bench_stats.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

PERCENTILES = (50.0, 90.0, 99.0)
"""The latency percentiles every level reports."""

DECIDE_MODES = {"decide": "in_process", "decide-rpc": "rpc"}
"""Each Decide target and the TESSERA_EVALUATION mode its decision service runs."""

BASELINE = "echo"
"""The target every other target is compared with."""

RELAY = "relay"
"""The two-hop floor: an echo that passes each call on as a message on an open
stream to the echo (`python -m bench.echo --relay-to`), Decide's shape with none
of its work. Decide is compared with it too."""

TRACK_STREAM_BATCH = 100
"""Events in each TrackStream call of the track-stream target."""

TRACK_MESSAGE_EVENTS = 10
"""Events in each message of the track-batched target (a collector's batch)."""

PROFILE_TARGETS = {
    "get-profile": 1,
    "track": 1,
    "track-stream": TRACK_STREAM_BATCH,
    "track-batched": TRACK_STREAM_BATCH,
}
"""Profile service targets and the events each call carries (1 for a read)."""

STREAM_TARGETS = ("track-stream", "track-batched")
"""Targets whose calls carry TRACK_STREAM_BATCH events."""

EVENTS_PER_CALL = {**PROFILE_TARGETS, **dict.fromkeys(DECIDE_MODES, 1), BASELINE: 1, RELAY: 1}

_NS_PER_MS = 1_000_000.0


@dataclass(frozen=True)
class LevelSummary:
    """One target at one concurrency: counts, throughput and latency percentiles."""

    target: str
    concurrency: int
    mode: str | None
    """The decision service's TESSERA_EVALUATION for a Decide target; None for echo."""
    requests: int
    """Successful calls whose latency was recorded."""
    errors: int
    """Failed calls; their latencies are not in the percentiles."""
    window_s: float
    """Length of the measured window, warm-up excluded."""
    throughput_rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    error_codes: dict[str, int]
    round_p50_ms: tuple[float | None, ...] = ()
    """p50 of each round when the level was measured in rounds interleaved with the
    other targets (`summarise_rounds`); empty for a level measured in one window."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True)
class Sample:
    """One measured window of one level, every load process's calls together."""

    latencies_ns: npt.NDArray[np.int64]
    window_s: float
    error_codes: dict[str, int]


@dataclass(frozen=True)
class Ratio:
    """One target over a floor at one concurrency; None where the floor gives no basis."""

    target: str
    mode: str | None
    concurrency: int
    p50: float | None
    p99: float | None
    throughput: float | None
    """Calls per second over the floor's; for track-stream, events per second over its calls."""
    round_p50: tuple[float | None, ...] = ()
    """Each round's p50 over the floor's p50 of the same round, when both were measured in
    rounds: how far the ratio moves with the machine's state during the run."""
    floor: str = BASELINE
    """The target it is measured against: echo (one hop) or the relay (two)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def percentiles_ms(
    latencies_ns: npt.ArrayLike, percentiles: Sequence[float] = PERCENTILES
) -> list[float | None]:
    """The given percentiles of `latencies_ns`, in milliseconds.

    numpy's default (linear interpolation between closest ranks), so p50 of an
    even count is the mean of the two middle values. None for each percentile
    when nothing was recorded: an empty level has no latency, not a zero one.
    """
    values = np.asarray(latencies_ns, dtype=np.float64)
    if values.size == 0:
        return [None for _ in percentiles]
    result = np.percentile(values, list(percentiles)) / _NS_PER_MS
    return [float(v) for v in result]


def summarise(
    target: str,
    concurrency: int,
    latencies_ns: npt.ArrayLike,
    window_s: float,
    error_codes: dict[str, int] | None = None,
) -> LevelSummary:
    """Summarise one level from every recorded latency and the error counts.

    Throughput is successful calls per second of the measured window; errors
    are reported beside it, never folded into it.
    """
    values = np.asarray(latencies_ns, dtype=np.float64)
    codes = dict(sorted((error_codes or {}).items()))
    p50, p90, p99 = percentiles_ms(values, PERCENTILES)
    empty = values.size == 0
    return LevelSummary(
        target=target,
        concurrency=concurrency,
        mode=DECIDE_MODES.get(target),
        requests=int(values.size),
        errors=sum(codes.values()),
        window_s=window_s,
        throughput_rps=values.size / window_s if window_s > 0 else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=None if empty else float(values.mean() / _NS_PER_MS),
        max_ms=None if empty else float(values.max() / _NS_PER_MS),
        error_codes=codes,
    )


def summarise_rounds(target: str, concurrency: int, samples: Sequence[Sample]) -> LevelSummary:
    """Summarise a level measured in several rounds as one level.

    Percentiles over every latency of every round, throughput over the rounds'
    windows added up, errors added up; each round's own p50 kept beside them.
    """
    if not samples:
        raise ValueError(f"{target} at concurrency {concurrency}: no rounds to summarise")
    errors: Counter[str] = Counter()
    for sample in samples:
        errors.update(sample.error_codes)
    summary = summarise(
        target,
        concurrency,
        np.concatenate([sample.latencies_ns for sample in samples]),
        sum(sample.window_s for sample in samples),
        dict(errors),
    )
    if len(samples) == 1:
        return summary
    return replace(
        summary,
        round_p50_ms=tuple(percentiles_ms(sample.latencies_ns, (50.0,))[0] for sample in samples),
    )


def _divide(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def ratio(level: LevelSummary, floor: LevelSummary) -> Ratio:
    """`level` / `floor` for p50, p99 and throughput at the same concurrency.

    A latency ratio of 3 over echo means three one-hop times; a throughput
    ratio of 0.25 means a quarter of the floor's rate. The ratio carries the
    level's target and mode, and the floor's target.
    """
    if level.concurrency != floor.concurrency:
        raise ValueError(
            f"concurrency differs: {level.target} {level.concurrency}, "
            f"{floor.target} {floor.concurrency}"
        )
    return Ratio(
        target=level.target,
        mode=level.mode,
        concurrency=floor.concurrency,
        p50=_divide(level.p50_ms, floor.p50_ms),
        p99=_divide(level.p99_ms, floor.p99_ms),
        throughput=_divide(
            level.throughput_rps * EVENTS_PER_CALL.get(level.target, 1), floor.throughput_rps
        ),
        round_p50=tuple(
            _divide(mine, theirs)
            for mine, theirs in zip(level.round_p50_ms, floor.round_p50_ms, strict=True)
        )
        if len(level.round_p50_ms) == len(floor.round_p50_ms)
        else (),
        floor=floor.target,
    )


def ratios(summaries: Sequence[LevelSummary]) -> list[Ratio]:
    """One `ratio` per target and concurrency that has its floor's level too.

    Every target over echo, then each Decide target over the relay. Ordered by
    floor, then concurrency, then the relay, the Decide targets as in
    `DECIDE_MODES` (in-process before RPC) and the profile targets, so one
    concurrency sits together.
    """
    by_key = {(s.target, s.concurrency): s for s in summaries}
    levels = sorted({s.concurrency for s in summaries})
    compared = (
        (BASELINE, (RELAY, *DECIDE_MODES, *PROFILE_TARGETS)),
        (RELAY, tuple(DECIDE_MODES)),
    )
    return [
        ratio(by_key[(target, c)], by_key[(floor, c)])
        for floor, targets in compared
        for c in levels
        for target in targets
        if (target, c) in by_key and (floor, c) in by_key
    ]
