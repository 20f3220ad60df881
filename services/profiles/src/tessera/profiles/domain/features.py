"""Features computed from a profile's cold history and hot session.

Computed on read from the history aggregates and the live session, so they
are never stale and cost no query on the decision path.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from tessera.profiles.domain.history import History
from tessera.profiles.domain.session import Session

# Weights of the prior conversion model: a logistic score over session
# signals. They encode the usual funnel order (a cart add says more than a
# page view) and are a prior, not a fit: the live model learned from this
# service's own conversions replaces them when it lands.
PRIOR_INTERCEPT = -4.0
PRIOR_WEIGHTS = {
    "page_views": 0.05,
    "product_views": 0.15,
    "cart_items": 1.2,
    "favorites": 0.3,
    "searches": 0.1,
    "minutes": 0.02,
    "past_orders": 0.4,
}
SESSION_INTEREST_WEIGHT = 3.0
"""A category viewed now counts this many times a past purchase: hot beats cold."""


@dataclass(frozen=True)
class Rfm:
    """Recency (days since the last purchase), frequency, monetary.

    `recency_days` is None for someone who never bought: no recency
    comparison can match them.
    """

    recency_days: float | None
    frequency: int
    monetary: float


@dataclass(frozen=True)
class Interest:
    """How strongly the profile is drawn to a product category."""

    category: str
    score: float


@dataclass(frozen=True)
class Features:
    """What the profile service computes about a person for rules and decisions."""

    rfm: Rfm
    lifetime_value: float
    interests: tuple[Interest, ...]
    """Highest score first; ties by category name."""
    conversion_probability: float


def conversion_probability(session: Session | None, history: History) -> float:
    """Prior probability that the current session converts (logistic score)."""
    # Same order as PRIOR_WEIGHTS: the sum below is then the same to the last bit.
    signals: dict[str, float] = {
        "page_views": session.page_views if session else 0,
        "product_views": sum(session.product_views.values()) if session else 0,
        "cart_items": sum(item.quantity for item in session.cart) if session else 0,
        "favorites": len(session.favorites) if session else 0,
        "searches": len(session.searches) if session else 0,
        "minutes": session.time_spent_ms / 60_000 if session else 0,
        "past_orders": math.log1p(history.orders),
    }
    score = PRIOR_INTERCEPT + sum(PRIOR_WEIGHTS[k] * float(v) for k, v in signals.items())
    # The two forms of the logistic: neither overflows on its own side.
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    lift = math.exp(score)
    return lift / (1.0 + lift)


def compute_features(session: Session | None, history: History, now: dt.datetime) -> Features:
    """RFM, lifetime value, ranked interests and conversion probability."""
    last = history.last_purchase_at
    # A purchase stamped a little ahead of `now` (clock skew) was bought now.
    recency = max(0.0, (now - last).total_seconds() / 86_400) if last is not None else None
    interests: dict[str, float] = {k: float(v) for k, v in history.categories.items()}
    if session is not None:
        for category, views in session.category_views.items():
            interests[category] = interests.get(category, 0.0) + SESSION_INTEREST_WEIGHT * views
    ranked = sorted(interests.items(), key=lambda kv: (-kv[1], kv[0]))
    return Features(
        rfm=Rfm(
            recency_days=round(recency, 3) if recency is not None else None,
            frequency=history.orders,
            monetary=history.revenue,
        ),
        lifetime_value=history.revenue,
        interests=tuple(Interest(category, score) for category, score in ranked),
        conversion_probability=conversion_probability(session, history),
    )
