"""Lift and its fixed-horizon inference: Welch's t on sums, delta method for the relative lift.

All functions here broadcast over numpy arrays, so the simulations run the
same formulas on thousands of experiments at once; `compare` calls them with
plain numbers. Formulas (docs/statistics.md has them in full):

- absolute lift d = mean_b - mean_a, se^2 = var_b / n_b + var_a / n_a;
- relative lift r = d / mean_a, se^2 by the delta method
  = var_b / (n_b mean_a^2) + var_a mean_b^2 / (n_a mean_a^4)
  (the variance of a ratio of independent means; Casella & Berger,
  Statistical Inference, 5.5.4), as gbstats' `frequentist_variance`;
- Welch-Satterthwaite degrees of freedom (Welch 1947), and the two-sided
  p-value 2 P(T > |d / se|) and intervals estimate +- t_{1-alpha/2} se.

With CUPED (`theta` != 0) each arm's metric y is replaced by y - theta x; the
relative lift stays over the unadjusted control mean, and its control-side
variance carries the covariance terms of gbstats'
`frequentist_variance_relative_cuped`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .distributions import FloatArray, t_ppf, t_sf
from .sample import Sample

__all__ = ["Arm", "Interval", "Lift", "arm_of", "fixed_horizon", "lift"]


class Arm(NamedTuple):
    """One arm's moments, as numbers or arrays of the same shape."""

    n: npt.ArrayLike
    mean: npt.ArrayLike
    variance: npt.ArrayLike
    pre_mean: npt.ArrayLike = 0.0
    pre_variance: npt.ArrayLike = 0.0
    covariance: npt.ArrayLike = 0.0


def arm_of(sample: Sample) -> Arm:
    """The moments of one Sample."""
    return Arm(
        sample.n,
        sample.mean,
        sample.variance,
        sample.pre_mean,
        sample.pre_variance,
        sample.covariance,
    )


class Lift(NamedTuple):
    """Point estimates and standard errors of the lift of treatment over control.

    `valid` is False where the numbers say nothing: an arm with fewer than two
    people, no variance in either arm, or (for the relative lift only, see
    `relative_valid`) a control mean of 0.
    """

    absolute: FloatArray
    absolute_se: FloatArray
    relative: FloatArray
    relative_se: FloatArray
    df: FloatArray
    valid: npt.NDArray[np.bool_]
    relative_valid: npt.NDArray[np.bool_]


def _f(value: npt.ArrayLike) -> FloatArray:
    return np.asarray(value, dtype=np.float64)


def lift(control: Arm, treatment: Arm, theta: npt.ArrayLike = 0.0) -> Lift:
    """The absolute and relative lift, their standard errors and Welch's df.

    `theta` is the CUPED coefficient (0: no adjustment); both arms use the
    same theta, so the adjusted difference stays unbiased.
    """
    th = _f(theta)
    n_a, n_b = _f(control.n), _f(treatment.n)
    y_a, y_b = _f(control.mean), _f(treatment.mean)
    # Adjusted per-person variance: var(y - theta x) = var y + theta^2 var x - 2 theta cov.
    v_a = _f(control.variance) + th**2 * _f(control.pre_variance) - 2 * th * _f(control.covariance)
    v_b = (
        _f(treatment.variance)
        + th**2 * _f(treatment.pre_variance)
        - 2 * th * _f(treatment.covariance)
    )
    v_a, v_b = np.maximum(v_a, 0.0), np.maximum(v_b, 0.0)
    m_a = y_a - th * _f(control.pre_mean)
    m_b = y_b - th * _f(treatment.pre_mean)

    with np.errstate(divide="ignore", invalid="ignore"):
        sv_a, sv_b = v_a / n_a, v_b / n_b
        absolute = m_b - m_a
        absolute_se = np.sqrt(sv_a + sv_b)
        relative = absolute / y_a
        # Treatment side: var(y_b - theta x_b) / (n_b y_a^2). Control side:
        # gradient (-y_b / y_a^2, theta / y_a) against (y_a, x_a), as gbstats.
        relative_var = v_b / (n_b * y_a**2) + (
            _f(control.variance) * y_b**2 / y_a**2
            - 2 * th * _f(control.covariance) * y_b / y_a
            + th**2 * _f(control.pre_variance)
        ) / (n_a * y_a**2)
        relative_se = np.sqrt(np.maximum(relative_var, 0.0))
        df = (sv_a + sv_b) ** 2 / (sv_b**2 / (n_b - 1) + sv_a**2 / (n_a - 1))

    valid = (n_a >= 2) & (n_b >= 2) & (absolute_se > 0) & np.isfinite(df)
    relative_valid = valid & (y_a != 0) & (relative_se > 0)
    return Lift(
        absolute=absolute,
        absolute_se=absolute_se,
        relative=np.where(y_a != 0, relative, np.nan),
        relative_se=relative_se,
        df=np.where(valid, df, np.nan),
        valid=np.asarray(valid),
        relative_valid=np.asarray(relative_valid),
    )


class Interval(NamedTuple):
    """Lower and upper bounds, elementwise."""

    low: FloatArray
    high: FloatArray


class FixedHorizon(NamedTuple):
    """Welch's two-sided p-value and the intervals at 1 - alpha."""

    p_value: FloatArray
    absolute_ci: Interval
    relative_ci: Interval


def fixed_horizon(estimates: Lift, alpha: float = 0.05) -> FixedHorizon:
    """Two-sided p-value of 'no difference' and the (1 - alpha) intervals.

    The p-value tests the absolute difference (Welch's unequal-variance t),
    so it agrees with `absolute_ci`; where the lift is not `valid` it is 1
    and the intervals are (-inf, inf).
    """
    valid = estimates.valid
    df = np.where(valid, estimates.df, 1.0)
    se = np.where(valid, estimates.absolute_se, 1.0)
    statistic = np.abs(estimates.absolute) / se
    p_value = np.where(valid, np.minimum(1.0, 2.0 * t_sf(statistic, df)), 1.0)
    quantile = t_ppf(1.0 - alpha / 2.0, df)
    absolute_half = quantile * estimates.absolute_se
    relative_half = quantile * estimates.relative_se
    rel_ok = estimates.relative_valid
    return FixedHorizon(
        p_value=np.asarray(p_value, dtype=np.float64),
        absolute_ci=_interval(estimates.absolute, absolute_half, valid),
        relative_ci=_interval(estimates.relative, relative_half, rel_ok),
    )


def _interval(center: FloatArray, half: FloatArray, known: npt.NDArray[np.bool_]) -> Interval:
    return Interval(
        low=np.where(known, center - half, -np.inf),
        high=np.where(known, center + half, np.inf),
    )
