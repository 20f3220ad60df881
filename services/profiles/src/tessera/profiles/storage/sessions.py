"""Hot sessions in the hot store: one JSON value per profile, changed atomically.

The rules of a session (what an event does to it, how two merge) are the
domain's (`tessera.profiles.domain.session`); this module only keeps them:
the JSON form, the key layout, the expiry, and read-modify-write through
`HotStore.update`, which is atomic on Redis and in-process alike.

The JSON form is the one sessions have always been stored in (times as ISO
8601 strings, the cart as a list of objects), so sessions written before the
domain had types, and by older replicas during a rollout, read the same.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable
from typing import Any

from tessera.hot import HotStore
from tessera.profiles.domain import session as sessions
from tessera.profiles.domain.model import EventData, finite_add, saturating_add
from tessera.profiles.domain.session import CartItem, Session

SESSION_TTL_S = 2 * sessions.SESSION_TIMEOUT.total_seconds()
"""Kept a while past the timeout; `current` decides whether it is still live."""


def _key(profile_id: str) -> str:
    return f"session:{profile_id}"


def session_to_json(session: Session) -> dict[str, Any]:
    """The stored JSON object of a session."""
    return {
        "started_at": session.started_at.isoformat(),
        "last_seen_at": session.last_seen_at.isoformat(),
        "channel": session.channel,
        "page_views": session.page_views,
        "product_views": dict(session.product_views),
        "category_views": dict(session.category_views),
        "cart": [
            {
                "product_id": item.product_id,
                "category": item.category,
                "quantity": item.quantity,
                "price": item.price,
                "added_at": item.added_at.isoformat(),
            }
            for item in session.cart
        ],
        "favorites": list(session.favorites),
        "searches": list(session.searches),
        "time_spent_ms": session.time_spent_ms,
        "events": session.events,
        "event_ids": list(session.event_ids),
        "cart_removed": {p: t.isoformat() for p, t in session.cart_removed.items()},
        "cart_cleared_at": (
            session.cart_cleared_at.isoformat() if session.cart_cleared_at else None
        ),
    }


def session_from_json(raw: dict[str, Any]) -> Session:
    """A session from its stored JSON object.

    `event_ids`, `cart_removed` and `cart_cleared_at` came later than the
    rest; sessions stored without them read as having none. Counters are
    read saturated: sessions stored before counters saturated may hold more
    than an int64 (see docs/profile-writes.md).
    """
    stamp = dt.datetime.fromisoformat
    count = functools.partial(saturating_add, 0)
    cleared = raw.get("cart_cleared_at")
    return Session(
        started_at=stamp(raw["started_at"]),
        last_seen_at=stamp(raw["last_seen_at"]),
        channel=raw["channel"],
        page_views=count(raw["page_views"]),
        product_views={k: count(v) for k, v in raw["product_views"].items()},
        category_views={k: count(v) for k, v in raw["category_views"].items()},
        cart=tuple(
            CartItem(
                product_id=item["product_id"],
                category=item["category"],
                quantity=count(item["quantity"]),
                price=finite_add(0.0, float(item["price"])),
                added_at=stamp(item["added_at"]),
            )
            for item in raw["cart"]
        ),
        favorites=tuple(raw["favorites"]),
        searches=tuple(raw["searches"]),
        time_spent_ms=count(raw["time_spent_ms"]),
        events=count(raw["events"]),
        event_ids=tuple(raw.get("event_ids", ())),
        cart_removed={p: stamp(t) for p, t in raw.get("cart_removed", {}).items()},
        cart_cleared_at=stamp(cleared) if cleared else None,
    )


def _load(raw: bytes | None) -> Session | None:
    return session_from_json(json.loads(raw)) if raw else None


def _dump(session: Session | None) -> bytes | None:
    return json.dumps(session_to_json(session)).encode() if session else None


class SessionStore:
    """The live session of each profile."""

    def __init__(self, hot: HotStore) -> None:
        self.hot = hot

    async def get(self, profile_id: str, now: dt.datetime) -> Session | None:
        """The profile's session if it is still live at `now`."""
        return sessions.current(_load(await self.hot.get(_key(profile_id))), now)

    async def apply(self, profile_id: str, event: EventData) -> None:
        """Fold one event into the profile's session (idempotent by event id)."""

        def change(current: bytes | None) -> bytes | None:
            state = _load(current)
            after = sessions.apply_event(state, event)
            if after is state:
                return current
            return _dump(after)

        await self.hot.update(_key(profile_id), change, SESSION_TTL_S)

    async def merge(self, survivor: str, merged: Iterable[str]) -> None:
        """Fold the sessions of merged profiles into the survivor's, and drop theirs."""
        for merged_id in merged:
            raw = await self.hot.get(_key(merged_id))
            if raw is None:
                continue
            other = _load(raw)

            def fold(current: bytes | None, other: Session | None = other) -> bytes | None:
                return _dump(sessions.merge_sessions(_load(current), other))

            await self.hot.update(_key(survivor), fold, SESSION_TTL_S)
            await self.hot.delete(_key(merged_id))

    async def delete(self, profile_id: str) -> None:
        """Forget the profile's session."""
        await self.hot.delete(_key(profile_id))
