"""The conversion model: how likely the current session reaches the goal.

A logistic model over a handful of session and history signals. Until a
model has been trained on this service's own sessions (`tessera train
conversion`, see `training`), the prior below is used and says so: its
version is "prior". A trained model is the same shape with fitted weights
and a version of its own, so the live path never cares which one it has.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tessera.profiles.domain.history import History
from tessera.profiles.domain.session import Session

SIGNALS = (
    "page_views",
    "product_views",
    "cart_items",
    "favorites",
    "searches",
    "minutes",
    "past_orders",
)
"""What the model reads, in this order."""

PRIOR_VERSION = "prior"


@dataclass(frozen=True)
class ConversionModel:
    """A logistic model: p = 1 / (1 + exp(-(intercept + sum(weight * signal))))."""

    version: str
    intercept: float
    weights: Mapping[str, float] = field(default_factory=dict)
    """One weight per name in SIGNALS; a missing one counts as 0."""


# The prior encodes the usual funnel order (a cart add says more than a page
# view); it is a starting point, not a fit.
PRIOR = ConversionModel(
    version=PRIOR_VERSION,
    intercept=-4.0,
    weights={
        "page_views": 0.05,
        "product_views": 0.15,
        "cart_items": 1.2,
        "favorites": 0.3,
        "searches": 0.1,
        "minutes": 0.02,
        "past_orders": 0.4,
    },
)


def signals(session: Session | None, history: History) -> tuple[float, ...]:
    """The model's inputs for one session and history, in SIGNALS order."""
    if session is None:
        live = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    else:
        live = (
            float(session.page_views),
            float(sum(session.product_views.values())),
            float(sum(item.quantity for item in session.cart)),
            float(len(session.favorites)),
            float(len(session.searches)),
            session.time_spent_ms / 60_000,
        )
    return (*live, math.log1p(max(history.orders, 0)))


def probability(model: ConversionModel, inputs: Sequence[float]) -> float:
    """The model's probability for `inputs` (SIGNALS order); always within [0, 1]."""
    score = model.intercept + sum(
        model.weights.get(name, 0.0) * value for name, value in zip(SIGNALS, inputs, strict=True)
    )
    # The two forms of the logistic: neither overflows on its own side.
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    lift = math.exp(score)
    return lift / (1.0 + lift)
