"""The background task every loop beside a server starts and stops through."""

from __future__ import annotations

import asyncio

import pytest

from tessera.background import Background


class Loop:
    """A loop that counts its starts and records how it ended."""

    def __init__(self) -> None:
        self.starts = 0
        self.cancelled = False
        self.cleaned_up = False
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.starts += 1
        self.running.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            self.cancelled = True
            await asyncio.sleep(0)  # a cleanup that itself awaits
            self.cleaned_up = True
            raise


def test_start__twice__one_task_named_as_given() -> None:
    async def go() -> tuple[int, list[str]]:
        loop, background = Loop(), Background()
        background.start(loop.run, name="loop:a")
        background.start(loop.run, name="loop:b")
        await loop.running.wait()
        await asyncio.sleep(0)
        names = sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("loop"))
        await background.stop()
        return loop.starts, names

    starts, names = asyncio.run(go())

    assert starts == 1
    assert names == ["loop:a"]


def test_stop__cancels_and_waits_for_the_end() -> None:
    async def go() -> tuple[Loop, bool, bool]:
        loop, background = Loop(), Background()
        background.start(loop.run, name="loop")
        await loop.running.wait()
        before = background.started
        await background.stop()
        return loop, before, background.started

    loop, started_before, started_after = asyncio.run(go())

    assert started_before and not started_after
    assert loop.cancelled
    assert loop.cleaned_up  # stop returned only after the task's cleanup ran


def test_stop__twice_or_never_started__no_error() -> None:
    async def go() -> Loop:
        loop, background = Loop(), Background()
        await background.stop()  # never started
        background.start(loop.run, name="loop")
        await loop.running.wait()
        await background.stop()
        await background.stop()
        return loop

    loop = asyncio.run(go())

    assert loop.starts == 1
    assert loop.cancelled


def test_start__after_stop__starts_again() -> None:
    async def go() -> int:
        loop, background = Loop(), Background()
        for _ in range(2):
            background.start(loop.run, name="loop")
            await loop.running.wait()
            loop.running.clear()
            await background.stop()
        return loop.starts

    assert asyncio.run(go()) == 2


def test_stop__task_failed__its_error_is_raised() -> None:
    async def fail() -> None:
        raise RuntimeError("broken loop")

    async def go() -> None:
        background = Background()
        background.start(fail, name="failing")
        await asyncio.sleep(0)
        assert background.started  # ended on its own, not yet stopped
        await background.stop()

    with pytest.raises(RuntimeError, match="broken loop"):
        asyncio.run(go())
