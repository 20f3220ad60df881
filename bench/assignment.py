"""In-process assignment per experiment: Tessera against GrowthBook's Python SDK, one run.

    python -m bench.assignment                 5 interleaved rounds of 20,000 profiles
    python -m bench.assignment --quick         2 rounds of 2,000 (a smoke run)

Both assign the same profile ids to the same two-variant, 50/50 experiment
and use the same hash (GrowthBook's version 2, docs/hashing.md), so they
must agree on every variant; the run checks that before timing anything.
Tessera: `tessera.experiments.domain.assign` (what the decision service
calls in process for each experiment). GrowthBook: one `GrowthBook`
instance, `set_attributes({"id": ...})` then `run(Experiment(...))` per
profile, as a server serving many users with one instance does. Rounds
alternate Tessera and GrowthBook so both see the same machine load; each
is timed with `time.perf_counter_ns` around the whole loop and the median
round is reported, with the ratio Tessera / GrowthBook (below 1: faster).
GrowthBook is the `bench` dependency group of pyproject.toml (`make bench`
installs it); it is never a dependency of Tessera itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera.experiments.domain import (
    ExperimentDef,
    ExperimentStatus,
    VariantDef,
    assign,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KEY = "checkout-button"
VARIANTS = ("control", "treatment")


def tessera_assigner() -> Callable[[str], str]:
    """Assign with Tessera's in-process domain function."""
    experiment = ExperimentDef(
        key=KEY,
        variants=tuple(VariantDef(key, 1.0) for key in VARIANTS),
        control_variant_key=VARIANTS[0],
        status=ExperimentStatus.RUNNING,
        goal_event_type="purchase",
    )
    now = datetime.now(UTC)
    no_segments: frozenset[str] = frozenset()

    def run(profile_id: str) -> str:
        return assign(experiment, profile_id, no_segments, now).variant_key

    return run


def growthbook_assigner() -> Callable[[str], str]:
    """Assign with GrowthBook's Python SDK (hash version 2, seeded by the key)."""
    from growthbook import Experiment, GrowthBook

    sdk = GrowthBook(attributes={})
    experiment = Experiment(key=KEY, variations=list(VARIANTS), hashVersion=2)

    def run(profile_id: str) -> str:
        sdk.set_attributes({"id": profile_id})
        result: Any = sdk.run(experiment)
        return str(result.value)

    return run


def time_round(assigner: Callable[[str], str], ids: list[str]) -> float:
    """Nanoseconds per assignment over one pass of `ids`."""
    start = time.perf_counter_ns()
    for profile_id in ids:
        assigner(profile_id)
    return (time.perf_counter_ns() - start) / len(ids)


def main(argv: list[str] | None = None) -> int:
    """Check agreement, time both in interleaved rounds, print and save the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.assignment", description=__doc__)
    parser.add_argument("--profiles", type=int, default=20_000, help="profiles per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each implementation")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2,000 profiles")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.profiles, args.rounds = 2_000, 2
    try:
        growthbook = growthbook_assigner()
    except ImportError:
        print(
            "GrowthBook's SDK is not installed: pip install --group bench (make bench does)",
            file=sys.stderr,
        )
        return 1
    tessera = tessera_assigner()
    ids = [f"profile-{i:06d}" for i in range(args.profiles)]

    disagree = [i for i in ids if tessera(i) != growthbook(i)]
    if disagree:
        print(
            f"Tessera and GrowthBook disagree on {len(disagree)} of {len(ids)} profiles "
            f"(first: {disagree[0]}): the hashes differ, timings would compare different work",
            file=sys.stderr,
        )
        return 1
    treated = sum(tessera(i) == VARIANTS[1] for i in ids) / len(ids)

    for assigner in (tessera, growthbook):  # warm-up, not recorded
        time_round(assigner, ids[: min(len(ids), 1000)])
    rounds: dict[str, list[float]] = {"tessera": [], "growthbook": []}
    for _ in range(args.rounds):
        rounds["tessera"].append(time_round(tessera, ids))
        rounds["growthbook"].append(time_round(growthbook, ids))
    median = {name: statistics.median(values) for name, values in rounds.items()}
    ratio = median["tessera"] / median["growthbook"]

    print(f"In-process assignment, one experiment, {args.profiles} profiles x {args.rounds} rounds")
    print(f"  same variant as GrowthBook for {len(ids)}/{len(ids)}; treatment share {treated:.3f}")
    print(f"{'implementation':<16} {'median ns':>10} {'min ns':>10} {'max ns':>10} {'per s':>10}")
    for name, values in rounds.items():
        print(
            f"{name:<16} {median[name]:>10.0f} {min(values):>10.0f} {max(values):>10.0f} "
            f"{1e9 / median[name]:>10.0f}"
        )
    print(f"Tessera / GrowthBook: {ratio:.2f}x the time per assignment (below 1: faster)")

    document = {
        "schema": 1,
        "at": datetime.now(UTC).isoformat(),
        "profiles": args.profiles,
        "rounds": rounds,
        "median_ns": median,
        "ratio_tessera_over_growthbook": ratio,
        "agreement": 1.0,
        "python": sys.version.split()[0],
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "assignment-latest.json").write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
