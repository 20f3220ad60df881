"""Bayesian chance to beat control, and Thompson-sampling allocation.

Chance to win follows gbstats' effect model with its default flat prior: the
relative lift is taken as normal with mean r and standard deviation se_r (the
delta-method moments of `frequentist.lift`), so P(lift > 0) = Phi(r / se_r).
(GrowthBook, "Bayesian statistics" in its docs; gbstats `GaussianEffectABTest`.)

Thompson sampling (Thompson 1933; Chapelle & Li, "An empirical evaluation of
Thompson sampling", NIPS 2011) draws each arm's conversion rate from its
Beta(1 + conversions, 1 + non-conversions) posterior (uniform prior) and gives
each treatment the share of draws in which it is the best treatment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .distributions import FloatArray, norm_cdf
from .frequentist import Lift
from .sample import Sample

__all__ = ["chance_to_win", "thompson_weights"]


def chance_to_win(estimates: Lift) -> FloatArray:
    """P(treatment beats control) under a flat prior; 0.5 where nothing is known."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = estimates.relative / estimates.relative_se
    known = estimates.relative_valid
    return np.where(known, norm_cdf(np.where(known, z, 0.0)), 0.5)


def thompson_weights(
    samples: Sequence[Sample],
    *,
    control_share: float,
    draws: int,
    rng: np.random.Generator,
    control_index: int = 0,
) -> list[float]:
    """Traffic weights: the control keeps `control_share`, treatments share the rest.

    Each treatment's part of 1 - control_share is the share of `draws`
    posterior draws in which it has the highest conversion rate among the
    treatments (ties go to the first). The control is not in that contest:
    its share is fixed so that lift against it stays measurable however the
    treatments do. Weights sum to 1. Samples must be conversion counts.
    """
    if len(samples) < 2:
        raise ValueError("Thompson sampling needs a control and at least one treatment")
    if not 0 <= control_index < len(samples):
        raise ValueError(f"control_index {control_index} is not one of the samples")
    if not 0 <= control_share < 1:
        raise ValueError(f"control_share must be in [0, 1), got {control_share}")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    for i, sample in enumerate(samples):
        if not 0 <= sample.total <= sample.n:
            raise ValueError(f"samples[{i}] is not a conversion count (0 <= total <= n)")
    treatments = [s for i, s in enumerate(samples) if i != control_index]
    successes: npt.NDArray[np.float64] = np.array([s.total for s in treatments], dtype=np.float64)
    failures = np.array([s.n - s.total for s in treatments], dtype=np.float64)
    rates = rng.beta(1.0 + successes, 1.0 + failures, size=(draws, len(treatments)))
    wins = np.bincount(np.argmax(rates, axis=1), minlength=len(treatments)) / draws
    shares = iter((1.0 - control_share) * wins)
    return [
        control_share if i == control_index else float(next(shares)) for i in range(len(samples))
    ]
