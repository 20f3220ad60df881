"""What a rule is evaluated against: one profile, its session and request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
    - `event_counts`: `(event_type, window_seconds) -> count`, and
      `event_sums`: `(event_type, property, window_seconds) -> sum`, for the
      windows the rules ask for (see `event_windows`); missing reads as 0.
      Nothing fills them in production yet: the profile service does not
      compute event windows, so `count(...)` and `sum(...)` read 0 there.
    """

    profile_id: str = ""
    traits: Mapping[str, Any] = field(default_factory=dict)
    identity_types: frozenset[str] = frozenset()
    channel: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    session: SessionView = field(default_factory=SessionView)
    features: FeaturesView | None = None
    event_counts: Mapping[tuple[str, int], int] = field(default_factory=dict)
    event_sums: Mapping[tuple[str, str, int], float] = field(default_factory=dict)
