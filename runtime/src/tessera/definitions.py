"""Versioned definitions (segments, experiments, campaigns) and their watch feed.

A definition is a key, a version raised on every change, and a body (JSON
text) that the owning service reads and writes. Every write also takes the
next value of a per-table revision counter; because the counter row stays
locked until the transaction commits, revisions are committed in order, so a
watcher that asks for "everything after revision N" never skips a change,
whichever replica wrote it. Deletions leave a tombstone for the same reason.

`DefinitionFeed` turns that into what `Watch…` RPCs serve: a snapshot, then
every change, polled from the database (so changes made by other replicas
arrive within the poll interval) and woken at once by local writes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select
from sqlmodel.main import SQLModelMetaclass

from tessera import db
from tessera.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger("tessera.definitions")

T = TypeVar("T")

Check = Callable[[dict[str, str]], None]
"""Validates the live definitions a write would leave (key -> body); raises to refuse."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Definition:
    """One stored definition."""

    key: str
    version: int
    revision: int
    deleted: bool
    body: str
    created_at: dt.datetime
    updated_at: dt.datetime


@functools.cache
def _tables(prefix: str) -> tuple[type[SQLModel], type[SQLModel]]:
    """The definition and revision-counter tables of one service.

    Made once per prefix: the table metadata is process-wide, and replicas
    of one service in one process (as tests run them) share it.
    """
    definition = SQLModelMetaclass(
        f"{prefix.title()}Definition",
        (SQLModel,),
        {
            "__module__": __name__,
            "__tablename__": f"{prefix}_definitions",
            "__annotations__": {
                "key": str,
                "version": int,
                "revision": int,
                "deleted": bool,
                "body": str,
                "created_at": dt.datetime,
                "updated_at": dt.datetime,
            },
            "key": Field(primary_key=True, max_length=64),
            "revision": Field(index=True),
        },
        table=True,
    )
    counter = SQLModelMetaclass(
        f"{prefix.title()}Revision",
        (SQLModel,),
        {
            "__module__": __name__,
            "__tablename__": f"{prefix}_revision",
            "__annotations__": {"id": int, "value": int},
            "id": Field(primary_key=True),
        },
        table=True,
    )
    return definition, counter


