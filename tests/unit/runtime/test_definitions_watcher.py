"""The definition watcher: capped backoff, snapshots replace, changes fold, bad items skip."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from tessera.definitions.watcher import Backoff, Batch, WatchedSet, Watcher

NO_JITTER = Backoff(initial_s=0.1, max_s=0.5, multiplier=2.0, jitter=0.0)


@dataclass(frozen=True)
class Item:
    """A definition as a stream carries it: a key and a body to convert."""

    key: str
    body: str


def convert(item: Item) -> str:
    """What evaluation reads; a body of "bad" cannot be read."""
    if item.body == "bad":
        raise ValueError(f"cannot read {item.key}")
    return item.body.upper()


def snapshot(*items: Item, position: int | None = None) -> Batch[Item]:
    return Batch(True, items, (), position)


def changes(*items: Item, deleted: Sequence[str] = (), position: int | None = None) -> Batch[Item]:
    return Batch(False, items, deleted, position)


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "peer gone"
    )


class Peer:
    """A scripted server: each connection fails, or sends batches and then breaks.

    The last connection stays open and sends whatever the test puts on `live`.
    """

    def __init__(self, *connections: BaseException | list[Batch[Item]]) -> None:
        self.connections = list(connections)
        self.connects = 0
        self.closed = 0
        self.live: asyncio.Queue[Batch[Item]] = asyncio.Queue()

    async def watch(self) -> AsyncIterator[Batch[Item]]:
        self.connects += 1
        try:
            if self.connections:
                connection = self.connections.pop(0)
                if isinstance(connection, BaseException):
                    raise connection
                for batch in connection:
                    yield batch
                if self.connections:
                    raise unavailable()
            while True:
                yield await self.live.get()
        finally:
            self.closed += 1


class Clock:
    """Records each backoff sleep instead of sleeping."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


def watcher(
    peer: Peer,
    clock: Clock,
    backoff: Backoff = NO_JITTER,
    on_change: Callable[[dict[str, str]], None] | None = None,
) -> Watcher[Batch[Item], Item, str]:
    return Watcher(
        "things",
        peer.watch,
        lambda batch: batch,
        WatchedSet("things", convert, lambda item: item.key, on_change),
        backoff,
        sleep=clock.sleep,
    )


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not condition():
            await asyncio.sleep(0)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_watcher__peer_fails_to_answer__reconnects_after_doubling_delays_up_to_cap() -> None:
    async def go() -> None:
        failures: list[BaseException | list[Batch[Item]]] = [unavailable() for _ in range(5)]
        peer = Peer(*failures, [snapshot(Item("a", "x"))])
        clock = Clock()
        following = watcher(peer, clock)

        following.start()
        await asyncio.wait_for(following.wait_loaded(), 2)
        await following.stop()

        assert clock.slept == [0.1, 0.2, 0.4, 0.5, 0.5]
        assert peer.connects == 6
        assert dict(following.items) == {"a": "X"}

    run(go)


def test_watcher__stream_breaks_after_snapshot__backoff_starts_over() -> None:
    async def go() -> None:
        peer = Peer(
            unavailable(),
            unavailable(),
            [snapshot(Item("a", "x"))],  # then breaks
            unavailable(),
            [snapshot(Item("a", "y"))],
        )
        clock = Clock()
        following = watcher(peer, clock)

        following.start()
        await until(lambda: following.items.get("a") == "Y")
        await following.stop()

        assert clock.slept == [0.1, 0.2, 0.1, 0.2]

    run(go)


def test_watcher__other_error_while_reading__reconnects_too() -> None:
    async def go() -> None:
        peer = Peer(RuntimeError("decoder bug"), [snapshot(Item("a", "x"))])
        clock = Clock()
        following = watcher(peer, clock)

        following.start()
        await asyncio.wait_for(following.wait_loaded(), 2)
        await following.stop()

        assert clock.slept == [0.1]
        assert peer.connects == 2

    run(go)


