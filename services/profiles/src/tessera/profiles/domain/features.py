"""Features computed from a profile's cold history and hot session.

Computed on read from the history aggregates and the live session, so they
are never stale and cost no query on the decision path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tessera.profiles.domain.conversion import PRIOR, ConversionModel, probability, signals
from tessera.profiles.domain.history import History
from tessera.profiles.domain.session import Session

DAY_S = 86_400.0


@dataclass(frozen=True)
class InterestRules:
    """How category interest follows intent (docs/interests.md)."""

    half_life_days: float = 30.0
    """A purchase counts half as much this many days later."""
    suppress_days: float = 30.0
    """A category bought within this many days is not pushed at all (0: never suppressed)."""
    session_weight: float = 3.0
    """A category view in the live session counts this many times a purchase of today."""


DEFAULT_INTEREST_RULES = InterestRules()


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
    conversion_model_version: str = PRIOR.version
    """The conversion model that gave the probability: a trained version, or "prior"."""


def rank_interests(
    session: Session | None, history: History, now: dt.datetime, rules: InterestRules
) -> tuple[Interest, ...]:
    """Category interest, strongest first (ties by name); see docs/interests.md.

    score(c) = session_weight * views_now(c) + purchases(c) * 2^(-age(c) / half_life)
    with age(c) the days since the category was last bought, and 0 for a
    category bought less than suppress_days ago: its need is met, whatever
    the session shows. Categories scoring 0 (suppressed, or bought so long
    ago that the decay reaches 0) are left out.
    """
    scores: dict[str, float] = {}
    suppressed: set[str] = set()
    for category, count in history.categories.items():
        bought = history.category_purchased_at.get(category, history.last_purchase_at)
        if bought is None:
            scores[category] = float(count)
            continue
        # A purchase stamped a little ahead of `now` (clock skew) was bought now.
        age = max(0.0, (now - bought).total_seconds() / DAY_S)
        if age < rules.suppress_days:
            suppressed.add(category)
            continue
        scores[category] = count * 2.0 ** (-age / rules.half_life_days)
    if session is not None:
        for category, views in session.category_views.items():
            if category not in suppressed:
                scores[category] = scores.get(category, 0.0) + rules.session_weight * views
    ranked = sorted(((c, v) for c, v in scores.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))
    return tuple(Interest(category, score) for category, score in ranked)


def timeless(history: History) -> bool:
    """Whether the features of `history` (with any session) are the same at every moment.

    Only purchase times make them move with the clock: recency counts from
    the last purchase, a category's interest decays from its. A history
    without them gives the same features whenever they are computed.
    """
    return history.last_purchase_at is None and not history.category_purchased_at


def compute_features(
    session: Session | None,
    history: History,
    now: dt.datetime,
    interest_rules: InterestRules = DEFAULT_INTEREST_RULES,
    model: ConversionModel = PRIOR,
) -> Features:
    """RFM, lifetime value, ranked interests and the conversion probability of `model`."""
    last = history.last_purchase_at
    # A purchase stamped a little ahead of `now` (clock skew) was bought now.
    recency = max(0.0, (now - last).total_seconds() / DAY_S) if last is not None else None
    return Features(
        rfm=Rfm(
            recency_days=round(recency, 3) if recency is not None else None,
            frequency=history.orders,
            monetary=history.revenue,
        ),
        lifetime_value=history.revenue,
        interests=rank_interests(session, history, now, interest_rules),
        conversion_probability=probability(model, signals(session, history)),
        conversion_model_version=model.version,
    )
