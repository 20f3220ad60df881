"""The change feed of one replica: when the sequencer runs, and how followers are served.

The sequencer (`storage.feed.FeedStore.sequence`) runs right after each
write of this replica commits, without the writer waiting for it (a kick
wakes the loop), and every `poll_s` whatever happens, on every replica: a
record committed just after a run, or by a replica that stopped, is numbered
by the next periodic run at the latest. A follower's stream reads what has
been numbered and then waits: this replica's own sequencer runs wake it at
once; records numbered by other replicas are found by polling every
`poll_s`. So a record reaches a follower within a few milliseconds when the
follower is served by the replica that wrote it, and within about two poll
intervals otherwise.

The polling is the sequencer's, once for all followers: while any follows,
each run also reads the feed's counter, and a follower whose cursor is at
the head so learned does not read the database at all; a head that moved
wakes it. Should the runs stop looking (a database that fails them), each
follower polls the database itself again, as the only way to be sure.

Retention runs here too: every `purge_every_s`, records numbered longer ago
than the retention are purged, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import AsyncIterator, Sequence

from tessera import metrics
from tessera.background import Background
from tessera.db import Database
from tessera.errors import Unavailable
from tessera.profiles.storage.feed import SEQUENCE_BATCH, FeedRecord, FeedStore

log = logging.getLogger("tessera.profiles.feed")

READ_BATCH = 500
"""Records one read of a follower's stream takes from the database."""
BUSY_RETRY_S = 0.005
"""After a kicked run found another run holding the lock: try once more this soon."""
FRESH_POLLS = 2.0
"""A head the sequencer learned within this many poll intervals spares an idle follower
its own read of the database; an older one does not."""


class Feed:
    """This replica's sequencer and purge loops, and the streams of its followers."""

    def __init__(
        self,
        database: Database,
        *,
        poll_s: float = 0.05,
        retention: dt.timedelta = dt.timedelta(days=400),
        purge_every_s: float = 3600.0,
    ) -> None:
        self.database = database
        self.store = FeedStore(database)
        self.poll_s = poll_s
        self.retention = retention
        self.purge_every_s = purge_every_s
        self._kicked = asyncio.Event()
        self._moved = asyncio.Event()
        self._stopping = False
        self._sequencing = Background()
        self._purging = Background()
        self._followers = 0
        """Streams following now: while there are any, sequencer runs look at the head."""
        self._head = 0
        """The highest position known given out (`FeedStore.head`, as the loop last took it)."""
        self._looked_at = -math.inf
        """Loop time a run that looked at the counter started: `_head` is fresh as of then."""

    async def start(self) -> None:
        """Start the sequencer and the purge; number what is waiting first."""
        await self._sequence()
        head, _ = await self.database.run(self.store.state)
        self._head = max(self._head, head)
        metrics.FEED_HEAD.set(head)
        self._sequencing.start(self._sequencer, name="feed:sequencer")
        self._purging.start(self._purger, name="feed:purge")

    def kick(self) -> None:
        """A write of this replica committed: sequence soon. Never blocks."""
        self._kicked.set()

    def drain(self) -> None:
        """End every follower's stream (UNAVAILABLE: reconnect elsewhere)."""
        self._stopping = True
        self._wake()

    async def stop(self) -> None:
        """Stop the loops after a last run, so what this replica wrote is numbered."""
        self.drain()
        await self._sequencing.stop()
        await self._purging.stop()
        with contextlib.suppress(Exception):  # another replica's run numbers it
            await self._sequence()

    def _wake(self) -> None:
        # A fresh event per move: each waiter re-reads, then waits on the new one.
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def _sequence(self) -> int | None:
        look = self._followers > 0
        started = asyncio.get_running_loop().time()
        numbered = await self.database.run(self.store.sequence, look)
        if look:
            self._looked_at = started
        if numbered or self.store.head > self._head:
            self._head = max(self._head, self.store.head)
            metrics.FEED_HEAD.set(self._head)
            self._wake()
        return numbered

    async def _sequencer(self) -> None:
        while True:
            kicked = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kicked.wait(), self.poll_s)
                kicked = True
            self._kicked.clear()
            try:
                numbered = await self._sequence()
                if numbered is None and kicked:
                    # Another replica's run holds the lock and may have begun
                    # before our write committed: one more try, soon.
                    await asyncio.sleep(BUSY_RETRY_S)
                    numbered = await self._sequence()
                if numbered == SEQUENCE_BATCH:
                    self._kicked.set()  # more are waiting
            except Exception:  # a database hiccup must not end the sequencer
                log.exception("feed sequencer run failed")
                await asyncio.sleep(self.poll_s)

    async def _purger(self) -> None:
        while True:
            await asyncio.sleep(self.purge_every_s)
            try:
                cutoff = dt.datetime.now(dt.UTC) - self.retention
                purged = await self.database.run(self.store.purge, cutoff)
                if purged:
                    log.info("feed purged by retention", extra={"records": purged})
            except Exception:  # tried again at the next interval
                log.exception("feed purge failed")

    async def follow(
        self, after: int, types: Sequence[str], profiles: bool = False, events: bool = True
    ) -> AsyncIterator[FeedRecord]:
        """Every record after `after` in position order, then new ones as they are numbered.

        Profile records (traits and identity types) only with `profiles`; no
        event records without `events`.

        FAILED_PRECONDITION when retention purged records after `after`;
        UNAVAILABLE when this replica shuts down (reconnect with the last
        sequence received).
        """
        cursor = after
        loop = asyncio.get_running_loop()
        read = True  # the first time whatever the head
        self._followers += 1
        try:
            while True:
                if self._stopping:
                    raise Unavailable(f"the server is shutting down; reconnect with after={cursor}")
                # Taken before reading: a run that numbers records after the
                # read wakes this wait instead of being missed until the poll.
                moved = self._moved
                # Nothing above the cursor was given out when a recent run
                # looked, and a run that finds more wakes `moved`: no read.
                # Records numbered since that look are found by the next run's
                # look, within a poll interval.
                read = (
                    read
                    or cursor < self._head
                    or loop.time() - self._looked_at > FRESH_POLLS * self.poll_s
                )
                if read:
                    page = await self.database.run(
                        self.store.read, cursor, types, READ_BATCH, profiles, events
                    )
                    for record in page.records:
                        yield record
                    cursor = page.through
                    if page.more:
                        continue
                    # Read up to the counter: the head, as of this read.
                    metrics.FEED_HEAD.set(cursor)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(moved.wait(), self.poll_s)
                read = False
        finally:
            self._followers -= 1
