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
    t_arr, df_arr = np.broadcast_arrays(
        np.asarray(t, dtype=np.float64), np.asarray(df, dtype=np.float64)
    )
    if t_arr.size < _VECTOR_FROM:
        return _elementwise(_t_sf_scalar, t_arr, df_arr)
    return _t_sf_vector(t_arr, df_arr)


# Below this many elements the scalar code is faster than numpy's per-call
# overhead; above it the same fraction runs on whole arrays (simulations).
_VECTOR_FROM = 32


def _log_gamma_ratio_half_vector(a: FloatArray) -> FloatArray:
    small = a < 50.0
    exact = _elementwise(_log_gamma_ratio_half, np.where(small, a, 50.0))
    large = np.maximum(a, 50.0)
    series = 0.5 * np.log(large) - 1.0 / (8.0 * large) + 1.0 / (192.0 * large**3)
    series -= 1.0 / (640.0 * large**5)
    return np.where(small, exact, series)


def _beta_continued_fraction_vector(a: FloatArray, b: FloatArray, x: FloatArray) -> FloatArray:
    # _beta_continued_fraction on whole arrays; converged elements stop changing.
    qab, qap, qam = a + b, a + 1.0, a - 1.0

    def clip(v: FloatArray) -> FloatArray:
        return np.where(np.abs(v) > _TINY, v, _TINY)

    c = np.ones_like(x)
    d = 1.0 / clip(1.0 - qab * x / qap)
    h = d.copy()
    active = np.ones(x.shape, dtype=bool)
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 / clip(1.0 + aa * d)
        c = clip(1.0 + aa / c)
        step = d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 / clip(1.0 + aa * d)
        c = clip(1.0 + aa / c)
        delta = d * c
        h = np.where(active, h * step * delta, h)
        active &= np.abs(delta - 1.0) >= _EPS
        if not active.any():
            return h
    raise ArithmeticError("incomplete beta did not converge")


def _t_sf_vector(t: FloatArray, df: FloatArray) -> FloatArray:
    bad = np.isnan(t) | np.isnan(df) | (df <= 0)
    normal = np.isinf(df) & ~bad
    finite = ~bad & ~normal & np.isfinite(t)
    tt = np.where(finite, t, 1.0)
    v = np.where(finite, df, 1.0)
    t2 = tt * tt
    x, xc = v / (v + t2), t2 / (v + t2)
    a = 0.5 * v
    log_norm = _log_gamma_ratio_half_vector(a) - _LGAMMA_HALF
    with np.errstate(divide="ignore"):
        log_x = np.where(xc < 0.5, np.log1p(-xc), np.log(x))
        log_xc = np.where(x < 0.5, np.log1p(-x), np.log(xc))
    front = np.exp(log_norm + a * log_x + 0.5 * log_xc)
    direct = x < (a + 1.0) / (a + 2.5)
    fraction = _beta_continued_fraction_vector(
        np.where(direct, a, 0.5), np.where(direct, 0.5, a), np.where(direct, x, xc)
    )
    both_tails = np.where(direct, front * fraction / a, 1.0 - front * fraction / 0.5)
    both_tails = np.where(xc <= 0.0, 1.0, both_tails)
    tail = 0.5 * both_tails
    result = np.where(tt >= 0, tail, 1.0 - tail)
    result = np.where(normal, norm_sf(np.where(normal, t, 0.0)), result)
    result = np.where(~bad & np.isinf(t), np.where(t > 0, 0.0, 1.0), result)
    return np.where(bad, np.nan, result)


def _t_pdf_scalar(t: float, df: float) -> float:
    log_density = (
        _log_gamma_ratio_half(0.5 * df)
        - 0.5 * math.log(df * math.pi)
        - 0.5 * (df + 1.0) * math.log1p(t * t / df)
    )
    return math.exp(log_density)


# Newton doubles the correct digits each step from the Cornish-Fisher start;
# once the tail's own rounding (about 1e-12 relative at a million degrees of
# freedom) dominates, further steps only jitter, so stop there.
_NEWTON_STEPS = 20
_NEWTON_TOLERANCE = 1e-12


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
    for _ in range(_NEWTON_STEPS):
        step = (_t_sf_scalar(t, df) - tail) / _t_pdf_scalar(t, df)
        following = t + step
        if following <= 0:  # overshot past the median: halve instead
            following = t / 2.0
        if abs(following - t) <= _NEWTON_TOLERANCE * max(1.0, abs(t)):
            return following
        t = following
    return t


def t_ppf(p: npt.ArrayLike, df: npt.ArrayLike) -> FloatArray:
    """The Student t quantile: t with P(T <= t) = p, for `df` > 0."""
    p_arr, df_arr = np.broadcast_arrays(
        np.asarray(p, dtype=np.float64), np.asarray(df, dtype=np.float64)
    )
    if p_arr.size < _VECTOR_FROM:
        return _elementwise(_t_ppf_scalar, p_arr, df_arr)
    # Many quantiles share their (p, df) (one alpha, few sizes): solve each once.
    stacked = np.stack([p_arr.ravel(), df_arr.ravel()])
    pairs, inverse = np.unique(stacked, axis=1, return_inverse=True)
    if pairs.shape[1] < _VECTOR_FROM:
        solved = _elementwise(_t_ppf_scalar, pairs[0], pairs[1])
    else:
        solved = _t_ppf_vector(pairs[0], pairs[1])
    return solved[inverse.ravel()].reshape(p_arr.shape)


def _t_pdf_vector(t: FloatArray, df: FloatArray) -> FloatArray:
    log_density = (
        _log_gamma_ratio_half_vector(0.5 * df)
        - 0.5 * np.log(df * math.pi)
        - 0.5 * (df + 1.0) * np.log1p(t * t / df)
    )
    return np.exp(log_density)


def _t_ppf_vector(p: FloatArray, df: FloatArray) -> FloatArray:
    # Newton from the Cornish-Fisher start, as _t_ppf_scalar, on the upper half.
    usable = ~np.isnan(p) & ~np.isnan(df) & (df > 0) & (p > 0) & (p < 1) & np.isfinite(df)
    upper = np.where(usable, np.maximum(p, 1.0 - p), 0.75)
    v = np.where(usable, df, 10.0)
    z = norm_ppf(upper)
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    t = z + g1 / v + g2 / v**2 + g3 / v**3
    t = np.where(np.isfinite(t) & (t > 0), t, z)
    tail = 1.0 - upper
    for _ in range(_NEWTON_STEPS):
        following = t + (_t_sf_vector(t, v) - tail) / _t_pdf_vector(t, v)
        following = np.where(following <= 0, t / 2.0, following)
        done = np.abs(following - t) <= _NEWTON_TOLERANCE * np.maximum(1.0, np.abs(t))
        t = following
        if done.all():
            break
    t = np.where(v == 1.0, np.tan(math.pi * (upper - 0.5)), t)
    t = np.where(v == 2.0, (2.0 * upper - 1.0) / np.sqrt(2.0 * upper * (1.0 - upper)), t)
    t = np.where(upper == 0.5, 0.0, t)
    result = np.where(p < 0.5, -t, t)
    # The edges, as the scalar code answers them.
    result = np.where(usable, result, _elementwise(_t_ppf_scalar, p, df))
    return np.asarray(result, dtype=np.float64)


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