def test_watcher__reconnect__new_snapshot_replaces_what_was_held() -> None:
    async def go() -> None:
        peer = Peer(
            [snapshot(Item("a", "x"), Item("b", "x")), changes(Item("c", "x"))],
            [snapshot(Item("c", "z"), Item("d", "z"))],
        )
        following = watcher(peer, Clock())

        following.start()
        await until(lambda: "d" in following.items)
        await following.stop()

        assert dict(following.items) == {"c": "Z", "d": "Z"}

    run(go)


def test_watcher__before_snapshot__not_loaded_and_empty() -> None:
    async def go() -> None:
        peer = Peer(unavailable())
        following = watcher(peer, Clock())

        following.start()
        await until(lambda: peer.connects == 2)
        loaded = following.loaded
        await following.stop()

        assert loaded is False
        assert dict(following.items) == {}

    run(go)


def test_watcher__peer_down_after_load__last_state_kept_while_reconnecting() -> None:
    async def go() -> None:
        peer = Peer([snapshot(Item("a", "x"))], unavailable(), unavailable())
        following = watcher(peer, Clock())

        following.start()
        await until(lambda: peer.connects == 4)
        await following.stop()

        assert following.loaded
        assert dict(following.items) == {"a": "X"}

    run(go)


def test_watcher__unreadable_definition_on_stream__skipped_and_stream_goes_on() -> None:
    async def go() -> None:
        peer = Peer([snapshot(Item("a", "x"), Item("b", "bad"))])
        clock = Clock()
        following = watcher(peer, clock)

        following.start()
        await asyncio.wait_for(following.wait_loaded(), 2)
        peer.live.put_nowait(changes(Item("c", "y")))
        await until(lambda: "c" in following.items)
        await following.stop()

        assert dict(following.items) == {"a": "X", "c": "Y"}
        assert (peer.connects, clock.slept) == (1, [])

    run(go)


def test_watcher__stopped_or_broken__every_stream_it_opened_is_closed() -> None:
    async def go() -> None:
        peer = Peer([snapshot(Item("a", "x"))], unavailable(), [snapshot(Item("a", "y"))])
        following = watcher(peer, Clock())

        following.start()
        await until(lambda: following.items.get("a") == "Y")
        await following.stop()

        assert (peer.connects, peer.closed) == (3, 3)

    run(go)


def test_watcher__connect_itself_raises__retried_with_backoff() -> None:
    async def go() -> None:
        peer = Peer([snapshot(Item("a", "x"))])
        attempts: list[int] = []

        def connect() -> AsyncIterator[Batch[Item]]:
            attempts.append(1)
            if len(attempts) < 3:
                raise RuntimeError("channel closed")
            return peer.watch()

        clock = Clock()
        following = Watcher(
            "things",
            connect,
            lambda batch: batch,
            WatchedSet("things", convert, lambda item: item.key),
            NO_JITTER,
            sleep=clock.sleep,
        )
        following.start()
        await asyncio.wait_for(following.wait_loaded(), 2)
        await following.stop()

        assert clock.slept == [0.1, 0.2]

    run(go)


def test_watcher__message_unreadable__stream_closed_before_backing_off() -> None:
    async def go() -> None:
        poison = changes(position=666)
        peer = Peer([snapshot(Item("a", "x")), poison, changes(Item("b", "x"))])
        closed_when_sleeping: list[int] = []

        async def sleep(seconds: float) -> None:
            closed_when_sleeping.append(peer.closed)
            await asyncio.sleep(0)

        def read(batch: Batch[Item]) -> Batch[Item]:
            if batch is poison:
                raise ValueError("undecodable")
            return batch

        following = Watcher(
            "things",
            peer.watch,
            read,
            WatchedSet("things", convert, lambda item: item.key),
            NO_JITTER,
            sleep=sleep,
        )
        following.start()
        await until(lambda: peer.connects == 2)
        await following.stop()

        assert closed_when_sleeping == [1]
        assert "b" not in following.items

    run(go)


def test_watched_set__changes__upserts_replace_and_deletes_remove() -> None:
    things = WatchedSet("things", convert, lambda item: item.key)
    things.fold(snapshot(Item("a", "x"), Item("b", "x")))

    things.fold(changes(Item("b", "y"), Item("c", "y"), deleted=["a"]))

    assert dict(things.items) == {"b": "Y", "c": "Y"}


