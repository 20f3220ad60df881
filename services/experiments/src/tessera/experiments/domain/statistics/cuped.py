"""CUPED: the pre-exposure metric as covariate (Deng, Xu, Kohavi and Walker, WSDM 2013).

Each person's metric y is replaced by y - theta (x - E x), x being the same
metric over the pre-exposure window. With theta = cov(x, y) / var(x) the
variance falls by the factor 1 - corr(x, y)^2 and the expected lift is
unchanged, because randomisation makes E x the same in every arm. theta is
estimated once from both arms pooled (as gbstats' `compute_theta`), so it
does not depend on the treatment and the same theta applies to both arms.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .distributions import FloatArray
from .sample import Sample

__all__ = ["has_covariate", "pooled_theta", "theta_from_sums"]


def has_covariate(control: Sample, treatment: Sample) -> bool:
    """True when the covariate varies in the pooled sample: CUPED can help."""
    return pooled_theta(control, treatment) != 0.0


def pooled_theta(control: Sample, treatment: Sample) -> float:
    """theta = cov(x, y) / var(x) over both arms together; 0 without covariate variance."""
    return float(
        theta_from_sums(
            control.n + treatment.n,
            control.total + treatment.total,
            control.pre_total + treatment.pre_total,
            control.pre_total_squares + treatment.pre_total_squares,
            control.cross_total + treatment.cross_total,
        )
    )


def theta_from_sums(
    n: npt.ArrayLike,
    sum_y: npt.ArrayLike,
    sum_x: npt.ArrayLike,
    sum_xx: npt.ArrayLike,
    sum_xy: npt.ArrayLike,
) -> FloatArray:
    """theta from pooled sums, elementwise; 0 where n < 2 or x does not vary."""
    count = np.asarray(n, dtype=np.float64)
    sx, sy = np.asarray(sum_x, dtype=np.float64), np.asarray(sum_y, dtype=np.float64)
    sxx, sxy = np.asarray(sum_xx, dtype=np.float64), np.asarray(sum_xy, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_x = (sxx - sx**2 / count) / (count - 1)
        cov_xy = (sxy - sx * sy / count) / (count - 1)
        theta = cov_xy / var_x
    # A covariate that does not vary (up to rounding) cannot adjust anything.
    varies = (count >= 2) & (var_x > 1e-12 * np.maximum(1.0, sxx / np.maximum(count, 1.0)))
    return np.where(varies, theta, 0.0)
