"""Definitions as protobuf messages: what segments, experiments and campaigns share.

A `Catalog` is one kind of definition (its store, its watch feed, its
message type) with the operations their Create/Get/List/Update/Delete/Watch
RPCs need, so each servicer keeps only what is its own: validation and
side effects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from sqlmodel import SQLModel

from tessera.convert import from_json, stored_message, to_json
from tessera.db import Database
from tessera.definitions import (
    Check,
    Definition,
    DefinitionCache,
    DefinitionFeed,
    DefinitionStore,
)
from tessera.errors import require

T = TypeVar("T")


M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Changes(Generic[M]):
    """One watch message: the snapshot, or changes after it."""

    snapshot: bool
    upserted: list[M]
    deleted_keys: list[str]


class Catalog(Generic[M]):
    """Stored, versioned, watched definitions of one kind, as messages of type M."""

    def __init__(
        self, database: Database, service: str, noun: str, factory: Callable[[], M]
    ) -> None:
        self.database = database
        self.noun = noun
        self.factory = factory
        self.store = DefinitionStore(database, service, noun)
        self.feed = DefinitionFeed(self.store)
        self._caches: list[DefinitionCache[Any]] = []

    @property
    def tables(self) -> list[type[SQLModel]]:
        """Its tables (in the service's `migrations.tables()`, created by its revisions)."""
        return self.store.tables

    def message(self, definition: Definition) -> M:
        """A stored definition as its message, with version and times."""
        return stored_message(definition, self.factory())

    def cache(self, convert: Callable[[M], T]) -> DefinitionCache[T]:
        """A cache of `convert(message)` for every live definition, filled by `open`."""
        cache = DefinitionCache(self.feed, lambda definition: convert(self.message(definition)))
        self._caches.append(cache)
        return cache

    async def open(self) -> None:
        """Seed the revision counter, load the feed and fill the caches (tables must exist)."""
        await self.database.run(self.store.prepare)
        await self.feed.start()
        for cache in self._caches:
            await cache.start()

    async def close(self) -> None:
        """Stop the caches (they keep what they hold) and the feed; ends every watch."""
        for cache in self._caches:
            await cache.stop()
        await self.feed.stop()

    async def _publish(self, written: Definition) -> None:
        """Hand a write to the feed and wait until this replica's caches hold it.

        So a replica reads its own writes: a Create followed by a call that
        reads the cache (Assign, Decide) on the same replica sees it.
        """
        await self.feed.refresh()
        for cache in self._caches:
            await cache.reached(written.revision)

    def _check(self, check: Callable[[dict[str, M]], None] | None) -> Check | None:
        """A store check over bodies, from a check over messages."""
        if check is None:
            return None
        return lambda bodies: check({k: from_json(b, self.factory()) for k, b in bodies.items()})

    async def create(self, message: M, check: Callable[[dict[str, M]], None] | None = None) -> M:
        """Store a new definition; visible to this replica's caches on return.

        `check` sees every live definition as the write would leave them,
        inside the write's transaction, and raises to refuse it.
        """
        key: str = getattr(message, "key")  # noqa: B009 - every definition message has a key
        stored = await self.database.run(
            self.store.create, key, to_json(message), self._check(check)
        )
        await self._publish(stored)
        return self.message(stored)

    async def get(self, key: str) -> M:
        """The definition under `key`."""
        require(bool(key), "key", "is required")
        return self.message(await self.database.run(self.store.get, key))

    async def page(self, page_size: int, page_token: str) -> tuple[list[M], str]:
        """A page of definitions in key order and the next page's token."""
        rows, token = await self.database.run(self.store.page, page_size, page_token)
        return [self.message(row) for row in rows], token

    async def update(
        self,
        message: M,
        expected_version: int = 0,
        check: Callable[[dict[str, M]], None] | None = None,
    ) -> M:
        """Replace a definition, optimistically when `expected_version` is set."""
        key: str = getattr(message, "key")  # noqa: B009
        stored = await self.database.run(
            self.store.update, key, to_json(message), expected_version, self._check(check)
        )
        await self._publish(stored)
        return self.message(stored)

    async def delete(self, key: str, check: Callable[[dict[str, M]], None] | None = None) -> None:
        """Remove a definition."""
        require(bool(key), "key", "is required")
        await self._publish(await self.database.run(self.store.delete, key, self._check(check)))

    async def watch(self) -> AsyncIterator[Changes[M]]:
        """Every definition, then every change, as messages."""
        async for change in self.feed.watch():
            yield Changes(
                change.snapshot,
                [self.message(d) for d in change.upserted],
                list(change.deleted_keys),
            )
