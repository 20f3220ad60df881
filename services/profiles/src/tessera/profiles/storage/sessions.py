"""Hot sessions in the hot store: one JSON value per profile, changed atomically.

The rules of a session (what an event does to it, how two merge) are the
domain's (`tessera.profiles.domain.session`); this module only keeps them:
the key layout, the expiry, and read-modify-write through `HotStore.update`,
which is atomic on Redis and in-process alike.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from tessera.hot import HotStore
from tessera.profiles.domain import session as sessions
from tessera.profiles.domain.model import EventData

SESSION_TTL_S = 2 * sessions.SESSION_TIMEOUT.total_seconds()
"""Kept a while past the timeout; `current` decides whether it is still live."""


def _key(profile_id: str) -> str:
    return f"session:{profile_id}"


class SessionStore:
    """The live session of each profile."""

    def __init__(self, hot: HotStore) -> None:
        self.hot = hot

    async def get(self, profile_id: str, now: dt.datetime) -> dict[str, Any] | None:
        """The profile's session if it is still live at `now`."""
        raw = await self.hot.get(_key(profile_id))
        return sessions.current(json.loads(raw), now) if raw else None

    async def apply(self, profile_id: str, event: EventData) -> None:
        """Fold one event into the profile's session (idempotent by event id)."""

        def change(current: bytes | None) -> bytes | None:
            state = json.loads(current) if current else None
            after = sessions.apply_event(state, event)
            if after is state:
                return current
            return json.dumps(after).encode() if after else None

        await self.hot.update(_key(profile_id), change, SESSION_TTL_S)

    async def merge(self, survivor: str, merged: Iterable[str]) -> None:
        """Fold the sessions of merged profiles into the survivor's, and drop theirs."""
        for merged_id in merged:
            raw = await self.hot.get(_key(merged_id))
            if raw is None:
                continue
            other = json.loads(raw)

            def fold(current: bytes | None, other: dict[str, Any] = other) -> bytes | None:
                mine = json.loads(current) if current else None
                combined = sessions.merge_sessions(mine, other)
                return json.dumps(combined).encode() if combined else None

            await self.hot.update(_key(survivor), fold, SESSION_TTL_S)
            await self.hot.delete(_key(merged_id))

    async def delete(self, profile_id: str) -> None:
        """Forget the profile's session."""
        await self.hot.delete(_key(profile_id))
