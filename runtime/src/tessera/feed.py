"""Following the profile service's change feed: one runner for every consumer.

A consumer (experiments counting conversions, segments keeping its
projection) is a handler; `FeedRunner` does the rest: it reads the
consumer's cursor from the consumer service's own database (a
`<service>_feed_cursor` table, one row per consumer), follows
`StreamEvents(after=cursor)`, hands the records to the handler in batches,
and moves the cursor once the handler has succeeded. When the stream breaks
(a restart of either side, a network fault) it reconnects after a capped,
jittered backoff and resumes from the stored cursor.

Two kinds of handler, two guarantees (docs/change-feed.md):

- `in_transaction`: a blocking function given the batch and a SQL session
  of the consumer's database; the cursor moves in that same transaction.
  Either both commit or neither does: every record takes effect exactly
  once, across restarts and crashes.
- `handle`: an async function for effects outside that database (Redis, a
  peer). The cursor moves after it returns, in a transaction of its own:
  a crash in between hands the batch over again, so delivery is at least
  once and the handler must be idempotent (key its effects by sequence or
  event id).

The cursor moves only from the value the runner read (compare and set): if
another replica of the consumer moved it meanwhile, the runner's
transaction rolls back and it resumes from the stored cursor, so two
replicas never both apply a record.

A cursor older than the feed's retention is answered FAILED_PRECONDITION;
the runner logs it as an error (records were lost to this consumer) and
resumes at the oldest record still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import re
import types
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col

from tessera import metrics
from tessera.background import Background
from tessera.db import Database
from tessera.definitions.watcher import Backoff, _close

log = logging.getLogger("tessera.feed")

R = TypeVar("R")
"""A record of the feed (a `StreamEventsResponse`)."""

OLDEST_HELD = re.compile(r"oldest sequence still held is (\d+)")
"""How a FAILED_PRECONDITION of StreamEvents names where the feed starts now."""


class CursorRow(SQLModel):
    """Columns of a service's `<service>_feed_cursor` table: one row per consumer."""

    consumer: str = Field(primary_key=True, max_length=64)
    position: int
    updated_at: dt.datetime


@functools.cache
def cursor_table(service: str) -> type[CursorRow]:
    """The cursor table of `service`, made once per process (table metadata is global)."""
    table = types.new_class(
        f"{service.title()}FeedCursor",
        (CursorRow,),
        {"table": True},
        lambda namespace: namespace.update(
            __module__=__name__, __tablename__=f"{service}_feed_cursor"
        ),
    )
    assert issubclass(table, CursorRow)  # narrows the type; never fails
    return table


class CursorMoved(Exception):
    """Another replica of the consumer moved the cursor: resume from the stored one."""


class Cursors:
    """The feed cursors of one service's consumers, in its own database (blocking).

    Its table comes from a revision of the service's migrations (`tables` lists
    it for the service's `migrations.tables()`).
    """

    def __init__(self, database: Database, service: str) -> None:
        self.database = database
        self.engine = database.engine
        self.model = cursor_table(service)

    @property
    def tables(self) -> list[type[SQLModel]]:
        """Its tables (in the service's `migrations.tables()`, created by its revisions)."""
        return [self.model]

    def load(self, consumer: str) -> int:
        """The last sequence `consumer` has handled; 0 before its first record."""
        with Session(self.engine) as session:
            row = session.get(self.model, consumer)
            return row.position if row else 0

    def advance(self, session: Session, consumer: str, expected: int, position: int) -> None:
        """Move the cursor from `expected` to `position` in `session`'s transaction.

        CursorMoved when the stored cursor is no longer `expected`.
        """
        now = dt.datetime.now(dt.UTC)
        moved = session.execute(
            update(self.model)
            .where(col(self.model.consumer) == consumer, col(self.model.position) == expected)
            .values(position=position, updated_at=now)
        )
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            return
        if session.get(self.model, consumer) is None:
            session.add(self.model(consumer=consumer, position=position, updated_at=now))
            try:
                session.flush()
            except IntegrityError as error:  # another replica stored its first cursor
                raise CursorMoved(consumer) from error
            return
        raise CursorMoved(consumer)

    def set(self, consumer: str, expected: int, position: int) -> None:
        """`advance` in a transaction of its own."""
        with Session(self.engine) as session:
            self.advance(session, consumer, expected, position)
            session.commit()


_END = object()
"""Put on a runner's queue when the stream ended."""


