"""Cold history: what a profile has bought, kept as running aggregates.

Only purchases change it. The aggregates are updated with each purchase and
stored on the profile, so computing features costs no query on the decision
path. This is all the cold history there is today: order count, revenue,
last purchase and purchases per category, the inputs of RFM, lifetime value
and category interest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from tessera.profiles.domain.model import EventData


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
        counts[str(category)] = counts.get(str(category), 0) + 1
        categories = counts
    return History(
        orders=history.orders + 1,
        revenue=history.revenue + float(event.properties.get("revenue") or 0.0),
        last_purchase_at=event.timestamp if last is None or event.timestamp > last else last,
        categories=categories,
    )


def merge_histories(a: History, b: History) -> History:
    """History of two merged profiles."""
    categories = dict(a.categories)
    for name, count in b.categories.items():
        categories[name] = categories.get(name, 0) + count
    stamps = [s for s in (a.last_purchase_at, b.last_purchase_at) if s is not None]
    return History(
        orders=a.orders + b.orders,
        revenue=a.revenue + b.revenue,
        last_purchase_at=max(stamps) if stamps else None,
        categories=categories,
    )
