"""Hot sessions in the hot store: one JSON value per profile, changed atomically.

The rules of a session (what an event does to it, how two merge) are the
domain's (`tessera.profiles.domain.session`); this module only keeps them:
the JSON form, the key layout, the expiry, and read-modify-write through
`HotStore.update` and `HotStore.update_many`, which are atomic on Redis and
in-process alike.

A merge folds the merged profile's session into the survivor's and leaves a
forwarding mark under the merged key (`{"merged_into": id}`), both in one
atomic step. A Track that resolved the merged id before the merge committed
and applies afterwards follows the mark instead of starting a session nobody
reads, and a merge whose survivor has itself been merged away meanwhile
(hot halves of two merges running out of order) follows it too.

The JSON form is the one sessions have always been stored in (times as ISO
8601 strings, the cart as a list of objects), so sessions written before the
domain had types, and by older replicas during a rollout, read the same.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tessera import jsoncodec
from tessera.hot import HotStore
from tessera.profiles.domain import session as sessions
from tessera.profiles.domain.model import EventData, finite_add, saturating_add
from tessera.profiles.domain.session import CartItem, Session

SESSION_TTL_S = 2 * sessions.SESSION_TIMEOUT.total_seconds()
"""Kept a while past the timeout; `current` decides whether it is still live."""
MAX_FORWARDS = 16
"""Forwarding marks followed at most: a chain of merges this long within a TTL."""


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


def _forwarded_to(raw: bytes | None) -> str | None:
    """The survivor a merged profile's key forwards to, if it holds a forwarding mark."""
    if not raw or not raw.startswith(b'{"merged_into"'):
        return None
    target = jsoncodec.loads(raw)["merged_into"]
    return str(target)


def _mark(survivor: str) -> bytes:
    return jsoncodec.dump_bytes({"merged_into": survivor})


def session_bytes(session: Session) -> bytes:
    """The stored bytes of a session: the JSON object of `session_to_json`.

    Written straight from the dataclasses (orjson names a dataclass's
    fields as `session_to_json` does, in the same order, and writes times
    in the same ISO 8601 form), which costs a fraction of building the
    object first; anything orjson cannot take goes the long way.
    """
    try:
        return jsoncodec.dump_bytes(session)
    except TypeError:
        return jsoncodec.dump_bytes(session_to_json(session))


def _dump(session: Session | None) -> bytes | None:
    return session_bytes(session) if session else None


DECODED_SESSIONS = 2048
"""Sessions a store keeps decoded, beside their stored bytes (see `SessionStore`): about
15 KB each for a session remembering its 100 latest event ids, so some 30 MB at most."""


