"""Hot sessions under merges, on the real Redis and in process: no event is lost."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from tessera.hot import HotStore, MemoryHotStore, RedisHotStore
from tessera.profiles.domain.model import EventData
from tessera.profiles.storage.sessions import SessionStore

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
def hot(request: pytest.FixtureRequest, redis_url: str, key_prefix: str) -> Iterator[HotStore]:
    if request.param == "memory":
        yield MemoryHotStore()
    else:
        yield RedisHotStore(redis_url, f"{key_prefix}sessions-{uuid.uuid4().hex[:6]}:")


def view() -> EventData:
    return EventData(uuid.uuid4().hex, "page_view", dt.datetime.now(dt.UTC))


def profile() -> str:
    return uuid.uuid4().hex


def test_session_merge__tracks_to_the_merged_profile_during_and_after__none_lost(
    hot: HotStore,
) -> None:
    # Tracks that resolved the merged profile's id before the merge committed
    # keep applying to it while the merge runs and after it is done.
    sessions = SessionStore(hot)
    survivor, merged = profile(), profile()

    async def scenario() -> int:
        await sessions.apply(survivor, view())
        await sessions.apply(merged, view())

        async def tracks() -> None:
            for _ in range(40):
                await sessions.apply(merged, view())
                await asyncio.sleep(0)

        await asyncio.gather(tracks(), sessions.merge(survivor, [merged]))
        after = await sessions.get(survivor, dt.datetime.now(dt.UTC))
        await hot.close()
        return after.events if after else 0

    assert asyncio.run(scenario()) == 42


def test_session_merge__merges_land_out_of_order__every_session_reaches_the_survivor(
    hot: HotStore,
) -> None:
    # Durable merges T -> S, then S -> U; their hot halves run the other way round.
    sessions = SessionStore(hot)
    s, t, u = profile(), profile(), profile()

    async def scenario() -> tuple[int, int]:
        for person in (s, t, u):
            await sessions.apply(person, view())
        await sessions.merge(u, [s])
        await sessions.merge(s, [t])
        late = view()
        await sessions.apply(t, late)  # a Track that resolved t before both merges
        now = dt.datetime.now(dt.UTC)
        after = await sessions.get(u, now)
        orphan = await sessions.get(s, now)
        await hot.close()
        return (after.events if after else 0), (orphan.events if orphan else 0)

    assert asyncio.run(scenario()) == (4, 0)
