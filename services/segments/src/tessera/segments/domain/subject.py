"""What a rule is evaluated against: one profile, its session and request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Subject:
    """Everything a rule can read about one visitor at one moment.

    Plain Python data (dicts, lists, numbers, strings), so the servicer and
    the decision service can build it from protobuf without this package
    knowing about protobuf. The dataclass is frozen; the dicts inside are
    not copied, so callers must not change them during an evaluation.

    - `traits`: the profile's traits, nested dicts allowed (`trait.address.city`).
    - `identity_types`: types of identities the profile has ("email", "crm_id").
    - `channel`: lowercase short name ("web", "app", "email", "sms", "push",
      "call_center", "store"); "" when unknown, which rules see as null.
    - `context`: the request context (device, location, page...), nested dicts.
    - `session`: the hot session: `page_views`, `time_spent_ms`, `events` (ints),
      `product_views` and `category_views` (dict[str, int]), `cart` (list of
      dicts with `product_id`, `category`, `quantity`, `price`), `favorites`
      and `searches` (list[str]). Missing keys read as 0 / empty.
    - `features`: `lifetime_value`, `conversion_probability`, `rfm`
      (`recency_days`, `frequency`, `monetary`) and `interests`
      (dict[str, float]). Missing features read as null, interests as 0.
    - `event_counts`: `(event_type, window_seconds) -> count`, and
      `event_sums`: `(event_type, property, window_seconds) -> sum`, for the
      windows the rules ask for (see `event_windows`); missing reads as 0.
    """

    profile_id: str = ""
    traits: Mapping[str, Any] = field(default_factory=dict)
    identity_types: frozenset[str] = frozenset()
    channel: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    session: Mapping[str, Any] = field(default_factory=dict)
    features: Mapping[str, Any] = field(default_factory=dict)
    event_counts: Mapping[tuple[str, int], int] = field(default_factory=dict)
    event_sums: Mapping[tuple[str, str, int], float] = field(default_factory=dict)
