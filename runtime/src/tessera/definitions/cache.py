"""The derived side of definitions: what a service's hot path reads, per replica."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from tessera.definitions.feed import Change, DefinitionFeed
from tessera.definitions.store import Definition

log = logging.getLogger("tessera.definitions")

T = TypeVar("T")


class DefinitionCache(Generic[T]):
    """Definitions of a feed, converted once per change, for the hot path.

    `convert` turns a stored definition into what the hot path evaluates (a
    compiled rule, an experiment, a campaign); `on_change` runs after each
    batch, for caches that derive something from the whole set. Updated
    inside the feed's poll, so once a write's `refresh()` returns, the cache
    holds the write.
    """

    def __init__(
        self,
        feed: DefinitionFeed,
        convert: Callable[[Definition], T],
        on_change: Callable[[dict[str, T]], None] | None = None,
    ) -> None:
        self.feed = feed
        self.convert = convert
        self.on_change = on_change
        self.items: dict[str, T] = {}

    def start(self) -> None:
        """Load every definition and follow changes (the feed must be started)."""
        self.feed.listen(self._apply)

    def _apply(self, change: Change) -> None:
        items = {} if change.snapshot else dict(self.items)
        for definition in change.upserted:
            try:
                items[definition.key] = self.convert(definition)
            except Exception:  # one bad stored definition must not blind the cache
                log.exception("cannot load definition", extra={"key": definition.key})
        for key in change.deleted_keys:
            items.pop(key, None)
        self.items = items
        if self.on_change:
            try:
                self.on_change(items)
            except Exception:  # keep what was derived from the last consistent set
                log.exception("definitions changed into an inconsistent set")
