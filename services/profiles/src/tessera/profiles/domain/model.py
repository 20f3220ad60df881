"""The profile service's domain values: identities, events, validation."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from tessera.errors import InvalidArgument, require

IDENTITY_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_VALUE_LENGTH = 512
MAX_EVENT_ID_LENGTH = 128
# Events may arrive late (offline apps, batch imports) but not from the future.
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
INT64_MAX = 2**63 - 1
"""Counters derived from events saturate here: the largest int64 of the contract."""
DOUBLE_MAX = sys.float_info.max
"""Sums of amounts saturate here, so they stay finite doubles."""


def saturating_add(a: int, b: int) -> int:
    """`a + b` for counters: never below 0, never past INT64_MAX."""
    return max(0, min(a + b, INT64_MAX))


def finite_add(a: float, b: float) -> float:
    """`a + b` for amounts: a finite double between -DOUBLE_MAX and DOUBLE_MAX."""
    total = a + b
    if math.isnan(total):
        return 0.0
    return max(-DOUBLE_MAX, min(total, DOUBLE_MAX))


@dataclass(frozen=True)
class IdentityKey:
    """An identity as stored: e-mail values are already hashed."""

    type: str
    value: str


NORMALIZED_KEPT = 4096
"""Valid identities kept with their stored form (`normalize_identity`)."""
_normalized: dict[tuple[str, str], IdentityKey] = {}


def normalize_identity(id_type: str, value: str, path: str) -> IdentityKey:
    """Validate an identity and return its stored form.

    E-mail addresses are trimmed and lowercased, then stored as the hex
    SHA-256 of that form, so the same address always resolves to the same
    profile and the plain address is never written down. The stored form
    of a valid identity is kept, so the same visitor sent again (every
    Decide) is not checked and hashed again; an invalid one raises each time.
    """
    known = _normalized.get((id_type, value))
    if known is not None:
        return known
    key = _normalize(id_type, value, path)
    if len(_normalized) >= NORMALIZED_KEPT:
        del _normalized[next(iter(_normalized))]
    _normalized[id_type, value] = key
    return key


def _normalize(id_type: str, value: str, path: str) -> IdentityKey:
    require(
        bool(IDENTITY_TYPE.match(id_type)),
        f"{path}.type",
        "must be lowercase letters, digits and '_', starting with a letter (at most 32)",
    )
    value = value.strip()
    require(bool(value), f"{path}.value", "must not be empty")
    require(
        len(value) <= MAX_VALUE_LENGTH,
        f"{path}.value",
        f"must be at most {MAX_VALUE_LENGTH} characters",
    )
    if id_type == "email":
        require("@" in value, f"{path}.value", "is not an e-mail address")
        value = "sha256:" + hashlib.sha256(value.lower().encode()).hexdigest()
    return IdentityKey(id_type, value)


def normalize_identities(pairs: list[tuple[str, str]], path: str) -> list[IdentityKey]:
    """Validate a list of identities; duplicates collapse to one."""
    require(bool(pairs), path, "at least one identity is required")
    keys: list[IdentityKey] = []
    for index, (id_type, value) in enumerate(pairs):
        key = normalize_identity(id_type, value, f"{path}[{index}]")
        if key not in keys:
            keys.append(key)
    return keys


@dataclass
class EventData:
    """One event, validated, in the domain's terms."""

    event_id: str
    type: str
    timestamp: dt.datetime
    channel: int = 0
    profile_id: str = ""
    identities: list[IdentityKey] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)


def validate_event(
    *,
    event_id: str,
    event_type: str,
    profile_id: str,
    identities: list[tuple[str, str]],
    timestamp: dt.datetime | None,
    channel: int,
    properties: dict[str, Any],
    now: dt.datetime,
) -> EventData:
    """Check an incoming event and return it ready to store."""
    require(bool(event_id), "event.event_id", "is required: it is the idempotency key")
    require(
        len(event_id) <= MAX_EVENT_ID_LENGTH,
        "event.event_id",
        f"must be at most {MAX_EVENT_ID_LENGTH} characters",
    )
    require(
        bool(EVENT_TYPE.match(event_type)),
        "event.type",
        "must be lowercase letters, digits and '_', starting with a letter (at most 64)",
    )
    if not profile_id and not identities:
        raise InvalidArgument(
            "either profile_id or identities must be set", field="event.profile_id"
        )
    keys = normalize_identities(identities, "event.identities") if identities else []
    when = timestamp or now
    require(when <= now + MAX_CLOCK_SKEW, "event.timestamp", "is in the future")
    for name in ("price", "revenue", "duration_ms", "quantity"):
        if name in properties and properties[name] is not None:
            value = properties[name]
            require(
                isinstance(value, int | float) and not isinstance(value, bool),
                f"event.properties.{name}",
                "must be a number",
            )
            require(math.isfinite(value), f"event.properties.{name}", "must be finite")
            require(value >= 0, f"event.properties.{name}", "must not be negative")
    quantity = properties.get("quantity")
    if quantity is not None:
        require(
            quantity >= 1 and float(quantity).is_integer(),
            "event.properties.quantity",
            "must be a whole number of at least 1",
        )
    return EventData(event_id, event_type, when, channel, profile_id, keys, properties)
