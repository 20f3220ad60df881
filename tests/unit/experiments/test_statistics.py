"""Experiment statistics pinned to published values (gbstats' tests, scipy).

Reference values marked "gbstats" come from GrowthBook's statistics package,
growthbook/growthbook, packages/stats/tests/: frequentist/test_tests.py
(TestTwoSidedTTest, TestSequentialTTest), bayesian/test_tests.py (TestBinom,
TestNorm) and test_gbstats.py (test_srm). Their Statistic(sum, sum_squares, n)
arguments map onto Sample(n, total, total_squares); ProportionStatistic(sum,
n) is Sample(n, sum, sum). They round to 5 decimals (SRM to 9), so do we.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tessera.experiments.domain.statistics import (
    Arm,
    Comparison,
    Sample,
    Verdict,
    compare,
    compare_all,
    fixed_horizon,
    lift,
    required_sample_size,
    sequential,
    srm_p_value,
    thompson_weights,
    verdict,
)

# gbstats TestTwoSidedTTest: SampleMeanStatistic(sum=1396.87, sum_squares=52377.9767, n=3407)
# against SampleMeanStatistic(sum=2422.7, sum_squares=134698.29, n=3461).
REVENUE_CONTROL = Sample(3407, 1396.87, 52377.9767)
REVENUE_TREATMENT = Sample(3461, 2422.7, 134698.29)


def rounded(value: float | tuple[float, float], decimals: int = 5) -> object:
    if isinstance(value, tuple):
        return tuple(round(v, decimals) for v in value)
    return round(value, decimals)


def test_compare__gbstats_two_sided_ttest__relative_interval():
    result = compare(REVENUE_CONTROL, REVENUE_TREATMENT)

    # gbstats test_two_sided_ttest (relative): expected (0.7 - 0.41) / 0.41,
    # ci [-0.03526, 1.44989], uplift stddev 0.37879.
    assert rounded(result.relative_lift) == round((0.7 - 0.41) / 0.41, 5)
    assert rounded(result.relative_ci) == (-0.03526, 1.44989)
    assert result.control_mean == pytest.approx(0.41)
    assert result.treatment_mean == pytest.approx(0.7)


def test_compare__gbstats_two_sided_ttest_absolute__interval_and_p_value():
    result = compare(REVENUE_CONTROL, REVENUE_TREATMENT)

    # gbstats test_two_sided_ttest_absolute: expected 0.29, ci [0.04538, 0.53462], p 0.02016.
    assert rounded(result.absolute_lift) == 0.29
    assert rounded(result.absolute_ci) == (0.04538, 0.53462)
    assert rounded(result.p_value) == 0.02016


def test_compare__gbstats_two_sided_ttest_binom__relative_interval():
    # gbstats test_two_sided_ttest_binom: ProportionStatistic(14, 28) vs (16, 30).
    result = compare(Sample(28, 14, 14), Sample(30, 16, 16))

    assert rounded(result.relative_lift) == round((16 / 30 - 0.5) / 0.5, 5)
    assert rounded(result.relative_ci) == (-0.47767, 0.61101)


def test_compare__p_value_is_welchs_t_test__as_scipy():
    control, treatment = Sample(28, 14, 14), Sample(30, 16, 16)

    result = compare(control, treatment)

    # scipy's Welch test from the same means and standard deviations.
    reference = stats.ttest_ind_from_stats(
        treatment.mean,
        math.sqrt(treatment.variance),
        treatment.n,
        control.mean,
        math.sqrt(control.variance),
        control.n,
        equal_var=False,
    )
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)


def test_compare__gbstats_sequential_tuning_1000__confidence_sequence():
    # gbstats test_sequential_test_runs: n=3000 control, tuning parameter 1000.
    control = Sample(3000, 1396.87, 52377.9767)

    result = compare(control, REVENUE_TREATMENT, sequential_tuning=1000)

    assert rounded(result.relative_lift) == 0.50336
    assert rounded(result.sequential_ci) == (-0.55844, 1.56516)
    assert result.sequential_p_value > 0.05  # 0 is inside the sequence


def test_compare__gbstats_sequential_proportions__default_tuning():
    # gbstats test_sequential_test_runs_prop: ProportionStatistic(1396, 3000)
    # vs (2422, 3461), default tuning (5000).
    result = compare(Sample(3000, 1396, 1396), Sample(3461, 2422, 2422))

    assert rounded(result.relative_lift) == 0.50386
    assert rounded(result.sequential_ci) == (0.40098, 0.60675)
    assert rounded(result.sequential_p_value) == 0.0


def test_compare__sequential_p_below_alpha_exactly_when_sequence_excludes_zero():
    control = Sample(3000, 1396.87, 52377.9767)

    for treatment_total in (1450.0, 1600.0, 1900.0, 2422.7):
        treatment = Sample(3461, treatment_total, 134698.29)
        always = sequential(
            lift(
                Arm(control.n, control.mean, control.variance),
                Arm(treatment.n, treatment.mean, treatment.variance),
            ),
            control.n + treatment.n,
            alpha=0.05,
            tuning=1000,
        )
        excludes_zero = always.absolute_ci.low > 0 or always.absolute_ci.high < 0
        assert (always.p_value < 0.05) == excludes_zero


def test_compare__gbstats_bayesian_binomial__chance_to_win():
    # gbstats bayesian TestBinom: ProportionStatistic(49, 100) vs (51, 100).
    result = compare(Sample(100, 49, 49), Sample(100, 51, 51))

    assert rounded(result.relative_lift) == 0.04082
    assert rounded(result.chance_to_win) == 0.60918


def test_compare__gbstats_bayesian_gaussian__chance_to_win():
    # gbstats bayesian TestNorm: SampleMeanStatistic(100, 1002.25, 10) vs (105, 1111.5, 10).
    result = compare(Sample(10, 100, 1002.25), Sample(10, 105, 1111.5))

    assert rounded(result.relative_lift) == 0.05
    assert rounded(result.chance_to_win) == 0.91923


def test_srm_p_value__gbstats_check_srm():
    # gbstats test_srm: check_srm([1000, 1200], [0.5, 0.5]) == 0.000020079 (9 decimals).
    assert round(srm_p_value([1000, 1200], [0.5, 0.5]), 9) == 0.000020079


@pytest.mark.parametrize(
    ("counts", "weights"),
    [
        ([5000, 5000], [1, 1]),
        ([5100, 4900], [0.5, 0.5]),
        ([700, 300], [0.7, 0.3]),
        ([640, 360], [0.7, 0.3]),
        ([1020, 980, 1100], [1, 1, 1]),
        ([300, 400, 500, 600], [1, 2, 2, 3]),
    ],
)
def test_srm_p_value__equals_scipy_chisquare(counts, weights):
    total = sum(counts)
    expected = [total * w / sum(weights) for w in weights]

    assert srm_p_value(counts, weights) == pytest.approx(
        stats.chisquare(counts, expected).pvalue, rel=1e-9
    )


def test_srm_p_value__zero_weight_variant__left_out():
    assert srm_p_value([500, 500, 0], [1, 1, 0]) == pytest.approx(1.0)


def test_srm_p_value__nobody_exposed__one():
    assert srm_p_value([0, 0], [1, 1]) == 1.0


def test_compare__nobody_in_an_arm__uninformative():
    result = compare(Sample(0, 0, 0), Sample(10, 3, 3))

    assert result.p_value == 1.0
    assert result.sequential_p_value == 1.0
    assert result.chance_to_win == 0.5
    assert result.absolute_ci == (-math.inf, math.inf)
    assert math.isnan(result.relative_lift)


def test_compare_all__three_variants__one_comparison_per_treatment():
    samples = [Sample(1000, 100, 100), Sample(1000, 120, 120), Sample(1000, 90, 90)]

    results = compare_all(samples)

    assert [r.treatment_mean for r in results] == [0.12, 0.09]
    assert results[0] == compare(samples[0], samples[1])


def test_compare_all__control_not_first__compares_against_it():
    samples = [Sample(1000, 120, 120), Sample(1000, 100, 100)]

    (result,) = compare_all(samples, control_index=1)

    assert result.control_mean == 0.1
    assert result.treatment_mean == 0.12


def test_required_sample_size__textbook_formula_with_scipy_quantiles():
    # n = (z_{0.975} + z_{0.8})^2 (p1 q1 + p2 q2) / (p2 - p1)^2 with p1 = 0.10, p2 = 0.11.
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    expected = math.ceil(z**2 * (0.1 * 0.9 + 0.11 * 0.89) / 0.01**2)

    assert required_sample_size(0.10, 0.10, 0.05, 0.8) == expected == 14749


def _comparison(*, n: int, sequential_p: float) -> Comparison:
    return Comparison(
        control_mean=0.1,
        treatment_mean=0.1,
        absolute_lift=0.0,
        absolute_ci=(-0.1, 0.1),
        relative_lift=0.0,
        relative_ci=(-1.0, 1.0),
        p_value=sequential_p,
        sequential_p_value=sequential_p,
        sequential_ci=(-1.0, 1.0),
        chance_to_win=0.5,
        cuped_applied=False,
        control_n=n,
        treatment_n=n,
    )


def test_verdict__srm_below_threshold__broken_whatever_the_lift():
    assert verdict([_comparison(n=5000, sequential_p=1e-9)], 1e-4, min_sample=100) is Verdict.BROKEN


def test_verdict__arm_below_min_sample__collecting():
    result = verdict([_comparison(n=50, sequential_p=1e-9)], 0.5, min_sample=100)

    assert result is Verdict.COLLECTING


def test_verdict__sequential_p_below_alpha__significant():
    assert verdict([_comparison(n=500, sequential_p=0.01)], 0.5, min_sample=100) is (
        Verdict.SIGNIFICANT
    )


def test_verdict__two_treatments__bonferroni_threshold():
    comparisons = [_comparison(n=500, sequential_p=0.04), _comparison(n=500, sequential_p=0.3)]

    assert verdict(comparisons, 0.5, min_sample=100) is Verdict.INCONCLUSIVE


def test_thompson_weights__control_share_kept__best_treatment_gets_most():
    samples = [Sample(1000, 100, 100), Sample(1000, 100, 100), Sample(1000, 140, 140)]

    weights = thompson_weights(
        samples, control_share=0.2, draws=10_000, rng=np.random.default_rng(7)
    )

    assert weights[0] == 0.2
    assert sum(weights) == pytest.approx(1.0)
    assert weights[2] > 0.75


def test_fixed_horizon__arrays__same_as_scalar_compare():
    control, treatment = Sample(28, 14, 14), Sample(30, 16, 16)
    arms = (
        Arm(np.array([28, 28]), np.array([0.5, 0.5]), np.array([0.25, 0.25])),
        Arm(np.array([30, 30]), np.array([16 / 30, 16 / 30]), np.array([0.24888, 0.24888])),
    )

    fixed = fixed_horizon(lift(*arms))

    assert fixed.p_value.shape == (2,)
    assert fixed.p_value[0] == pytest.approx(compare(control, treatment).p_value, rel=1e-4)


def _sample_of(y: np.ndarray, x: np.ndarray) -> Sample:
    return Sample(
        len(y),
        float(y.sum()),
        float((y * y).sum()),
        float(x.sum()),
        float((x * x).sum()),
        float((x * y).sum()),
    )


def _correlated(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.gamma(2.0, 5.0, n)
    y = 0.6 * x + rng.gamma(2.0, 4.0, n) + shift
    return y, x


def test_cuped__gbstats_regression_adjusted__point_estimate():
    # gbstats test_sequential_test_runs_ra: theta fixed at 0.5, pre sums
    # (16.87, 527.9767) and (22.7, 1348.29), sums of products 12525 and 3333:
    # expected 0.50236 (adjusted difference over the unadjusted control mean).
    control = Sample(3000, 1396.87, 52377.9767, 16.87, 527.9767, 12525)
    treatment = Sample(3461, 2422.7, 134698.29, 22.7, 1348.29, 3333)

    estimates = lift(
        Arm(
            3000,
            control.mean,
            control.variance,
            control.pre_mean,
            control.pre_variance,
            control.covariance,
        ),
        Arm(
            3461,
            treatment.mean,
            treatment.variance,
            treatment.pre_mean,
            treatment.pre_variance,
            treatment.covariance,
        ),
        0.5,
    )

    assert round(float(estimates.relative), 5) == 0.50236


def test_cuped__absolute_lift__is_welch_on_adjusted_per_person_values():
    rng = np.random.default_rng(11)
    (y_a, x_a), (y_b, x_b) = _correlated(rng, 800, 0.0), _correlated(rng, 900, 0.5)
    x_all, y_all = np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b])
    theta = np.cov(x_all, y_all)[0, 1] / np.var(x_all, ddof=1)

    result = compare(_sample_of(y_a, x_a), _sample_of(y_b, x_b), cuped=True)

    adjusted_a, adjusted_b = y_a - theta * x_a, y_b - theta * x_b
    reference = stats.ttest_ind(adjusted_b, adjusted_a, equal_var=False)
    assert result.cuped_applied
    assert result.absolute_lift == pytest.approx(adjusted_b.mean() - adjusted_a.mean(), rel=1e-9)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-7)
    low, high = reference.confidence_interval(0.95)
    assert result.absolute_ci == pytest.approx((low, high), rel=1e-7)


def test_cuped__relative_standard_error__is_the_delta_method():
    rng = np.random.default_rng(12)
    (y_a, x_a), (y_b, x_b) = _correlated(rng, 1500, 0.0), _correlated(rng, 1400, 0.3)
    control, treatment = _sample_of(y_a, x_a), _sample_of(y_b, x_b)
    theta = 0.4

    estimates = lift(
        Arm(
            control.n,
            control.mean,
            control.variance,
            control.pre_mean,
            control.pre_variance,
            control.covariance,
        ),
        Arm(
            treatment.n,
            treatment.mean,
            treatment.variance,
            treatment.pre_mean,
            treatment.pre_variance,
            treatment.covariance,
        ),
        theta,
    )

    # r = (m_b - (ybar_a - theta xbar_a)) / ybar_a, m_b = mean of y_b - theta x_b.
    # Gradient by central differences; covariance of the means from the data.
    # gbstats drops the theta (xbar_b - xbar_a) term of d r / d ybar_a (the
    # pre-period means are equal by randomisation); so does the reference.
    m_b, ybar_a, xbar_a = (y_b - theta * x_b).mean(), y_a.mean(), x_a.mean()

    def r(m: float, ya: float, xa: float) -> float:
        return (m - (ya - theta * xa)) / ya

    point = np.array([m_b, ybar_a, xbar_a])
    gradient = np.empty(3)
    for i in range(3):
        step = np.zeros(3)
        step[i] = 1e-6 * max(1.0, abs(point[i]))
        gradient[i] = (r(*(point + step)) - r(*(point - step))) / (2 * step[i])
    gradient[1] = -y_b.mean() / ybar_a**2  # the gbstats simplification, see above
    covariance = np.zeros((3, 3))
    covariance[0, 0] = np.var(y_b - theta * x_b, ddof=1) / len(y_b)
    covariance[1:, 1:] = np.cov(y_a, x_a) / len(y_a)
    expected_se = float(np.sqrt(gradient @ covariance @ gradient))

    assert float(estimates.relative_se) == pytest.approx(expected_se, rel=1e-6)


def test_cuped__no_pre_exposure_data__not_applied_same_numbers():
    control, treatment = Sample(1000, 100, 100), Sample(1000, 130, 130)

    adjusted = compare(control, treatment, cuped=True)

    assert not adjusted.cuped_applied
    assert adjusted == compare(control, treatment)


def test_sample__numpy_and_database_numbers__kept_as_plain_ones():
    sample = Sample(np.int64(10), np.int64(3), np.float32(3.0))

    assert type(sample.n) is int and type(sample.total) is float
    assert sample.mean == 0.3


@pytest.mark.parametrize(
    "bad",
    [
        {"n": -1, "total": 0, "total_squares": 0},
        {"n": 1.5, "total": 0, "total_squares": 0},
        {"n": 10, "total": float("nan"), "total_squares": 0},
        {"n": 10, "total": 1, "total_squares": -1},
        {"n": 10, "total": True, "total_squares": 1},
    ],
)
def test_sample__impossible_sums__refused(bad):
    with pytest.raises(ValueError):
        Sample(**bad)
