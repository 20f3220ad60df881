"""The statistics' proofs at full size: `python -m bench.simulate`.

Runs tessera.experiments.simulation (the functions `compare` uses, on whole
arrays of experiments) and prints each figure next to the bound the issue
sets; exits 1 if one is missed. `--quick` runs a tenth of the experiments.
Figures are saved to bench/results/simulate-latest.json. See
docs/statistics.md, "Proof by simulation", for what each one shows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tessera.experiments import simulation

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    """Run every simulation, print the figures and whether each bound holds."""
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__)
    parser.add_argument("--experiments", type=int, default=10_000, help="A/A and power runs")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quick", action="store_true", help="a tenth of the experiments")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    count = max(200, args.experiments // 10) if args.quick else args.experiments
    rng = np.random.default_rng(args.seed)
    rows: list[tuple[str, str, str, bool]] = []
    figures: dict[str, Any] = {"experiments": count, "seed": args.seed}
    started = time.perf_counter()

    aa = simulation.aa_fixed_horizon(count, 5000, 0.10, rng)
    figures["aa_fixed_horizon"] = aa
    rows.append(
        (
            f"A/A, fixed-horizon p read once ({count} experiments, 5,000 per arm, 10%)",
            f"{aa:.2%}",
            "5% +- 1.5 points",
            abs(aa - 0.05) <= 0.015,
        )
    )

    peeking = simulation.aa_peeking(count, 30, 500, 0.10, rng)
    figures["aa_peeking"] = peeking.__dict__
    rows += [
        (
            f"A/A, sequential p read daily, 30 days ({count}, 500 per arm a day)",
            f"{peeking.sequential_rejections:.2%}",
            "at most 5%",
            peeking.sequential_rejections <= 0.05,
        ),
        (
            "A/A, fixed-horizon p read daily (naive peeking), same experiments",
            f"{peeking.naive_rejections:.2%}",
            "far above 5% (shown for comparison)",
            peeking.naive_rejections > 0.10,
        ),
        (
            "A/A, fixed-horizon p read on day 30 only, same experiments",
            f"{peeking.final_day_rejections:.2%}",
            "5% +- 1.5 points",
            abs(peeking.final_day_rejections - 0.05) <= 0.015,
        ),
    ]

    for baseline, lift in ((0.10, 0.10), (0.03, 0.20)):
        outcome = simulation.power(count, baseline, lift, rng)
        figures[f"power_{baseline}_{lift}"] = outcome.__dict__
        rows.append(
            (
                f"Power: +{lift:.0%} on {baseline:.0%}, n = {outcome.n_per_variant:,} per arm "
                f"from required_sample_size",
                f"{outcome.observed:.2%}",
                f"{outcome.promised:.0%} +- 5 points",
                abs(outcome.observed - outcome.promised) <= 0.05,
            )
        )

    cuped_count = max(200, count // 5)
    ratio = simulation.cuped_narrowing(cuped_count, 1000, 0.5, rng)
    figures["cuped_width_ratio"] = ratio
    rows.append(
        (
            f"CUPED, covariate correlation 0.5 ({cuped_count}, 1,000 per arm): "
            "interval width vs plain",
            f"{ratio:.3f} ({1 - ratio:.1%} narrower)",
            "at least 10% narrower (theory 13.4%)",
            ratio <= 0.90,
        )
    )

    runs = max(20, count // 50)
    bandit = simulation.bandit(runs, [0.10, 0.10, 0.12, 0.11], 30, 400, rng)
    figures["bandit"] = bandit.__dict__
    rows += [
        (
            f"Thompson (control share 20%) vs fixed split, 4 arms, best 12%, {runs} runs "
            "x 30 days: traffic to best arm",
            f"{bandit.best_share_thompson:.1%} vs {bandit.best_share_fixed:.1%}",
            "more than the fixed split",
            bandit.best_share_thompson > bandit.best_share_fixed,
        ),
        (
            "Thompson vs fixed split: regret (conversions lost per run)",
            f"{bandit.regret_thompson:.0f} vs {bandit.regret_fixed:.0f}",
            "less than the fixed split",
            bandit.regret_thompson < bandit.regret_fixed,
        ),
    ]

    width = max(len(r[0]) for r in rows)
    print(f"{'simulation':<{width}}  {'figure':<22} {'bound':<36} ok")
    for name, figure, bound, ok in rows:
        print(f"{name:<{width}}  {figure:<22} {bound:<36} {'yes' if ok else 'NO'}")
    elapsed = time.perf_counter() - started
    print(f"({elapsed:.1f} s, seed {args.seed})")
    figures["passed"] = all(r[3] for r in rows)
    figures["at"] = datetime.now(UTC).isoformat()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "simulate-latest.json").write_text(json.dumps(figures, indent=2))
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
