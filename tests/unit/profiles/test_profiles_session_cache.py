"""The session store's decoded sessions (`SessionStore`): reused only for the very bytes stored."""

from __future__ import annotations

import asyncio
import datetime as dt

from tessera.hot import MemoryHotStore
from tessera.profiles.domain.model import EventData
from tessera.profiles.storage.sessions import SessionStore

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def view(event_id: str, minute: int = 0) -> EventData:
    return EventData(
        event_id,
        "product_view",
        NOW + dt.timedelta(minutes=minute),
        1,
        properties={"category": "juicers", "product_id": "j-1"},
    )


def test_session_store__another_writer_changed_the_session__decoded_afresh() -> None:
    async def go() -> tuple[int, int]:
        hot = MemoryHotStore()  # shared, as two replicas share Redis
        mine, theirs = SessionStore(hot), SessionStore(hot)
        await mine.apply("p1", view("e1"))
        await theirs.apply("p1", view("e2", 1))
        await mine.apply("p1", view("e3", 2))
        seen_by_mine = await mine.get("p1", NOW + dt.timedelta(minutes=3))
        seen_by_theirs = await theirs.get("p1", NOW + dt.timedelta(minutes=3))
        assert seen_by_mine is not None and seen_by_theirs is not None
        return seen_by_mine.events, seen_by_theirs.events

    assert asyncio.run(go()) == (3, 3)


def test_session_store__merge_then_track__counts_from_the_merged_session() -> None:
    async def go() -> tuple[int, dict[str, int]]:
        sessions = SessionStore(MemoryHotStore())
        await sessions.apply("survivor", view("e1"))
        await sessions.apply("merged", view("e2", 1))
        await sessions.merge("survivor", ["merged"])
        await sessions.apply("survivor", view("e3", 2))
        await sessions.apply("merged", view("e4", 3))  # follows the forwarding mark
        session = await sessions.get("survivor", NOW + dt.timedelta(minutes=4))
        assert session is not None
        return session.events, dict(session.category_views)

    assert asyncio.run(go()) == (4, {"juicers": 4})


def test_session_store__more_profiles_than_kept_decoded__every_session_still_right() -> None:
    async def go() -> list[int]:
        sessions = SessionStore(MemoryHotStore(), decoded=2)
        for round_ in range(3):
            for profile in ("a", "b", "c"):
                await sessions.apply(profile, view(f"{profile}-{round_}", round_))
        found = [await sessions.get(p, NOW + dt.timedelta(minutes=5)) for p in ("a", "b", "c")]
        return [s.events if s else 0 for s in found]

    assert asyncio.run(go()) == [3, 3, 3]
