"""One background asyncio task, started once and stopped safely.

The feed runner, the definition watchers and feeds, the profile feed's
loops, the segment projection, the exposure emitter, the sticky sync and
the bandit each run a loop beside the server. `Background` is the start
and stop they share: `start` creates the task unless one was started,
`stop` cancels it and waits for it to end, and a second `stop` does
nothing. Whatever a place does besides (a last flush, a drain, a final
save) stays written at that place, around the call to `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class Background:
    """Holds at most one task between `start` and `stop`."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        """Whether a task was started and not yet stopped (it may have ended on its own)."""
        return self._task is not None

    def start(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run `run()` as a task named `name`, unless one was started and not stopped."""
        if self._task is None:
            self._task = asyncio.create_task(run(), name=name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended. Safe to call twice.

        The task is let go before the wait, so a `start` meanwhile starts a new
        one. An exception the task ended with (other than its cancellation) is
        raised here.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
