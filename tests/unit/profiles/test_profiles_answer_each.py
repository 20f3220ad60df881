"""answer_each: the concurrency under IdentifyStream, over plain values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tessera.errors import Unavailable
from tessera.profiles.application import answer_each


async def items(values: list[int], then_wait: asyncio.Event | None = None) -> AsyncIterator[int]:
    for value in values:
        yield value
    if then_wait is not None:
        await then_wait.wait()  # the client keeps its stream open


def test_answer_each__slow_first_item__later_ones_answered_first() -> None:
    async def scenario() -> list[int]:
        third_done = asyncio.Event()

        async def answer(value: int) -> int:
            if value == 1:
                await third_done.wait()
            if value == 3:
                third_done.set()
            return value * 10

        return [a async for a in answer_each(items([1, 2, 3]), answer, asyncio.Event())]

    assert asyncio.run(scenario()) == [20, 30, 10]


def test_answer_each__limit_reached__no_more_than_limit_at_once() -> None:
    async def scenario() -> tuple[int, list[int]]:
        running, most = 0, 0

        async def answer(value: int) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.001)
            running -= 1
            return value

        answers = [a async for a in answer_each(items(list(range(10))), answer, asyncio.Event(), 3)]
        return most, sorted(answers)

    assert asyncio.run(scenario()) == (3, list(range(10)))


def test_answer_each__stopped_while_open__answers_what_was_read_then_unavailable() -> None:
    async def scenario() -> list[int]:
        stop, never = asyncio.Event(), asyncio.Event()
        answered: list[int] = []

        async def answer(value: int) -> int:
            if value == 2:
                stop.set()  # the server drains while this one is under way
                await asyncio.sleep(0.01)
            return value

        with pytest.raises(Unavailable):
            async for a in answer_each(items([1, 2], then_wait=never), answer, stop):
                answered.append(a)
        return answered

    assert sorted(asyncio.run(scenario())) == [1, 2]
