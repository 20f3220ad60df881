"""Cold history: what a profile has bought, kept as running aggregates.

Only purchases change it. The aggregates are updated with each purchase and
stored on the profile, so computing features costs no query on the decision
path. This is all the cold history there is today: order count, revenue,
last purchase and purchases per category, the inputs of RFM, lifetime value
and category interest. Counts saturate at the largest int64 and revenue
stays a finite double (see docs/profile-writes.md), so no sequence of
events makes a history its proto fields cannot carry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from tessera.profiles.domain.model import EventData, finite_add, saturating_add


@dataclass(frozen=True)
class History:
    """A profile's purchase aggregates; the default is a profile that bought nothing."""

    orders: int = 0
    revenue: float = 0.0
    last_purchase_at: dt.datetime | None = None
    categories: Mapping[str, int] = field(default_factory=dict)
    """Purchases per product category."""


def add_to_history(history: History, event: EventData) -> History:
    """History after `event`; only purchases change it."""
    if event.type != "purchase":
        return history
    last = history.last_purchase_at
    categories = history.categories
    category = event.properties.get("category")
    if category:
        counts = dict(categories)
        counts[str(category)] = saturating_add(counts.get(str(category), 0), 1)
        categories = counts
    return History(
        orders=saturating_add(history.orders, 1),
        revenue=finite_add(history.revenue, float(event.properties.get("revenue") or 0.0)),
        last_purchase_at=event.timestamp if last is None or event.timestamp > last else last,
        categories=categories,
    )


def merge_histories(a: History, b: History) -> History:
    """History of two merged profiles."""
    categories = dict(a.categories)
    for name, count in b.categories.items():
        categories[name] = saturating_add(categories.get(name, 0), count)
    stamps = [s for s in (a.last_purchase_at, b.last_purchase_at) if s is not None]
    return History(
        orders=saturating_add(a.orders, b.orders),
        revenue=finite_add(a.revenue, b.revenue),
        last_purchase_at=max(stamps) if stamps else None,
        categories=categories,
    )
