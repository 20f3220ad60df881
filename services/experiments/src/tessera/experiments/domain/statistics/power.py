"""Sample size for a conversion experiment.

For a two-sided test of two proportions at level alpha with power 1 - beta,
people per variant (unpooled variances, as the Welch test `compare` runs):

    n = (z_{1-alpha/2} + z_{1-beta})^2 (p1 (1 - p1) + p2 (1 - p2)) / (p2 - p1)^2

with p1 the baseline rate and p2 = p1 (1 + relative lift) (Chow, Shao and
Wang, Sample Size Calculations in Clinical Research, 2nd ed., 4.2.1;
rounded up).
"""

from __future__ import annotations

import math

from .distributions import norm_ppf

__all__ = ["required_sample_size"]


def required_sample_size(
    baseline_rate: float, relative_lift: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """People per variant to detect `relative_lift` over `baseline_rate` with `power`."""
    if not 0 < baseline_rate < 1:
        raise ValueError(f"baseline_rate must be between 0 and 1, got {baseline_rate}")
    treated = baseline_rate * (1.0 + relative_lift)
    if relative_lift == 0 or not 0 < treated < 1:
        raise ValueError(
            f"relative_lift must be nonzero and keep the rate in (0, 1), got {relative_lift}"
        )
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("alpha and power must be between 0 and 1")
    z = float(norm_ppf(1.0 - alpha / 2.0)) + float(norm_ppf(power))
    variance = baseline_rate * (1 - baseline_rate) + treated * (1 - treated)
    return math.ceil(z**2 * variance / (treated - baseline_rate) ** 2)
