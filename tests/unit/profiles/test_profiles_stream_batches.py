"""How TrackStream cuts a stream into batches (`application.stream_batches`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tessera.profiles.application import BATCH_IDLE_S, TRACK_BATCH, stream_batches


async def _collect(items: AsyncIterator[int], size: int = TRACK_BATCH) -> list[list[int]]:
    return [batch async for batch in stream_batches(items, size)]


def test_batches__stream_sent_at_once__one_batch_in_order() -> None:
    async def sent() -> AsyncIterator[int]:
        for item in range(120):
            yield item

    assert asyncio.run(_collect(sent())) == [list(range(120))]


def test_batches__longer_than_the_size__full_batches_then_the_rest() -> None:
    async def sent() -> AsyncIterator[int]:
        for item in range(7):
            yield item

    assert asyncio.run(_collect(sent(), size=3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_batches__stream_pauses__what_came_before_is_written_without_waiting() -> None:
    written_before_resume: list[list[int]] = []
    resumed = False

    async def sent() -> AsyncIterator[int]:
        nonlocal resumed
        yield 1
        yield 2
        await asyncio.sleep(BATCH_IDLE_S * 20)  # the client thinks a while
        resumed = True
        yield 3

    async def run() -> list[list[int]]:
        batches = []
        async for batch in stream_batches(sent()):
            if not resumed:
                written_before_resume.append(batch)
            batches.append(batch)
        return batches

    assert asyncio.run(run()) == [[1, 2], [3]]
    assert written_before_resume == [[1, 2]]


def test_batches__empty_stream__no_batch() -> None:
    async def sent() -> AsyncIterator[int]:
        return
        yield

    assert asyncio.run(_collect(sent())) == []


def test_batches__stream_fails_midway__earlier_batches_then_its_error() -> None:
    handed: list[list[int]] = []

    async def sent() -> AsyncIterator[int]:
        yield 1
        yield 2
        await asyncio.sleep(BATCH_IDLE_S * 20)  # a pause: [1, 2] is written
        yield 3
        raise ConnectionResetError("the client went away")

    async def run() -> None:
        async for batch in stream_batches(sent()):
            handed.append(batch)

    try:
        asyncio.run(run())
    except ConnectionResetError as error:
        assert str(error) == "the client went away"
    else:
        raise AssertionError("the stream's error was not raised")
    assert handed == [[1, 2]]


def test_batches__consumer_slower_than_the_stream__every_item_once_in_order() -> None:
    async def sent() -> AsyncIterator[int]:
        for item in range(23):
            yield item

    async def run() -> list[list[int]]:
        batches = []
        async for batch in stream_batches(sent(), size=4):
            await asyncio.sleep(0.001)  # writing takes a while; the stream reads ahead
            batches.append(batch)
        return batches

    batches = asyncio.run(run())

    assert [item for batch in batches for item in batch] == list(range(23))
    assert all(len(batch) <= 4 for batch in batches)


def test_batches__weighed_items__a_list_holds_at_most_size_in_weight() -> None:
    async def sent() -> AsyncIterator[int]:
        for item in (2, 2, 1, 3, 5, 1):  # each item weighs its value
            yield item

    async def collect() -> list[list[int]]:
        return [batch async for batch in stream_batches(sent(), 4, weight=lambda item: item)]

    # 5 alone is over the size: a list of its own.
    assert asyncio.run(collect()) == [[2, 2], [1, 3], [5], [1]]
