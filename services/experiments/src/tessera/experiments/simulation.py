"""Simulated experiments: the proof that the statistics do what they claim.

Every function draws many experiments at once with numpy and runs them
through the same functions `compare` uses (`lift`, `fixed_horizon`,
`sequential`, `theta_from_sums`, `thompson_weights`), so a rate measured
here is the rate of the product's own statistics. The tests run them small
(tests/unit/experiments/test_statistics_simulation.py); `python -m
bench.simulate` runs them at full size and prints the figures; `tessera
report --simulate` draws one experiment day by day for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.experiments.domain.statistics import (
    Sample,
    required_sample_size,
    thompson_weights,
)
from tessera.experiments.domain.statistics.cuped import theta_from_sums
from tessera.experiments.domain.statistics.distributions import FloatArray
from tessera.experiments.domain.statistics.frequentist import Arm, fixed_horizon, lift
from tessera.experiments.domain.statistics.sequential import sequential

__all__ = [
    "BanditOutcome",
    "PeekingOutcome",
    "PowerOutcome",
    "aa_fixed_horizon",
    "aa_peeking",
    "bandit",
    "cuped_narrowing",
    "daily_samples",
    "power",
]


def _conversion_arm(n: npt.ArrayLike, conversions: npt.ArrayLike) -> Arm:
    # The moments Sample gives a conversion count: mean p, Bernoulli variance.
    count = np.asarray(n, dtype=np.float64)
    p = np.asarray(conversions, dtype=np.float64) / count
    return Arm(count, p, p * (1.0 - p))


def aa_fixed_horizon(
    experiments: int, n: int, rate: float, rng: np.random.Generator, alpha: float = 0.05
) -> float:
    """Share of A/A experiments (no true lift) whose fixed-horizon p, read once, is below alpha."""
    control = rng.binomial(n, rate, experiments)
    treatment = rng.binomial(n, rate, experiments)
    result = fixed_horizon(lift(_conversion_arm(n, control), _conversion_arm(n, treatment)), alpha)
    return float(np.mean(result.p_value < alpha))


@dataclass(frozen=True)
class PeekingOutcome:
    """A/A experiments read every day: the share ever declared significant."""

    experiments: int
    days: int
    sequential_rejections: float
    """Sequential p below alpha on any day (must stay at most alpha)."""
    naive_rejections: float
    """Fixed-horizon p below alpha on any day (peeking: far above alpha)."""
    final_day_rejections: float
    """Fixed-horizon p below alpha on the last day only (about alpha)."""


def aa_peeking(
    experiments: int,
    days: int,
    daily_n: int,
    rate: float,
    rng: np.random.Generator,
    alpha: float = 0.05,
    tuning: float | None = None,
) -> PeekingOutcome:
    """A/A experiments with `daily_n` new people per arm per day, read each day.

    `tuning` defaults to the planned total (2 * days * daily_n): the interval
    is narrowest when the experiment is due to end.
    """
    planned = tuning if tuning is not None else 2.0 * days * daily_n
    control = np.cumsum(rng.binomial(daily_n, rate, (days, experiments)), axis=0)
    treatment = np.cumsum(rng.binomial(daily_n, rate, (days, experiments)), axis=0)
    n = daily_n * np.arange(1, days + 1, dtype=np.float64)[:, None] * np.ones((1, experiments))
    estimates = lift(_conversion_arm(n, control), _conversion_arm(n, treatment))
    fixed = fixed_horizon(estimates, alpha).p_value
    always = sequential(estimates, 2.0 * n, alpha, planned).p_value
    return PeekingOutcome(
        experiments=experiments,
        days=days,
        sequential_rejections=float(np.mean((always < alpha).any(axis=0))),
        naive_rejections=float(np.mean((fixed < alpha).any(axis=0))),
        final_day_rejections=float(np.mean(fixed[-1] < alpha)),
    )


@dataclass(frozen=True)
class PowerOutcome:
    """Experiments sized by `required_sample_size`: promised and observed power."""

    n_per_variant: int
    promised: float
    observed: float


def power(
    experiments: int,
    baseline_rate: float,
    relative_lift: float,
    rng: np.random.Generator,
    alpha: float = 0.05,
    target_power: float = 0.8,
) -> PowerOutcome:
    """Inject `relative_lift` and count how often the fixed-horizon test finds it."""
    n = required_sample_size(baseline_rate, relative_lift, alpha, target_power)
    control = rng.binomial(n, baseline_rate, experiments)
    treatment = rng.binomial(n, baseline_rate * (1 + relative_lift), experiments)
    result = fixed_horizon(lift(_conversion_arm(n, control), _conversion_arm(n, treatment)), alpha)
    return PowerOutcome(n, target_power, float(np.mean(result.p_value < alpha)))


def cuped_narrowing(
    experiments: int,
    n: int,
    correlation: float,
    rng: np.random.Generator,
    alpha: float = 0.05,
) -> float:
    """Mean width of the CUPED interval over the plain one (absolute lift).

    Each person's pre-exposure metric x and metric y are standard bivariate
    normal with `correlation` (shifted to a mean of 10, like revenue). Theory
    says the ratio is sqrt(1 - correlation^2) (Deng et al. 2013).
    """
    widths = {"plain": 0.0, "cuped": 0.0}
    chunk = max(1, 2_000_000 // (2 * n))
    done = 0
    while done < experiments:
        size = min(chunk, experiments - done)
        sums = []
        for _ in range(2):  # control, treatment
            x = rng.standard_normal((size, n))
            y = correlation * x + np.sqrt(1 - correlation**2) * rng.standard_normal((size, n))
            x += 10.0
            y += 10.0
            sums.append(
                (
                    y.sum(axis=1),
                    (y * y).sum(axis=1),
                    x.sum(axis=1),
                    (x * x).sum(axis=1),
                    (x * y).sum(axis=1),
                )
            )
        (ya, _, xa, xxa, xya), (yb, _, xb, xxb, xyb) = sums
        arms = [_sums_arm(n, *s) for s in sums]
        theta = theta_from_sums(2 * n, ya + yb, xa + xb, xxa + xxb, xya + xyb)
        for name, th in (("plain", np.zeros(size)), ("cuped", theta)):
            ci = fixed_horizon(lift(arms[0], arms[1], th), alpha).absolute_ci
            widths[name] += float(np.sum(ci.high - ci.low))
        done += size
    return widths["cuped"] / widths["plain"]


def _sums_arm(
    n: int,
    sum_y: FloatArray,
    sum_yy: FloatArray,
    sum_x: FloatArray,
    sum_xx: FloatArray,
    sum_xy: FloatArray,
) -> Arm:
    # The moments Sample gives for revenue-like sums, elementwise.
    return Arm(
        n,
        sum_y / n,
        (sum_yy - sum_y**2 / n) / (n - 1),
        sum_x / n,
        (sum_xx - sum_x**2 / n) / (n - 1),
        (sum_xy - sum_x * sum_y / n) / (n - 1),
    )


@dataclass(frozen=True)
class BanditOutcome:
    """Thompson-sampling allocation against a fixed equal split, same visitors."""

    runs: int
    best_share_thompson: float
    best_share_fixed: float
    regret_thompson: float
    """Conversions lost against always showing the best arm, per run."""
    regret_fixed: float


def bandit(
    runs: int,
    rates: Sequence[float],
    days: int,
    daily_visitors: int,
    rng: np.random.Generator,
    control_share: float = 0.2,
    draws: int = 2000,
) -> BanditOutcome:
    """Run Thompson sampling (`thompson_weights`, recomputed daily) and a fixed split.

    Arm 0 is the control. Each day's visitors are split by the current
    weights (multinomially); conversions are drawn from `rates`. Regret is
    the expected conversions lost: sum over visitors of (best rate - rate of
    the arm shown).
    """
    k = len(rates)
    true_rates = np.asarray(rates, dtype=np.float64)
    best = int(np.argmax(true_rates))
    fixed_weights = np.full(k, 1.0 / k)
    totals = {"thompson": np.zeros(2), "fixed": np.zeros(2)}  # best-arm visitors, regret
    for _ in range(runs):
        for policy in ("thompson", "fixed"):
            n = np.zeros(k, dtype=np.int64)
            conversions = np.zeros(k, dtype=np.int64)
            for _day in range(days):
                if policy == "fixed":
                    weights = fixed_weights
                else:
                    weights = np.asarray(
                        thompson_weights(
                            _samples(n, conversions),
                            control_share=control_share,
                            draws=draws,
                            rng=rng,
                        )
                    )
                visitors = rng.multinomial(daily_visitors, weights)
                n += visitors
                conversions += rng.binomial(visitors, true_rates)
            totals[policy] += (
                n[best] / n.sum(),
                float(np.sum(n * (true_rates[best] - true_rates))),
            )
    return BanditOutcome(
        runs=runs,
        best_share_thompson=float(totals["thompson"][0] / runs),
        best_share_fixed=float(totals["fixed"][0] / runs),
        regret_thompson=float(totals["thompson"][1] / runs),
        regret_fixed=float(totals["fixed"][1] / runs),
    )


def daily_samples(
    rates: Sequence[float],
    weights: Sequence[float],
    days: int,
    daily_visitors: int,
    rng: np.random.Generator,
) -> list[list[Sample]]:
    """One conversion experiment day by day: cumulative Samples per variant, per day."""
    k = len(rates)
    if len(weights) != k:
        raise ValueError("one weight per rate")
    share = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    n = np.zeros(k, dtype=np.int64)
    conversions = np.zeros(k, dtype=np.int64)
    timeline = []
    for _ in range(days):
        visitors = rng.multinomial(daily_visitors, share)
        n += visitors
        conversions += rng.binomial(visitors, np.asarray(rates, dtype=np.float64))
        timeline.append(_samples(n, conversions))
    return timeline


def _samples(n: npt.NDArray[np.int64], conversions: npt.NDArray[np.int64]) -> list[Sample]:
    return [Sample(int(k), float(c), float(c)) for k, c in zip(n, conversions, strict=True)]
