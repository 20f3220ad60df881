"""The durable side of definitions: versioned rows in SQL, one table pair per service.

A definition is a key, a version raised on every change, and a body (JSON
text) that the owning service reads and writes. Every write also takes the
next value of a per-table revision counter; because the counter row stays
locked until the transaction commits, revisions are committed in order, so a
watcher that asks for "everything after revision N" never skips a change,
whichever replica wrote it. Deletions leave a tombstone for the same reason.

Everything here is blocking (call it through `Database.run`) and fails the
way a database fails: the caller gets the error and nothing is half-written.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import types
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from tessera import db
from tessera.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

Check = Callable[[dict[str, str]], None]
"""Validates the live definitions a write would leave (key -> body); raises to refuse."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; every time we write is UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


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


class DefinitionRow(SQLModel):
    """Columns of a service's `<prefix>_definitions` table (each service gets a table class)."""

    key: str = Field(primary_key=True, max_length=64)
    version: int
    revision: int = Field(index=True)
    deleted: bool
    body: str
    created_at: dt.datetime
    updated_at: dt.datetime


class RevisionRow(SQLModel):
    """Columns of a service's `<prefix>_revision` table: one row, the last revision taken."""

    id: int = Field(primary_key=True)
    value: int


def _table(name: str, base: type[SQLModel], tablename: str) -> type[SQLModel]:
    return types.new_class(
        name,
        (base,),
        {"table": True},
        lambda namespace: namespace.update(__module__=__name__, __tablename__=tablename),
    )


@functools.cache
def _tables(prefix: str) -> tuple[type[DefinitionRow], type[RevisionRow]]:
    """The definition and revision-counter tables of one service.

    Made once per prefix: the table metadata is process-wide, and replicas
    of one service in one process (as tests run them) share it. The columns
    come from the typed bases above, so queries over either table type-check.
    """
    definition = _table(f"{prefix.title()}Definition", DefinitionRow, f"{prefix}_definitions")
    counter = _table(f"{prefix.title()}Revision", RevisionRow, f"{prefix}_revision")
    # new_class cannot say which base it used; these narrow the type, never fail.
    assert issubclass(definition, DefinitionRow)
    assert issubclass(counter, RevisionRow)
    return definition, counter


def tables_of(prefix: str) -> list[type[SQLModel]]:
    """The tables of `prefix`'s definitions (its migrations compare against them)."""
    return list(_tables(prefix))


RowChange = Callable[[DefinitionRow | None, int, dt.datetime], DefinitionRow]
"""How a write changes the row under its key: (row or None, revision, now) -> row to store."""


class DefinitionStore:
    """Durable, versioned definitions of one kind (blocking; call via `database.run`)."""

    def __init__(self, database: db.Database, prefix: str, noun: str) -> None:
        self.database = database
        self.engine = database.engine
        self.noun = noun
        self.model, self.counter = _tables(prefix)

    @property
    def tables(self) -> list[type[SQLModel]]:
        """Its tables (in the service's `migrations.tables()`, created by its revisions)."""
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
        value = col(self.counter.value)
        result = session.execute(
            update(self.counter)
            .where(col(self.counter.id) == 1)
            .values(value=value + 1)
            .returning(value)
        ).first()
        if result is None:
            raise FailedPrecondition("revision counter missing: prepare() was not called")
        return int(result[0])

    @staticmethod
    def _out(row: DefinitionRow) -> Definition:
        return Definition(
            row.key,
            row.version,
            row.revision,
            row.deleted,
            row.body,
            _aware(row.created_at),
            _aware(row.updated_at),
        )

    def _write(self, key: str, change: RowChange, check: Check | None) -> Definition:
        """One write: take the next revision, change the row, check the result, commit.

        Taking the revision first locks the counter row, so every write of
        this kind, on any replica, runs one at a time: a check sees exactly
        the set the write produces, and two creates of one key cannot race.
        """
        with Session(self.engine) as session:
            revision = self._next_revision(session)
            row = change(session.get(self.model, key, populate_existing=True), revision, _now())
            if check is not None:
                live = session.exec(
                    select(col(self.model.key), col(self.model.body))
                    .where(col(self.model.deleted) == False)  # noqa: E712 - SQL, not Python
                    .where(col(self.model.key) != key)
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

        def change(row: DefinitionRow | None, revision: int, now: dt.datetime) -> DefinitionRow:
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
                .where(col(self.model.deleted) == False)  # noqa: E712 - SQL, not Python
                .where(col(self.model.key) > after)
                .order_by(col(self.model.key))
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

        def change(row: DefinitionRow | None, revision: int, now: dt.datetime) -> DefinitionRow:
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

        def change(row: DefinitionRow | None, revision: int, now: dt.datetime) -> DefinitionRow:
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
                .where(col(self.model.revision) > revision)
                .order_by(col(self.model.revision))
            )
            return [self._out(r) for r in session.exec(query)]
