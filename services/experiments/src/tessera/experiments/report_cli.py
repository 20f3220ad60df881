"""`tessera report`: the report of an experiment, as a table and a PNG.

`tessera report --simulate` draws a 30-day experiment (control and two
variants, one truly better) with `tessera.experiments.simulation` and renders
its report, so the report can be seen without a running suite.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np

from tessera.experiments import simulation

SIMULATED_KEY = "simulated-checkout"
SIMULATED_VARIANTS = ("control", "green-button", "one-click")
SIMULATED_RATES = (0.100, 0.102, 0.112)
"""True conversion rates: one-click converts 12% better, green-button 2%."""
SIMULATED_START = datetime(2026, 1, 5, tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tessera report`."""
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="report on a simulated 30-day experiment (no suite needed)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("report.png"), help="where to write the chart"
    )
    parser.add_argument("--days", type=int, default=30, help="days to simulate (default: 30)")
    parser.add_argument(
        "--visitors", type=int, default=3000, help="simulated visitors per day (default: 3000)"
    )
    parser.add_argument("--seed", type=int, default=9, help="seed of the simulation (default: 9)")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Render the report; 0 when the table was printed and the chart written.

    `out` and `err` default to the standard streams as they are at the call.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        from rich.console import Console

        from tessera.experiments import report
    except ImportError as error:
        print(
            f"the report needs the `report` extra ({error.name} is missing): "
            "pip install 'tessera-experiments[report]'",
            file=err,
        )
        return 1
    if not args.simulate:
        print("say which experiment to report on: --simulate draws one", file=err)
        return 2
    if args.days < 1 or args.visitors < 10:
        print("--days must be at least 1 and --visitors at least 10", file=err)
        return 2
    weights = [1.0] * len(SIMULATED_VARIANTS)
    daily = simulation.daily_samples(
        SIMULATED_RATES, weights, args.days, args.visitors, np.random.default_rng(args.seed)
    )
    days = [(SIMULATED_START + timedelta(days=i + 1), samples) for i, samples in enumerate(daily)]
    built = report.build_report(
        SIMULATED_KEY,
        SIMULATED_VARIANTS,
        weights,
        days,
        min_sample=1000,
        # Narrowest where the experiment is planned to end: two arms' people.
        sequential_tuning=2 * args.days * args.visitors / len(SIMULATED_VARIANTS),
    )
    console = Console(file=out, width=160)
    report.render_table(built, console)
    path = report.write_chart(built, args.out)
    console.print(f"Chart of lift over time: {path}")
    return 0
