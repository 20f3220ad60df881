"""The fan-out side of definitions: one poller per kind, serving many watchers.

`DefinitionFeed` turns a `DefinitionStore` into what `Watch…` RPCs serve: a
snapshot, then every change, polled from the database (so changes made by
other replicas arrive within the poll interval) and woken at once by local
writes. It fails softly: a poll that fails is logged and tried again at the
next tick, and watchers keep what they have meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from tessera.background import Background
from tessera.definitions.store import Definition, DefinitionStore

log = logging.getLogger("tessera.definitions")


@dataclass(frozen=True)
class Change:
    """What a watcher receives: the snapshot, or one batch of changes.

    `revision` is how far the feed had read when it sent this: a watcher
    that has applied it holds every write up to that revision.
    """

    snapshot: bool
    upserted: Sequence[Definition]
    deleted_keys: Sequence[str]
    revision: int = 0


_END = Change(False, (), ())
"""Sent to every watch when the feed stops."""


class DefinitionFeed:
    """Serves a `DefinitionStore` as snapshot-then-changes to many watchers."""

    def __init__(self, store: DefinitionStore, poll_s: float = 0.25) -> None:
        self.store = store
        self.poll_s = poll_s
        self._revision = 0
        self._live: dict[str, Definition] = {}
        self._subscribers: set[asyncio.Queue[Change]] = set()
        self._lock = asyncio.Lock()
        self._background = Background()

    async def start(self) -> None:
        """Load the current state and start polling."""
        await self._poll()
        self._background.start(self._run, name=f"feed:{self.store.noun}")

    async def stop(self) -> None:
        """Stop polling and end every watch."""
        await self._background.stop()
        for queue in self._subscribers:
            queue.put_nowait(_END)

    async def refresh(self) -> None:
        """Poll now: after a local write, so this replica's watchers get it at once."""
        await self._poll()

    @property
    def current(self) -> list[Definition]:
        """Every live definition as last polled."""
        return sorted(self._live.values(), key=lambda d: d.key)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self._poll()
            except Exception:  # a database hiccup must not end the feed
                log.exception("definition poll failed", extra={"kind": self.store.noun})

    async def _poll(self) -> None:
        async with self._lock:
            await self._poll_locked()

    async def _poll_locked(self) -> None:
        changes = await self.store.database.run(self.store.changes_since, self._revision)
        if not changes:
            return
        upserted = [c for c in changes if not c.deleted]
        deleted = [c.key for c in changes if c.deleted]
        for change in changes:
            self._revision = max(self._revision, change.revision)
            if change.deleted:
                self._live.pop(change.key, None)
            else:
                self._live[change.key] = change
        batch = Change(False, upserted, deleted, self._revision)
        for queue in self._subscribers:
            queue.put_nowait(batch)

    async def watch(self) -> AsyncIterator[Change]:
        """The snapshot, then every change until the feed stops."""
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            # No await between subscribing and taking the snapshot: no poll
            # can fall between them, so nothing is missed or sent twice.
            yield Change(True, self.current, (), self._revision)
            while True:
                change = await queue.get()
                if change is _END:
                    return
                yield change
        finally:
            self._subscribers.discard(queue)