def test_watched_set__fold__readers_keep_the_mapping_they_took() -> None:
    things = WatchedSet("things", convert, lambda item: item.key)
    things.fold(snapshot(Item("a", "x")))
    taken = things.items

    things.fold(changes(Item("b", "y"), deleted=["a"]))

    assert dict(taken) == {"a": "X"}


def test_watched_set__unreadable_definition__skipped_and_the_rest_loaded() -> None:
    things = WatchedSet("things", convert, lambda item: item.key)

    things.fold(snapshot(Item("a", "x"), Item("bad", "bad"), Item("c", "x")))

    assert dict(things.items) == {"a": "X", "c": "X"}


def test_watched_set__update_unreadable__key_left_out_not_kept_stale() -> None:
    things = WatchedSet("things", convert, lambda item: item.key)
    things.fold(snapshot(Item("a", "x"), Item("b", "x")))

    things.fold(changes(Item("a", "bad")))

    assert dict(things.items) == {"b": "X"}


def test_watched_set__on_change__sees_every_item_after_each_batch() -> None:
    seen: list[dict[str, str]] = []
    things = WatchedSet("things", convert, lambda item: item.key, lambda i: seen.append(dict(i)))

    things.fold(snapshot(Item("a", "x")))
    things.fold(changes(Item("b", "y"), deleted=["a"]))

    assert seen == [{"a": "X"}, {"b": "Y"}]


def test_watched_set__on_change_fails__items_still_follow_the_stream() -> None:
    def inconsistent(items: dict[str, str]) -> None:
        raise ValueError("cycle")

    things = WatchedSet("things", convert, lambda item: item.key, inconsistent)

    things.fold(snapshot(Item("a", "x")))

    assert dict(things.items) == {"a": "X"}


def test_watcher__reached__returns_once_a_batch_at_that_position_is_folded() -> None:
    async def go() -> None:
        peer = Peer([snapshot(Item("a", "x"), position=3)])
        following = watcher(peer, Clock())
        following.start()
        await asyncio.wait_for(following.wait_loaded(), 2)
        waiting = asyncio.create_task(following.reached(5))
        await asyncio.sleep(0.01)
        done_before = waiting.done()

        peer.live.put_nowait(changes(Item("b", "y")))  # says no position: not enough
        peer.live.put_nowait(changes(Item("c", "y"), position=4))
        await until(lambda: "c" in following.items)
        done_early = waiting.done()
        peer.live.put_nowait(changes(Item("d", "y"), position=5))
        await asyncio.wait_for(waiting, 2)
        await following.stop()

        assert (done_before, done_early) == (False, False)
        assert set(following.items) == {"a", "b", "c", "d"}

    run(go)


def test_watcher__stopped__reached_returns_instead_of_waiting_forever() -> None:
    async def go() -> None:
        following = watcher(Peer([snapshot(position=1)]), Clock())
        following.start()
        await asyncio.wait_for(following.wait_loaded(), 2)
        waiting = asyncio.create_task(following.reached(99))
        await asyncio.sleep(0)

        await following.stop()

        await asyncio.wait_for(waiting, 2)
        assert waiting.done() and not waiting.cancelled()

    run(go)


@pytest.mark.parametrize("seed", range(20))
def test_backoff__jitter__each_delay_between_share_and_cap(seed: int) -> None:
    backoff = Backoff(initial_s=0.1, max_s=2.0, multiplier=2.0, jitter=0.5)
    delays = backoff.delays(random.Random(seed))

    taken = [next(delays) for _ in range(10)]

    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0]
    for delay, ceiling in zip(taken, ceilings, strict=True):
        assert ceiling * 0.5 <= delay <= ceiling


def test_backoff__jitter__replicas_do_not_come_back_together() -> None:
    backoff = Backoff(jitter=0.5)

    first = {next(backoff.delays(random.Random(seed))) for seed in range(10)}

    assert len(first) == 10
