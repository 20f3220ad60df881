"""The few distribution functions the statistics need, on numpy and the stdlib.

The experiments service must not need scipy at run time, so the normal,
Student t and chi-squared tails are computed here. Each works elementwise on
anything numpy can turn into an array and returns a float64 array (0-d for a
scalar). Tests check every one against scipy.stats.

Sources:
- normal: `math.erfc`; the quantile is the stdlib's `statistics.NormalDist`,
  which implements Wichura's algorithm AS241 (Applied Statistics 37, 1988).
- Student t: the tail is the regularised incomplete beta function,
  P(T > t) = I_{v/(v+t^2)}(v/2, 1/2) / 2 (Abramowitz & Stegun 26.7.1 with
  26.5.27), evaluated by its continued fraction with the modified Lentz method
  (Numerical Recipes, 3rd ed., 6.4 and 5.2). The quantile starts from the
  Cornish-Fisher expansion (A&S 26.7.5) and is polished by Newton steps.
- chi-squared with k degrees of freedom: the closed forms of A&S 26.4.4 (k
  even) and 26.4.5 (k odd), summed in log space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FloatArray",
    "chi2_sf",
    "norm_cdf",
    "norm_ppf",
    "norm_sf",
    "t_ppf",
    "t_sf",
]

FloatArray = npt.NDArray[np.float64]

_STANDARD_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)


def _elementwise(function: Callable[..., float], *args: npt.ArrayLike) -> FloatArray:
    # np.frompyfunc keeps the scalar code exact and still broadcasts.
    ufunc: Any = np.frompyfunc(function, len(args), 1)
    return np.asarray(ufunc(*args), dtype=np.float64)


def _norm_sf_scalar(x: float) -> float:
    return 0.5 * math.erfc(x / _SQRT2)


def norm_cdf(x: npt.ArrayLike) -> FloatArray:
    """P(Z <= x) for a standard normal Z."""
    return _elementwise(_norm_sf_scalar, -np.asarray(x, dtype=np.float64))


def norm_sf(x: npt.ArrayLike) -> FloatArray:
    """P(Z > x) for a standard normal Z, accurate far into the upper tail."""
    return _elementwise(_norm_sf_scalar, x)


def _norm_ppf_scalar(p: float) -> float:
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return _STANDARD_NORMAL.inv_cdf(p)


def norm_ppf(p: npt.ArrayLike) -> FloatArray:
    """The standard normal quantile: x with P(Z <= x) = p (±inf at 0 and 1)."""
    return _elementwise(_norm_ppf_scalar, p)


# --- Student t ---------------------------------------------------------------

_TINY = 1e-300
_EPS = 1e-15
_MAX_ITERATIONS = 100_000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    # The continued fraction of I_x(a, b) (NR 6.4.5), modified Lentz.
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def _log_gamma_ratio_half(a: float) -> float:
    """ln(Gamma(a + 1/2) / Gamma(a)), without the cancellation of two large lgammas.

    Above a = 50 the asymptotic series 1/2 ln a - 1/(8a) + 1/(192a^3) - 1/(640a^5)
    (from Stirling's series; next term below 1e-15 there) replaces the
    difference, which loses about log10(a) digits.
    """
    if a < 50.0:
        return math.lgamma(a + 0.5) - math.lgamma(a)
    return 0.5 * math.log(a) - 1.0 / (8.0 * a) + 1.0 / (192.0 * a**3) - 1.0 / (640.0 * a**5)


_LGAMMA_HALF = math.lgamma(0.5)


def _betainc(a: float, b: float, x: float, xc: float) -> float:
    """The regularised incomplete beta function I_x(a, b); `xc` is 1 - x.

    Taking the complement as an argument keeps its digits when the caller
    can compute it directly (for the t tail, t^2 / (v + t^2)).
    """
    if x <= 0.0:
        return 0.0
    if xc <= 0.0:
        return 1.0
    if a == 0.5:
        log_norm = _log_gamma_ratio_half(b) - _LGAMMA_HALF
    elif b == 0.5:
        log_norm = _log_gamma_ratio_half(a) - _LGAMMA_HALF
    else:
        log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    # Whichever of x and 1 - x is small carries the digits of both logs:
    # a * ln(x) with a large and x near 1 would otherwise amplify rounding.
    log_x = math.log1p(-xc) if xc < 0.5 else math.log(x)
    log_xc = math.log1p(-x) if x < 0.5 else math.log(xc)
    log_front = log_norm + a * log_x + b * log_xc
    # The fraction converges fast below (a + 1) / (a + b + 2); above it,
    # I_x(a, b) = 1 - I_{1-x}(b, a) (NR 6.4.3).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, xc) / b


def _t_sf_scalar(t: float, df: float) -> float:
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return math.nan
    if math.isinf(df):
        return _norm_sf_scalar(t)
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    # P(|T| > t) = I_x(v/2, 1/2) with x = v / (v + t^2); both x and 1 - x
    # are computed directly, and _betainc picks the branch whose fraction
    # converges, so a far tail keeps its relative precision.
    t2 = t * t
    both_tails = _betainc(0.5 * df, 0.5, df / (df + t2), t2 / (df + t2))
    tail = 0.5 * both_tails
    return tail if t >= 0 else 1.0 - tail


def t_sf(t: npt.ArrayLike, df: npt.ArrayLike) -> FloatArray:
    """P(T > t) for Student's t with `df` (real, > 0) degrees of freedom."""
    return _elementwise(_t_sf_scalar, t, df)


def _t_pdf_scalar(t: float, df: float) -> float:
    log_density = (
        _log_gamma_ratio_half(0.5 * df)
        - 0.5 * math.log(df * math.pi)
        - 0.5 * (df + 1.0) * math.log1p(t * t / df)
    )
    return math.exp(log_density)


def _t_ppf_scalar(p: float, df: float) -> float:
    if math.isnan(p) or math.isnan(df) or df <= 0 or not 0.0 <= p <= 1.0:
        return math.nan
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if math.isinf(df):
        return _norm_ppf_scalar(p)
    if p < 0.5:
        return -_t_ppf_scalar(1.0 - p, df)
    if df == 1.0:  # Cauchy
        return math.tan(math.pi * (p - 0.5))
    if df == 2.0:
        return (2.0 * p - 1.0) / math.sqrt(2.0 * p * (1.0 - p))
    z = _norm_ppf_scalar(p)
    # Cornish-Fisher start (A&S 26.7.5), then Newton on the tail.
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    t = z + g1 / df + g2 / df**2 + g3 / df**3
    if not math.isfinite(t) or t <= 0:
        t = z
    tail = 1.0 - p
    for _ in range(100):
        step = (_t_sf_scalar(t, df) - tail) / _t_pdf_scalar(t, df)
        following = t + step
        if following <= 0:  # overshot past the median: halve instead
            following = t / 2.0
        if abs(following - t) <= 1e-14 * max(1.0, abs(t)):
            return following
        t = following
    return t


def t_ppf(p: npt.ArrayLike, df: npt.ArrayLike) -> FloatArray:
    """The Student t quantile: t with P(T <= t) = p, for `df` > 0."""
    return _elementwise(_t_ppf_scalar, p, df)


# --- chi-squared ---------------------------------------------------------------


def _chi2_sf_scalar(x: float, k: float) -> float:
    if math.isnan(x) or k < 1 or k != int(k):
        return math.nan
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    half = 0.5 * x
    log_half = math.log(half)
    dof = int(k)
    if dof % 2 == 0:
        # A&S 26.4.4: Q = e^{-x/2} sum_{j=0}^{k/2-1} (x/2)^j / j!
        terms = (j * log_half - half - math.lgamma(j + 1.0) for j in range(dof // 2))
        return min(1.0, math.fsum(math.exp(term) for term in terms))
    # A&S 26.4.5: Q = erfc(sqrt(x/2))
    #                 + e^{-x/2} sum_{j=1}^{(k-1)/2} (x/2)^{j-1/2} / Gamma(j+1/2)
    terms = ((j - 0.5) * log_half - half - math.lgamma(j + 0.5) for j in range(1, (dof + 1) // 2))
    return min(1.0, math.erfc(math.sqrt(half)) + math.fsum(math.exp(term) for term in terms))


def chi2_sf(x: npt.ArrayLike, k: npt.ArrayLike) -> FloatArray:
    """P(X > x) for a chi-squared X with `k` (a positive integer) degrees of freedom."""
    return _elementwise(_chi2_sf_scalar, x, k)
