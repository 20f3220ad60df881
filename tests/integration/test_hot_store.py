"""Both hot stores keep one contract: in-process and on the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tessera.hot import HotStore, MemoryHotStore, RedisHotStore

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
def hot(request: pytest.FixtureRequest, redis_url: str, key_prefix: str) -> Iterator[HotStore]:
    if request.param == "memory":
        yield MemoryHotStore()
    else:
        yield RedisHotStore(redis_url, f"{key_prefix}hot-{uuid.uuid4().hex[:6]}:")


def run(hot: HotStore, coroutine: object) -> object:
    async def go() -> object:
        try:
            return await coroutine  # type: ignore[misc]
        finally:
            await hot.close()

    return asyncio.run(go())


def test_set_get_delete__value_round_trips_then_is_gone(hot: HotStore) -> None:
    async def scenario() -> tuple[object, ...]:
        await hot.set("a", b"1")
        first = await hot.get("a")
        deleted = await hot.delete("a", "never-set")
        return first, deleted, await hot.get("a")

    assert run(hot, scenario()) == (b"1", 1, None)


def test_set__ttl__expires(hot: HotStore) -> None:
    async def scenario() -> tuple[object, ...]:
        await hot.set("short", b"x", ttl_s=0.05)
        before = await hot.get("short")
        await asyncio.sleep(0.2)
        return before, await hot.get("short")

    assert run(hot, scenario()) == (b"x", None)


def test_update__concurrent_increments__none_lost(hot: HotStore) -> None:
    def add_one(current: bytes | None) -> bytes:
        return str(int(current or b"0") + 1).encode()

    async def scenario() -> object:
        await asyncio.gather(*(hot.update("n", add_one) for _ in range(50)))
        return await hot.get("n")

    assert run(hot, scenario()) == b"50"


def test_update__returns_none__deletes(hot: HotStore) -> None:
    async def scenario() -> object:
        await hot.set("gone", b"1")
        await hot.update("gone", lambda current: None)
        return await hot.get("gone")

    assert run(hot, scenario()) is None


def test_incr__adds_and_returns_total(hot: HotStore) -> None:
    async def scenario() -> tuple[object, ...]:
        return await hot.incr("c", 2, ttl_s=60), await hot.incr("c", 3, ttl_s=60)

    assert run(hot, scenario()) == (2, 5)


def test_update_many__moves_racing_single_key_updates__none_lost(hot: HotStore) -> None:
    # Move the count under "from" into "to" while others keep adding to "from".
    def add_one(current: bytes | None) -> bytes:
        return str(int(current or b"0") + 1).encode()

    def move(values: list[bytes | None]) -> list[bytes | None]:
        into, moved = values
        return [str(int(into or b"0") + int(moved or b"0")).encode(), None]

    async def scenario() -> object:
        async def adds() -> None:
            for _ in range(30):
                await hot.update("from", add_one)
                await asyncio.sleep(0)

        async def moves() -> None:
            for _ in range(10):
                await hot.update_many(["to", "from"], move)
                await asyncio.sleep(0)

        await asyncio.gather(adds(), moves())
        await hot.update_many(["to", "from"], move)
        return await hot.get("to"), await hot.get("from")

    assert run(hot, scenario()) == (b"30", None)
