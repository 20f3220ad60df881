"""Features computed from a profile's cold history and hot session.

Computed on read from the history aggregates and the live session, so they
are never stale and cost no query on the decision path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tessera.profiles.domain.conversion import PRIOR, probability, signals
from tessera.profiles.domain.history import History
from tessera.profiles.domain.session import Session

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
        conversion_probability=probability(PRIOR, signals(session, history)),
    )
