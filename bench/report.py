"""The benchmark's outputs: a table for people, JSON for machines."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import BASELINE, RELAY, LevelSummary, Ratio

FLOOR_TITLES = {
    BASELINE: "Each target / echo (track-stream, track-batched: events/s over echo's calls/s)",
    RELAY: "Decide / relay (the two-hop floor: a unary call passed on over an open stream)",
}
"""The heading of each block of ratios, by the floor they are measured against."""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _spread(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{min(known):.2f}-{max(known):.2f}x" if known else "-"


def format_table(summaries: Sequence[LevelSummary], ratios: Sequence[Ratio]) -> str:
    """The levels as a fixed-width table, then the ratios, a block per floor."""
    header = (
        f"{'target':<13} {'conc':>5} {'requests':>9} {'errors':>7} {'req/s':>9} "
        f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
    )
    lines = [header, "-" * len(header)]
    for s in summaries:
        lines.append(
            f"{s.target:<13} {s.concurrency:>5} {s.requests:>9} {s.errors:>7} "
            f"{s.throughput_rps:>9.0f} {_ms(s.p50_ms):>8} {_ms(s.p90_ms):>8} {_ms(s.p99_ms):>8}"
        )
    for floor, title in FLOOR_TITLES.items():
        rows = [r for r in ratios if r.floor == floor]
        if not rows:
            continue
        lines += [
            "",
            title,
            f"{'conc':>5}  {'target':<13} {'mode':<10} {'p50':>8} {'p99':>8} {'rate':>8}"
            f"  {'p50 by round':>13}",
        ]
        for r in rows:
            lines.append(
                f"{r.concurrency:>5}  {r.target:<13} {r.mode or '-':<10} {_times(r.p50):>8} "
                f"{_times(r.p99):>8} {_times(r.throughput):>8}  {_spread(r.round_p50):>13}"
            )
    for s in summaries:
        if s.errors:
            codes = ", ".join(f"{code}={n}" for code, n in s.error_codes.items())
            lines.append(f"ERRORS: {s.target} at concurrency {s.concurrency}: {codes}")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: cores, Python, gRPC, OS, load at the start."""
    import grpc
    import numpy

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "grpcio": grpc.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    return info


def write_json(document: dict[str, Any], results_dir: Path, stamp: str) -> list[Path]:
    """Write `document` to `<stamp>.json` and `latest.json`; return both paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    paths = [results_dir / f"{stamp}.json", results_dir / "latest.json"]
    for path in paths:
        path.write_text(text)
    return paths
