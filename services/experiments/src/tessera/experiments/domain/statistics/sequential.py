"""Always-valid inference: a Gaussian-mixture asymptotic confidence sequence.

Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas, "Time-uniform central limit
theory and asymptotic confidence sequences" (Annals of Statistics, 2024;
arXiv:2103.06476v7, Theorem 2.2 and eq. 155), as GrowthBook applies it. With
N = n_control + n_treatment people so far, an estimate with standard error se
(so sigma^2 = se^2 N) and a mixing parameter rho, the interval

    estimate +- sigma * sqrt( 2 (N rho^2 + 1) / (N^2 rho^2) * ln( sqrt(N rho^2 + 1) / alpha ) )

covers the true lift at every N at once with probability >= 1 - alpha
(asymptotically), so it may be read every day. Its p-value, the smallest
alpha whose interval excludes 0, is the reciprocal of the mixture e-value:

    p = min(1, sqrt(N rho^2 + 1) * exp( -rho^2 N z^2 / (2 (N rho^2 + 1)) )),  z = estimate / se.

rho is set from the tuning N* (`sequential_tuning`, the number of people at
which the interval is to be narrowest):

    rho = sqrt( (-2 ln alpha + ln(-2 ln alpha + 1)) / N* ).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .distributions import FloatArray
from .frequentist import Interval, Lift

__all__ = [
    "DEFAULT_SEQUENTIAL_TUNING",
    "Sequential",
    "confidence_halfwidth",
    "mixture_rho",
    "sequential",
    "sequential_p_value",
]

DEFAULT_SEQUENTIAL_TUNING = 5000.0
"""N* when none is given: GrowthBook's default (people over both arms)."""


def mixture_rho(alpha: float, tuning: float) -> float:
    """The mixing parameter that makes the interval narrowest near `tuning` people."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not tuning > 0:
        raise ValueError(f"the sequential tuning must be > 0, got {tuning}")
    log_term = -2.0 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1.0)) / tuning)


def confidence_halfwidth(
    se: npt.ArrayLike, total_n: npt.ArrayLike, alpha: float, rho: float
) -> FloatArray:
    """Half the width of the confidence sequence at `total_n` people."""
    n = np.asarray(total_n, dtype=np.float64)
    sigma = np.asarray(se, dtype=np.float64) * np.sqrt(n)
    nr2 = n * rho**2
    with np.errstate(divide="ignore", invalid="ignore"):
        width = sigma * np.sqrt(2.0 * (nr2 + 1.0) / (nr2 * n) * np.log(np.sqrt(nr2 + 1.0) / alpha))
    return np.asarray(width, dtype=np.float64)


def sequential_p_value(
    estimate: npt.ArrayLike, se: npt.ArrayLike, total_n: npt.ArrayLike, rho: float
) -> FloatArray:
    """The always-valid p-value of 'no difference' at `total_n` people (1 where se is 0)."""
    n = np.asarray(total_n, dtype=np.float64)
    s = np.asarray(se, dtype=np.float64)
    nr2 = n * rho**2
    with np.errstate(divide="ignore", invalid="ignore"):
        z2 = (np.asarray(estimate, dtype=np.float64) / s) ** 2
        log_p = 0.5 * np.log1p(nr2) - nr2 * z2 / (2.0 * (nr2 + 1.0))
        p = np.exp(np.minimum(log_p, 0.0))
    return np.where((s > 0) & np.isfinite(p), p, 1.0)


class Sequential(NamedTuple):
    """The always-valid p-value (absolute difference) and relative-lift interval."""

    p_value: FloatArray
    relative_ci: Interval
    absolute_ci: Interval


def sequential(
    estimates: Lift,
    total_n: npt.ArrayLike,
    alpha: float = 0.05,
    tuning: float | None = None,
) -> Sequential:
    """Always-valid p-value and confidence sequences for one look at the data."""
    rho = mixture_rho(alpha, DEFAULT_SEQUENTIAL_TUNING if tuning is None else tuning)
    valid = estimates.valid
    raw_p = sequential_p_value(estimates.absolute, estimates.absolute_se, total_n, rho)
    p = np.where(valid, raw_p, 1.0)
    abs_half = confidence_halfwidth(estimates.absolute_se, total_n, alpha, rho)
    rel_half = confidence_halfwidth(estimates.relative_se, total_n, alpha, rho)
    rel_ok = estimates.relative_valid
    return Sequential(
        p_value=np.asarray(p, dtype=np.float64),
        relative_ci=Interval(
            np.where(rel_ok, estimates.relative - rel_half, -np.inf),
            np.where(rel_ok, estimates.relative + rel_half, np.inf),
        ),
        absolute_ci=Interval(
            np.where(valid, estimates.absolute - abs_half, -np.inf),
            np.where(valid, estimates.absolute + abs_half, np.inf),
        ),
    )
