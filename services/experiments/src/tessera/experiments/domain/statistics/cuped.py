"""CUPED: the pre-exposure metric as covariate (Deng, Xu, Kohavi and Walker, WSDM 2013).

Each person's metric y is replaced by y - theta (x - E x), x being the same
metric over the pre-exposure window. With theta = cov(x, y) / var(x) the
variance falls by the factor 1 - corr(x, y)^2 and the expected lift is
unchanged, because randomisation makes E x the same in every arm. theta is
estimated once from both arms pooled (as gbstats' `compute_theta`), so it
does not depend on the treatment and the same theta applies to both arms.
"""

from __future__ import annotations

from .sample import Sample

__all__ = ["has_covariate", "pooled_theta"]


def has_covariate(control: Sample, treatment: Sample) -> bool:
    """True when the covariate varies in the pooled sample: CUPED can help."""
    return pooled_theta(control, treatment) != 0.0


def pooled_theta(control: Sample, treatment: Sample) -> float:
    """theta = cov(x, y) / var(x) over both arms together; 0 without covariate variance."""
    n = control.n + treatment.n
    if n < 2:
        return 0.0
    sum_x = control.pre_total + treatment.pre_total
    sum_y = control.total + treatment.total
    sum_xx = control.pre_total_squares + treatment.pre_total_squares
    sum_xy = control.cross_total + treatment.cross_total
    var_x = (sum_xx - sum_x**2 / n) / (n - 1)
    if var_x <= 1e-12 * max(1.0, sum_xx / n):
        return 0.0
    cov_xy = (sum_xy - sum_x * sum_y / n) / (n - 1)
    return cov_xy / var_x
