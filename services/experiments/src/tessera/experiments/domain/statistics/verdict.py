"""The status of an experiment from its comparisons and its SRM check."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from .comparison import Comparison

__all__ = ["Verdict", "verdict"]


class Verdict(StrEnum):
    """What a marketer should take from the results now."""

    COLLECTING = "collecting"
    SIGNIFICANT = "significant"
    INCONCLUSIVE = "inconclusive"
    BROKEN = "broken"


def verdict(
    comparisons: Sequence[Comparison],
    srm_p: float,
    *,
    min_sample: int,
    srm_threshold: float = 0.001,
    alpha: float = 0.05,
) -> Verdict:
    """Decide the status; the rules apply in this order:

    1. BROKEN when `srm_p` < `srm_threshold`: the split does not match the
       weights, so no lift can be trusted, whatever it says.
    2. COLLECTING while an arm has fewer than `min_sample` people (or there
       is no comparison yet).
    3. SIGNIFICANT when some treatment's always-valid sequential p-value is
       below alpha / (number of treatments) (Bonferroni, so the chance of any
       false win stays below alpha). The sequential p-value is used because
       results are read every day; a fixed-horizon p read daily would not
       keep alpha.
    4. INCONCLUSIVE otherwise: enough people, no clear difference yet.
    """
    if srm_p < srm_threshold:
        return Verdict.BROKEN
    if not comparisons or any(min(c.control_n, c.treatment_n) < min_sample for c in comparisons):
        return Verdict.COLLECTING
    threshold = alpha / len(comparisons)
    if any(c.sequential_p_value < threshold for c in comparisons):
        return Verdict.SIGNIFICANT
    return Verdict.INCONCLUSIVE