class DefinitionStore:
    """Durable, versioned definitions of one kind (blocking; call via `database.run`)."""

    def __init__(self, database: db.Database, prefix: str, noun: str) -> None:
        self.database = database
        self.engine = database.engine
        self.noun = noun
        self.model, self.counter = _tables(prefix)

    @property
    def tables(self) -> list[type[SQLModel]]:
        """The tables to create at start."""
        return [self.model, self.counter]

    def prepare(self) -> None:
        """Seed the revision counter; safe when several replicas start at once."""
        with Session(self.engine) as session:
            if session.get(self.counter, 1) is not None:
                return
            session.add(self.counter(id=1, value=0))
            with contextlib.suppress(IntegrityError):
                session.commit()

    def _next_revision(self, session: Session) -> int:
        result = session.execute(
            update(self.counter)  # type: ignore[arg-type]
            .where(self.counter.id == 1)  # type: ignore[attr-defined]
            .values(value=self.counter.value + 1)  # type: ignore[attr-defined]
            .returning(self.counter.value)  # type: ignore[attr-defined]
        ).first()
        if result is None:
            raise FailedPrecondition("revision counter missing: prepare() was not called")
        return int(result[0])

    @staticmethod
    def _out(row: Any) -> Definition:
        return Definition(
            row.key,
            row.version,
            row.revision,
            row.deleted,
            row.body,
            row.created_at.replace(tzinfo=dt.UTC)
            if row.created_at.tzinfo is None
            else row.created_at,
            row.updated_at.replace(tzinfo=dt.UTC)
            if row.updated_at.tzinfo is None
            else row.updated_at,
        )

    def _write(
        self,
        key: str,
        change: Callable[[Any, int, dt.datetime], Any],
        check: Check | None,
    ) -> Definition:
        """One write: take the next revision, change the row, check the result, commit.

        Taking the revision first locks the counter row, so every write of
        this kind, on any replica, runs one at a time: a check sees exactly
        the set the write produces, and two creates of one key cannot race.
        """
        with Session(self.engine) as session:
            revision = self._next_revision(session)
            row = session.get(self.model, key, populate_existing=True)
            row = change(row, revision, _now())
            if check is not None:
                live = session.exec(
                    select(self.model.key, self.model.body)  # type: ignore[call-overload]
                    .where(self.model.deleted == False)  # type: ignore[attr-defined]  # noqa: E712
                    .where(self.model.key != key)  # type: ignore[attr-defined]
                ).all()
                after = dict(live)
                if not row.deleted:
                    after[key] = row.body
                check(after)
            session.add(row)
            session.commit()
            session.refresh(row)
            return self._out(row)

    def create(self, key: str, body: str, check: Check | None = None) -> Definition:
        """Store a new definition at version 1; ALREADY_EXISTS if the key is taken.

        `check` sees every live definition as it will be after the write
        (key -> body) and raises to refuse it.
        """

        def change(row: Any, revision: int, now: dt.datetime) -> Any:
            if row is not None and not row.deleted:
                raise AlreadyExists(f"{self.noun} {key!r} exists already", field=f"{self.noun}.key")
            if row is None:
                return self.model(
                    key=key,
                    version=1,
                    revision=revision,
                    deleted=False,
                    body=body,
                    created_at=now,
                    updated_at=now,
                )
            # A key used before keeps counting versions, so a watcher holding
            # the old definition can tell the new one is newer.
            row.version += 1
            row.revision, row.deleted, row.body = revision, False, body
            row.created_at = row.updated_at = now
            return row

        return self._write(key, change, check)

    def get(self, key: str) -> Definition:
        """The live definition under `key`; NOT_FOUND otherwise."""
        with Session(self.engine) as session:
            row = session.get(self.model, key)
            if row is None or row.deleted:
                raise NotFound(f"no {self.noun} {key!r}", field="key")
            return self._out(row)

    def page(self, page_size: int, page_token: str) -> tuple[list[Definition], str]:
        """A page of live definitions in key order and the next page's token."""
        if page_size < 0:
            raise InvalidArgument("must not be negative", field="page_size")
        size = min(page_size or 100, 1000)
        try:
            after = base64.urlsafe_b64decode(page_token.encode()).decode() if page_token else ""
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidArgument(
                "is not a token this service issued", field="page_token"
            ) from error
        with Session(self.engine) as session:
            query = (
                select(self.model)
                .where(self.model.deleted == False)  # type: ignore[attr-defined]  # noqa: E712
                .where(self.model.key > after)  # type: ignore[attr-defined]
                .order_by(self.model.key)  # type: ignore[attr-defined]
                .limit(size + 1)
            )
            rows = [self._out(r) for r in session.exec(query)]
        if len(rows) > size:
            rows = rows[:size]
            token = base64.urlsafe_b64encode(rows[-1].key.encode()).decode()
        else:
            token = ""
        return rows, token

    def update(
        self, key: str, body: str, expected_version: int = 0, check: Check | None = None
    ) -> Definition:
        """Replace the body and raise the version; optimistic when `expected_version` is set."""

        def change(row: Any, revision: int, now: dt.datetime) -> Any:
            if row is None or row.deleted:
                raise NotFound(f"no {self.noun} {key!r}", field=f"{self.noun}.key")
            if expected_version and row.version != expected_version:
                raise FailedPrecondition(
                    f"{self.noun} {key!r} is at version {row.version}, not {expected_version}",
                    field="expected_version",
                )
            row.version += 1
            row.revision, row.body, row.updated_at = revision, body, now
            return row

        return self._write(key, change, check)

    def delete(self, key: str, check: Check | None = None) -> Definition:
        """Tombstone the definition; NOT_FOUND if there is none."""

        def change(row: Any, revision: int, now: dt.datetime) -> Any:
            if row is None or row.deleted:
                raise NotFound(f"no {self.noun} {key!r}", field="key")
            row.version += 1
            row.revision, row.deleted, row.updated_at = revision, True, now
            return row

        return self._write(key, change, check)

    def changes_since(self, revision: int) -> list[Definition]:
        """Every definition, tombstones included, changed after `revision`, in order."""
        with Session(self.engine) as session:
            query = (
                select(self.model)
                .where(self.model.revision > revision)  # type: ignore[attr-defined]
                .order_by(self.model.revision)  # type: ignore[attr-defined]
            )
            return [self._out(r) for r in session.exec(query)]


@dataclass(frozen=True)
class Change:
    """What a watcher receives: the snapshot, or one batch of changes."""

    snapshot: bool
    upserted: Sequence[Definition]
    deleted_keys: Sequence[str]


class DefinitionFeed:
    """Serves a `DefinitionStore` as snapshot-then-changes to many watchers."""

    def __init__(self, store: DefinitionStore, poll_s: float = 0.25) -> None:
        self.store = store
        self.poll_s = poll_s
        self._revision = 0
        self._live: dict[str, Definition] = {}
        self._subscribers: set[asyncio.Queue[Change]] = set()
        self._listeners: list[Callable[[Change], None]] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the current state and start polling."""
        await self._poll()
        self._task = asyncio.create_task(self._run(), name=f"feed:{self.store.noun}")

    async def stop(self) -> None:
        """Stop polling and end every watch."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in self._subscribers:
            queue.put_nowait(Change(False, (), ()))

    async def refresh(self) -> None:
        """Poll now: after a local write, so this replica reads its own writes."""
        await self._poll()

    def listen(self, listener: Callable[[Change], None]) -> None:
        """Call `listener` with the snapshot now and with every change, in the poll itself."""
        listener(Change(True, self.current, ()))
        self._listeners.append(listener)

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
        batch = Change(False, upserted, deleted)
        for listener in self._listeners:
            listener(batch)
        for queue in self._subscribers:
            queue.put_nowait(batch)

    async def watch(self) -> AsyncIterator[Change]:
        """The snapshot, then every change until the feed stops."""
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield Change(True, self.current, ())
            while True:
                change = await queue.get()
                if not change.snapshot and not change.upserted and not change.deleted_keys:
                    return
                yield change
        finally:
            self._subscribers.discard(queue)


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
