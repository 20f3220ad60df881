"""Cold history: what a profile has bought, kept as running aggregates.

Only purchases change it. The aggregates are updated with each purchase and
stored on the profile, so computing features costs no query on the decision
path. This is all the cold history there is today: order count, revenue,
last purchase, purchases per category and each category's last purchase,
the inputs of RFM, lifetime value and category interest. Counts saturate at
the largest int64 and revenue stays a finite double (see
docs/profile-writes.md), so no sequence of events makes a history its proto
fields cannot carry.
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
    category_purchased_at: Mapping[str, dt.datetime] = field(default_factory=dict)
    """Latest purchase per product category: interests decay and are suppressed from it."""


def changes_history(event: EventData) -> bool:
    """Whether `event` changes a history: only purchases do."""
    return event.type == "purchase"


def add_to_history(history: History, event: EventData) -> History:
    """History after `event`; only purchases change it."""
    if not changes_history(event):
        return history
    last = history.last_purchase_at
    categories = history.categories
    purchased_at = history.category_purchased_at
    category = event.properties.get("category")
    if category:
        name = str(category)
        counts = dict(categories)
        counts[name] = saturating_add(counts.get(name, 0), 1)
        categories = counts
        purchased_at = _latest(purchased_at, {name: event.timestamp})
    return History(
        orders=saturating_add(history.orders, 1),
        revenue=finite_add(history.revenue, float(event.properties.get("revenue") or 0.0)),
        last_purchase_at=event.timestamp if last is None or event.timestamp > last else last,
        categories=categories,
        category_purchased_at=purchased_at,
    )


def _latest(a: Mapping[str, dt.datetime], b: Mapping[str, dt.datetime]) -> dict[str, dt.datetime]:
    """Per key, the later of the two times (events arrive in any order)."""
    out = dict(a)
    for name, at in b.items():
        if name not in out or at > out[name]:
            out[name] = at
    return out


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
        category_purchased_at=_latest(a.category_purchased_at, b.category_purchased_at),
    )
