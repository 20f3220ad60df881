"""Keeping the projection from the change feed, storing it, and sizing audiences over it.

Every replica of the segment service holds the whole projection in memory
(`domain.projection`) and follows the profile feed itself, from the
position of the projection it holds, with the shared `tessera.feed.FeedRunner`
(at least once: a batch handed over twice is skipped by its sequences).
At start it loads the latest stored snapshot and follows the feed from the
snapshot's position; with none stored it rebuilds from the start of the
feed. Every `snapshot_s` seconds, and soon after an erasure (so no stored
snapshot keeps the person for long), it stores a new snapshot; of replicas
saving at once one wins. docs/segments-size.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tessera.background import Background
from tessera.db import Database
from tessera.errors import Unavailable
from tessera.feed import Cursors, FeedRunner, profile_events, sequence_of
from tessera.segments.domain.estimate import (
    DEFAULT_INTERESTS,
    Estimate,
    InterestRules,
    estimate,
)
from tessera.segments.domain.nodes import Condition
from tessera.segments.domain.projection import Erasure, Projection
from tessera.segments.domain.subject import utc_day
from tessera.segments.storage.projection import SnapshotStore
from tessera.segments.transport.convert import projection_record

log = logging.getLogger("tessera.segments.projection")

CONSUMER = "projection-feed"
"""The runner's name (in logs): every replica follows the feed on its own."""


class MemoryCursors(Cursors):
    """The cursor of a projection held in memory: where that projection is.

    Each replica applies every record to its own projection, so its cursor
    is the projection's position, not a row shared with other replicas
    (the stored row "projection" is the stored snapshot's position).
    """

    def __init__(self, database: Database, service: str, keeper: ProjectionKeeper) -> None:
        super().__init__(database, service)
        self.keeper = keeper

    def load(self, consumer: str) -> int:
        return self.keeper.projection.position

    def set(self, consumer: str, expected: int, position: int) -> None:
        """Nothing to store: `apply` moved the projection's position."""


class ProjectionKeeper:
    """The projection of one replica: loaded, followed, stored, and read for sizes."""

    def __init__(
        self,
        database: Database,
        cursors: Cursors,
        channel: Any,
        *,
        snapshot_s: float = 300.0,
        erasure_snapshot_s: float = 1.0,
        interests: InterestRules = DEFAULT_INTERESTS,
    ) -> None:
        self.database = database
        self.store = SnapshotStore(database, cursors)
        self.channel = channel
        self.snapshot_s = snapshot_s
        self.erasure_snapshot_s = erasure_snapshot_s
        self.interests = interests
        self.projection = Projection()
        self.ready = False
        """The stored snapshot is loaded (or there was none): sizes can be answered."""
        self.lock = asyncio.Lock()
        """Serialises applying records, saving and reading the projection."""
        self.runner: FeedRunner[Any] = FeedRunner(
            CONSUMER,
            MemoryCursors(database, "segments", self),
            profile_events(channel, include_profiles=True),
            sequence_of,
            handle=self._apply,
        )
        self._saved = 0
        self._erased = asyncio.Event()
        self._loading = Background()
        self._saving = Background()

    @property
    def tables(self) -> list[Any]:
        """The tables it reads and writes (created by the service's migrations)."""
        return self.store.tables

    def start(self) -> None:
        """Load the stored snapshot, then follow the feed and store snapshots, in the background."""
        self._loading.start(self._begin, name="projection:start")

    async def stop(self, save: bool = True) -> None:
        """Stop following; store a last snapshot when anything changed since the last one."""
        await self.runner.stop()
        await self._loading.stop()  # first: the loader starts the saver
        await self._saving.stop()
        if save and self.ready:
            with contextlib.suppress(Exception):  # the next start follows the feed from older
                await self.save()

    async def _begin(self) -> None:
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                blob = await self.database.run(self.store.load)
                break
            except Exception:
                log.warning("cannot read the stored projection; retrying", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        if blob is not None:
            try:
                self.projection = await asyncio.to_thread(Projection.from_bytes, blob)
            except Exception:  # an unreadable snapshot: the feed rebuilds it
                log.exception("stored projection unreadable; rebuilding from the feed")
        self._saved = self.projection.position
        self.ready = True
        log.info(
            "projection loaded",
            extra={
                "profiles": self.projection.total,
                "position": self.projection.position,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        self.runner.start()
        self._saving.start(self._saver, name="projection:save")

    async def _apply(self, batch: Sequence[Any]) -> None:
        records = [r for r in batch if sequence_of(r) > self.projection.position]
        if not records:
            return
        converted = [projection_record(r) for r in records]
        today = utc_day(dt.datetime.now(dt.UTC))
        async with self.lock:
            self.projection.apply(
                [r for r in converted if r is not None], sequence_of(records[-1]), today
            )
        if any(isinstance(r, Erasure) for r in converted):
            self._erased.set()

    async def _saver(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._erased.wait(), self.snapshot_s)
                # An erasure: a little later (more may come), settle and store.
                await asyncio.sleep(self.erasure_snapshot_s)
            self._erased.clear()
            try:
                await self.save()
            except Exception:
                log.exception("storing the projection failed; trying again later")

    async def save(self) -> bool:
        """Settle the projection and store it when it moved since the last store."""
        async with self.lock:
            erased = self.projection.holds_erased
            if self.projection.position <= self._saved and not erased:
                return False
            blob = await asyncio.to_thread(self.projection.to_bytes)
            position = self.projection.position
        saved = await self.database.run(self.store.save, blob, position)
        if saved and erased:
            await self.database.run(self.database.scrub)
        self._saved = position
        return saved

    async def reached(self, position: int) -> None:
        """Return once the projection has applied the feed up to `position`."""
        await self.runner.reached(position)

    async def estimate(
        self,
        rule: Condition,
        segments: Mapping[str, Condition],
        goal_event_type: str,
        window_days: int,
    ) -> Estimate:
        """The size and value of `rule`'s audience now; UNAVAILABLE while loading."""
        if not self.ready:
            raise Unavailable("the projection of profiles is still loading; try again shortly")
        now = dt.datetime.now(dt.UTC)
        async with self.lock:
            return await asyncio.to_thread(
                estimate,
                self.projection,
                rule,
                segments,
                now,
                goal_event_type,
                window_days,
                self.interests,
            )
