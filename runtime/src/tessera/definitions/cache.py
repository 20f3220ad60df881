"""The derived side of definitions: what a service's hot path reads, per replica.

A `DefinitionCache` follows this replica's own `DefinitionFeed` with the
same `Watcher` a decision replica uses over the `Watch…` RPCs, so the owning
service and the decision service load, skip and replace definitions the same
way. It fails like a reader: a definition it cannot convert is left out and
logged, and the rest keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from tessera.definitions.feed import Change, DefinitionFeed
from tessera.definitions.store import Definition
from tessera.definitions.watcher import Backoff, Batch, WatchedSet, Watcher

T = TypeVar("T")

LOCAL_BACKOFF = Backoff(initial_s=0.01, max_s=0.5)
"""The local feed only ends when it stops: come back quickly if it ever does."""


def _read(change: Change) -> Batch[Definition]:
    return Batch(change.snapshot, change.upserted, change.deleted_keys, change.revision)


def _key(definition: Definition) -> str:
    return definition.key


class DefinitionCache(Generic[T]):
    """Definitions of a feed, converted once per change, for the hot path.

    `convert` turns a stored definition into what the hot path evaluates (a
    compiled rule, an experiment, a campaign); `on_change` runs after each
    batch, for caches that derive something from the whole set.
    """

    def __init__(
        self,
        feed: DefinitionFeed,
        convert: Callable[[Definition], T],
        on_change: Callable[[dict[str, T]], None] | None = None,
    ) -> None:
        self.feed = feed
        self._set: WatchedSet[Definition, T] = WatchedSet(feed.store.noun, convert, _key, on_change)
        self._watcher = Watcher(
            f"local:{feed.store.noun}", feed.watch, _read, self._set, LOCAL_BACKOFF
        )

    @property
    def items(self) -> Mapping[str, T]:
        """Every live definition, converted, by key."""
        return self._watcher.items

    @property
    def on_change(self) -> Callable[[dict[str, T]], None] | None:
        """Called with every item after each batch (set it before `start`)."""
        return self._set.on_change

    @on_change.setter
    def on_change(self, on_change: Callable[[dict[str, T]], None] | None) -> None:
        self._set.on_change = on_change

    async def start(self) -> None:
        """Follow the feed; return once every definition is loaded (the feed must be started)."""
        self._watcher.start()
        await self._watcher.wait_loaded()

    async def stop(self) -> None:
        """Stop following; `items` keeps the last state."""
        await self._watcher.stop()

    async def reached(self, revision: int) -> None:
        """Return once the cache holds every write up to `revision` (or has stopped)."""
        await self._watcher.reached(revision)