class SessionStore:
    """The live session of each profile.

    Decoding a stored session costs more than folding an event into it, and
    the same bytes are decoded again at each event and each read of a busy
    profile. So the store keeps the last DECODED_SESSIONS sessions it
    decoded or wrote, each with the exact bytes it came from, and reuses one
    only when the stored bytes are those same bytes: a value changed by
    anyone else (another replica on Redis, a merge) differs and is decoded
    afresh. Sessions are immutable values, so sharing them is safe.
    """

    def __init__(self, hot: HotStore, decoded: int = DECODED_SESSIONS) -> None:
        self.hot = hot
        self._decoded: dict[str, tuple[bytes, Session]] = {}
        self._capacity = decoded

    def _remember(self, profile_id: str, raw: bytes, session: Session) -> None:
        decoded = self._decoded
        decoded.pop(profile_id, None)
        if len(decoded) >= self._capacity:
            del decoded[next(iter(decoded))]  # the least recently stored
        decoded[profile_id] = (raw, session)

    def _load(self, profile_id: str, raw: bytes | None) -> Session | None:
        """The session stored as `raw` under `profile_id` (None for none or a mark)."""
        if not raw:
            return None
        known = self._decoded.get(profile_id)
        if known is not None and (known[0] is raw or known[0] == raw):
            return known[1]
        if _forwarded_to(raw) is not None:
            return None
        session = session_from_json(jsoncodec.loads(raw))
        if self._capacity:
            self._remember(profile_id, raw, session)
        return session

    def _dump(self, profile_id: str, session: Session | None) -> bytes | None:
        raw = _dump(session)
        if raw is not None and session is not None and self._capacity:
            self._remember(profile_id, raw, session)
        return raw

    async def get(self, profile_id: str, now: dt.datetime) -> Session | None:
        """The profile's session if it is still live at `now`."""
        return sessions.current(self._load(profile_id, await self.hot.get(_key(profile_id))), now)

    async def apply(self, profile_id: str, event: EventData) -> None:
        """Fold one event into the profile's session (idempotent by event id).

        Follows forwarding marks: the event lands in the session of the
        profile this one was merged into.
        """
        await self.apply_many({profile_id: [event]})

    async def apply_many(self, events: Mapping[str, Sequence[EventData]]) -> None:
        """Fold each profile's events, in order, into its session: one atomic step
        over all the sessions (one round trip of reads, one of writes on Redis),
        each session read and written once whatever its number of events.

        Idempotent by event id. A key holding a forwarding mark is left as it
        is and its events follow the mark, as `apply` does.
        """
        targets = {profile_id: list(taken) for profile_id, taken in events.items()}
        for _ in range(MAX_FORWARDS):
            if not targets:
                return
            ids = list(targets)
            forward: dict[str, str] = {}

            def change(
                current: list[bytes | None],
                ids: list[str] = ids,
                targets: dict[str, list[EventData]] = targets,
                forward: dict[str, str] = forward,
            ) -> list[bytes | None]:
                forward.clear()  # Redis may call this again after a conflict
                after: list[bytes | None] = []
                for profile_id, raw in zip(ids, current, strict=True):
                    moved = _forwarded_to(raw)
                    if moved is not None:
                        forward[profile_id] = moved
                        after.append(raw)
                        continue
                    state = before = self._load(profile_id, raw)
                    for event in targets[profile_id]:
                        state = sessions.apply_event(state, event)
                    after.append(raw if state is before else self._dump(profile_id, state))
                return after

            await self.hot.update_many([_key(i) for i in ids], change, SESSION_TTL_S)
            moved_on: dict[str, list[EventData]] = {}
            for profile_id, survivor in forward.items():
                moved_on.setdefault(survivor, []).extend(targets[profile_id])
            targets = moved_on

    async def merge(self, survivor: str, merged: Iterable[str]) -> None:
        """Fold the sessions of merged profiles into the survivor's, leaving forwarding marks.

        Each fold is one atomic step over both keys, so no Track to either
        profile lands between reading and writing them.
        """
        for merged_id in merged:
            target = survivor
            for _ in range(MAX_FORWARDS):
                if target == merged_id:
                    break
                forward: list[str] = []

                def fold(
                    values: list[bytes | None],
                    into: str = target,
                    merged_id: str = merged_id,
                    forward: list[str] = forward,
                ) -> list[bytes | None]:
                    forward.clear()
                    mine, theirs = values
                    moved = _forwarded_to(mine)
                    if moved is not None:
                        forward.append(moved)
                        return values
                    if _forwarded_to(theirs) is not None:
                        return values  # folded already (a repeated merge)
                    both = sessions.merge_sessions(
                        self._load(into, mine), self._load(merged_id, theirs)
                    )
                    return [self._dump(into, both), _mark(into)]

                await self.hot.update_many([_key(target), _key(merged_id)], fold, SESSION_TTL_S)
                if not forward:
                    break
                target = forward[0]

    async def delete(self, profile_id: str, aliases: Iterable[str] = ()) -> None:
        """Forget the profile's session, and the forwarding marks its merged ids left."""
        await self.hot.delete(_key(profile_id), *(_key(alias) for alias in aliases))
