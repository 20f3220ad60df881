"""What a rule is evaluated against: one profile, its session and request."""

from __future__ import annotations

import datetime as dt
import sys
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

_EPOCH = dt.date(1970, 1, 1)
_DOUBLE_MAX = sys.float_info.max


def utc_day(moment: dt.datetime) -> int:
    """The UTC day number (days since 1970-01-01) of a moment, as event history counts days."""
    return (moment.astimezone(dt.UTC).date() - _EPOCH).days


@dataclass(frozen=True, slots=True)
class CartLine:
    """One product line of the session's cart."""

    product_id: str
    category: str
    quantity: int
    price: float


@dataclass(frozen=True, slots=True)
class SessionView:
    """The hot session as rules read it; the default is a visitor doing nothing.

    Only what the rule vocabulary reaches (`session.<field>`,
    `session.category_views(...)`, ...), taken from the profile service's
    Session message.
    """

    page_views: int = 0
    time_spent_ms: int = 0
    events: int = 0
    product_views: Mapping[str, int] = field(default_factory=dict)
    category_views: Mapping[str, int] = field(default_factory=dict)
    cart: tuple[CartLine, ...] = ()
    favorites: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RfmView:
    """Recency in days (None when never bought), frequency and monetary value."""

    recency_days: float | None
    frequency: int
    monetary: float


@dataclass(frozen=True, slots=True)
class FeaturesView:
    """Computed features as rules read them (`feature.<name>`, `feature.interest(...)`)."""

    lifetime_value: float
    conversion_probability: float
    rfm: RfmView
    interests: Mapping[str, float] = field(default_factory=dict)
    """Score per category; a category without one reads as 0."""


@dataclass(frozen=True, slots=True)
class DailySeries:
    """One series of the event history: UTC day numbers ascending, counts and sums aligned.

    Built from the profile service's EventSeries message; `sums` maps a
    property (revenue, price, quantity, duration_ms) to one sum per day.
    """

    days: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    sums: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def count_since(self, first_day: int) -> int:
        """Events on `first_day` and every day after it."""
        return sum(self.counts[bisect_left(self.days, first_day) :])

    def sum_since(self, prop: str, first_day: int) -> float:
        """The sum of `prop` on `first_day` and every day after it; a finite double."""
        values = self.sums.get(prop)
        if not values:
            return 0.0
        total = sum(values[bisect_left(self.days, first_day) :])
        return min(max(total, -_DOUBLE_MAX), _DOUBLE_MAX)


class SeriesReader(Protocol):
    """What windows read of one series: `DailySeries`, or a series read in place."""

    def count_since(self, first_day: int) -> int:
        """Events on `first_day` and every day after it."""
        ...

    def sum_since(self, prop: str, first_day: int) -> float:
        """The sum of `prop` on `first_day` and every day after it; a finite double."""
        ...


@dataclass(frozen=True, slots=True)
class EventHistoryView:
    """The profile's daily event history as `count(...)` and `sum(...)` read it.

    - `today`: the UTC day number the windows end on; a window of N days is
      `today` and the N - 1 days before it.
    - `series`: by (event type, filter property, filter value), the last two
      "" for every event of the type; a series that is absent reads 0.
    """

    today: int = 0
    series: Mapping[tuple[str, str, str], SeriesReader] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Subject:
    """Everything a rule can read about one visitor at one moment.

    Plain Python values, so the servicer and the decision service can build
    it from protobuf (`tessera.segments.transport.convert.subject_from_profile`,
    the one place that does) without this package knowing about protobuf.
    Frozen; the mappings inside are not copied, so callers must not change
    them during an evaluation.

    - `traits`: the profile's traits, nested dicts allowed (`trait.address.city`).
    - `identity_types`: types of identities the profile has ("email", "crm_id").
    - `channel`: lowercase short name ("web", "app", "email", "sms", "push",
      "call_center", "store"); "" when unknown, which rules see as null.
    - `context`: the request context (device, location, page...), nested dicts.
    - `session`: the hot session; counts of an empty session are 0.
    - `features`: computed features; None when unknown, which rules see as
      null (interests as 0).
    - `history`: daily event counts and sums, what `count(...)` and
      `sum(...)` read; the profile service fills them from every event it
      accepts (its domain.event_history).

    A subject is one moment: build a new one when the profile changes, as
    `derived` keeps what rules computed from this one.
    """

    profile_id: str = ""
    traits: Mapping[str, Any] = field(default_factory=dict)
    identity_types: frozenset[str] = frozenset()
    channel: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    session: SessionView = field(default_factory=SessionView)
    features: FeaturesView | None = None
    history: EventHistoryView = field(default_factory=EventHistoryView)
    derived: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)
    """Values compiled rules derived from this subject (a window's count), kept so
    that segments reading the same window compute it once per subject."""