class FeedRunner(Generic[R]):
    """Follows a feed from a stored cursor into a handler, checkpointing and reconnecting.

    `connect(after)` opens the stream (e.g. `profile_events(channel)`);
    `sequence_of` reads a record's sequence. Give exactly one of
    `in_transaction` (exactly once) and `handle` (at least once).
    """

    def __init__(
        self,
        consumer: str,
        cursors: Cursors,
        connect: Callable[[int], AsyncIterable[R]],
        sequence_of: Callable[[R], int],
        *,
        in_transaction: Callable[[Sequence[R], Session], None] | None = None,
        handle: Callable[[Sequence[R]], Awaitable[None]] | None = None,
        backoff: Backoff | None = None,
        max_batch: int = 500,
    ) -> None:
        if (in_transaction is None) == (handle is None):
            raise ValueError("give one handler: in_transaction or handle")
        self.consumer = consumer
        self.cursors = cursors
        self.connect = connect
        self.sequence_of = sequence_of
        self.in_transaction = in_transaction
        self.handle = handle
        self.backoff = backoff or Backoff()
        self.max_batch = max_batch
        self.position = 0
        """The last sequence handled and checkpointed."""
        self._moved = asyncio.Event()
        self._background = Background()

    def start(self) -> None:
        """Follow in the background until `stop`."""
        self._background.start(self._run, name=f"feed:{self.consumer}")

    async def stop(self) -> None:
        """Stop following; what was checkpointed stays. Safe to call twice."""
        await self._background.stop()

    async def reached(self, position: int) -> None:
        """Return once the cursor is at `position` or beyond."""
        while self.position < position:
            moved = self._moved
            await moved.wait()

    def _advanced(self, position: int) -> None:
        self.position = position
        metrics.FEED_POSITION.labels(self.consumer).set(position)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def _run(self) -> None:
        database = self.cursors.database
        delays = self.backoff.delays()
        while True:
            cursor = await _retrying(database.run, self.cursors.load, self.consumer)
            self._advanced(cursor)
            try:
                if await self._follow(cursor):
                    delays = self.backoff.delays()  # progress: start the backoff over
                log.info("feed stream ended; reconnecting", extra={"consumer": self.consumer})
            except grpc.aio.AioRpcError as error:
                oldest = _oldest_held(error)
                if oldest is not None:
                    log.error(
                        "feed cursor is older than the feed's retention: records were purged "
                        "before this consumer handled them; resuming at the oldest held",
                        extra={
                            "consumer": self.consumer,
                            "cursor": self.position,
                            "oldest": oldest,
                        },
                    )
                    with contextlib.suppress(CursorMoved):
                        await database.run(
                            self.cursors.set, self.consumer, self.position, oldest - 1
                        )
                    continue
                log.warning(
                    "feed stream broke; reconnecting",
                    extra={"consumer": self.consumer, "code": error.code().name},
                )
            except CursorMoved:
                log.info("feed cursor moved by another replica", extra={"consumer": self.consumer})
                continue
            except Exception:  # a failing handler is retried from the stored cursor
                log.exception("feed handler failed; retrying", extra={"consumer": self.consumer})
            await asyncio.sleep(next(delays))

    async def _follow(self, cursor: int) -> bool:
        """Handle the stream from `cursor` until it ends; True if anything was handled."""
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * self.max_batch)
        stream = self.connect(cursor)

        async def read() -> None:
            try:
                async for record in stream:
                    await queue.put(record)
                await queue.put(_END)
            except Exception as error:  # handed to the handling side, which raises it
                await queue.put(error)

        reader = asyncio.create_task(read(), name=f"feed-read:{self.consumer}")
        handled = False
        try:
            while True:
                batch = [await queue.get()]
                while len(batch) < self.max_batch and not queue.empty():
                    batch.append(queue.get_nowait())
                end = next(
                    (i for i, r in enumerate(batch) if r is _END or isinstance(r, Exception)), None
                )
                records = batch if end is None else batch[:end]
                # Defensive: the feed never repeats a sequence, but a record at
                # or below the cursor must never be applied twice.
                records = [r for r in records if self.sequence_of(r) > cursor]
                if records:
                    cursor = await self._handle(records, cursor)
                    handled = True
                if end is not None:
                    if isinstance(batch[end], Exception):
                        raise batch[end]
                    return handled
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await _close(stream)

    async def _handle(self, records: list[R], cursor: int) -> int:
        last = self.sequence_of(records[-1])
        database = self.cursors.database
        if self.in_transaction is not None:
            work = self.in_transaction

            def apply() -> None:
                with Session(self.cursors.engine) as session:
                    work(records, session)
                    self.cursors.advance(session, self.consumer, cursor, last)
                    session.commit()

            await database.run(apply)
        else:
            assert self.handle is not None
            await self.handle(records)
            await database.run(self.cursors.set, self.consumer, cursor, last)
        metrics.FEED_RECORDS.labels(self.consumer).inc(len(records))
        self._advanced(last)
        return last


def _oldest_held(error: grpc.aio.AioRpcError) -> int | None:
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    found = OLDEST_HELD.search(error.details() or "")
    return int(found.group(1)) if found else None


async def _retrying(run: Callable[..., Awaitable[int]], *args: Any) -> int:
    """Read the cursor, waiting out a database that does not answer yet."""
    delays = Backoff().delays()
    while True:
        try:
            return await run(*args)
        except Exception:
            log.warning("cannot read the feed cursor; retrying", exc_info=True)
            await asyncio.sleep(next(delays))


def profile_events(
    channel: grpc.aio.Channel,
    event_types: Sequence[str] = (),
    include_profiles: bool = False,
    events: bool = True,
) -> Callable[[int], AsyncIterable[Any]]:
    """`connect` for the profile service's StreamEvents over `channel`.

    `include_profiles` also asks for profile records (traits, identity
    types); `events=False` asks for no events at all (merges and deletions
    only: `exclude_events`), and then `event_types` must be empty.
    """
    from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

    stub = profiles_pb2_grpc.ProfileServiceStub(channel)

    def connect(after: int) -> AsyncIterable[Any]:
        return stub.StreamEvents(
            profiles_pb2.StreamEventsRequest(
                after=after,
                types=list(event_types),
                include_profiles=include_profiles,
                exclude_events=not events,
            )
        )

    return connect


def sequence_of(record: Any) -> int:
    """The sequence of a `StreamEventsResponse`."""
    return int(record.sequence)
