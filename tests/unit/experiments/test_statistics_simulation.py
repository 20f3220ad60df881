"""Proof by simulation, at CI size: the statistics keep the error rates they promise.

Each test draws thousands of experiments with a fixed seed through the same
array functions `compare` uses (tessera.experiments.simulation); `python -m
bench.simulate` runs the same at full size. Bounds are the issue's: A/A
rejections at alpha 5% +- 1.5 points (read once), at most 5% for the
sequential p read daily for 30 days, power within 5 points of what
required_sample_size promised, CUPED at correlation 0.5 at least 10% narrower.
"""

from __future__ import annotations

import numpy as np
import pytest

from tessera.experiments import simulation
from tessera.experiments.domain.statistics import Sample, compare
from tessera.experiments.domain.statistics.frequentist import Arm, fixed_horizon, lift
from tessera.experiments.domain.statistics.sequential import sequential


def test_aa__fixed_horizon_read_once__rejects_five_percent():
    rate = simulation.aa_fixed_horizon(4000, 2000, 0.1, np.random.default_rng(1))

    assert 0.035 <= rate <= 0.065


def test_aa__read_daily_for_30_days__sequential_keeps_alpha_peeking_does_not():
    outcome = simulation.aa_peeking(2000, 30, 200, 0.1, np.random.default_rng(2))

    assert outcome.sequential_rejections <= 0.05
    # Peeking at the fixed-horizon p every day: several times alpha.
    assert outcome.naive_rejections >= 0.15
    assert 0.035 <= outcome.final_day_rejections <= 0.065


def test_power__lift_sized_by_required_sample_size__detected_as_promised():
    outcome = simulation.power(2000, 0.10, 0.10, np.random.default_rng(3))

    assert outcome.n_per_variant == 14749
    assert abs(outcome.observed - outcome.promised) <= 0.05


def test_cuped__covariate_correlation_half__interval_ten_percent_narrower():
    ratio = simulation.cuped_narrowing(1000, 400, 0.5, np.random.default_rng(4))

    assert ratio <= 0.90
    # Theory: sqrt(1 - 0.5^2) = 0.866.
    assert ratio == pytest.approx(np.sqrt(0.75), abs=0.01)


def test_bandit__thompson__more_traffic_to_best_arm_less_regret():
    outcome = simulation.bandit(
        8, [0.10, 0.10, 0.13], days=20, daily_visitors=300, rng=np.random.default_rng(5)
    )

    assert outcome.best_share_thompson > outcome.best_share_fixed + 0.2
    assert outcome.regret_thompson < outcome.regret_fixed


def test_array_path__same_numbers_as_compare_for_each_experiment():
    rng = np.random.default_rng(6)
    n_a, n_b = rng.integers(50, 5000, 40), rng.integers(50, 5000, 40)
    c_a, c_b = rng.binomial(n_a, 0.1), rng.binomial(n_b, 0.12)
    p_a, p_b = c_a / n_a, c_b / n_b

    estimates = lift(Arm(n_a, p_a, p_a * (1 - p_a)), Arm(n_b, p_b, p_b * (1 - p_b)))
    fixed = fixed_horizon(estimates)
    always = sequential(estimates, n_a + n_b)

    for i in range(40):
        one = compare(
            Sample(int(n_a[i]), float(c_a[i]), float(c_a[i])),
            Sample(int(n_b[i]), float(c_b[i]), float(c_b[i])),
        )
        assert one.p_value == pytest.approx(fixed.p_value[i], rel=1e-9, abs=1e-300)
        assert one.relative_ci[0] == pytest.approx(fixed.relative_ci.low[i], rel=1e-9)
        assert one.sequential_p_value == pytest.approx(always.p_value[i], rel=1e-9)
