"""Sample ratio mismatch: do the exposures per variant match the configured weights?

Pearson's chi-squared goodness-of-fit test (as gbstats' `check_srm`): with
N people over k variants and weights w_i (normalised to sum to 1), the
statistic sum (n_i - N w_i)^2 / (N w_i) is chi-squared with k - 1 degrees of
freedom when assignment works. Variants with weight 0 are left out (nobody
should be there; anyone who is counts against the others' expected share only
through N) and so are their counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .distributions import chi2_sf

__all__ = ["srm_p_value"]


def srm_p_value(counts: Sequence[int], weights: Sequence[float]) -> float:
    """The p-value of 'people were split by these weights'; 1 with no one exposed.

    A small value (GrowthBook and Tessera flag below 0.001) means the split is
    broken: fix it before reading any lift.
    """
    if len(counts) != len(weights):
        raise ValueError(f"{len(counts)} counts but {len(weights)} weights")
    if any(c < 0 for c in counts):
        raise ValueError("counts cannot be negative")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError("weights must be finite and >= 0")
    pairs = [(c, w) for c, w in zip(counts, weights, strict=True) if w > 0]
    if len(pairs) < 2:
        return 1.0
    total_weight = math.fsum(w for _, w in pairs)
    total = sum(c for c, _ in pairs)
    if total == 0:
        return 1.0
    statistic = 0.0
    for count, weight in pairs:
        expected = total * weight / total_weight
        statistic += (count - expected) ** 2 / expected
    return float(chi2_sf(statistic, len(pairs) - 1))
