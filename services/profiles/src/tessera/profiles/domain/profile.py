"""A profile as the service reports it: stored facts, live session, features."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.profiles.domain.event_history import EventHistory
from tessera.profiles.domain.features import Features
from tessera.profiles.domain.model import IdentityKey
from tessera.profiles.domain.session import Session


@dataclass(frozen=True)
class Profile:
    """One person: identities, traits, hot session (None when no live visit), features, history."""

    profile_id: str
    identities: tuple[IdentityKey, ...]
    traits: Mapping[str, Any]
    session: Session | None
    features: Features
    created_at: dt.datetime
    updated_at: dt.datetime
    event_history: EventHistory = field(default_factory=EventHistory)
    """Daily event counts and sums, within the bounds at the moment of reading."""
