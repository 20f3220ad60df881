"""Durable profile data on SQLModel: profiles, identities, aliases, the event log.

The event log doubles as the change feed: writers insert records with no
feed `position`; the sequencer (`storage.feed`) gives committed records
their positions afterwards, in commit order, and consumers use those as
their cursor. Methods are blocking; the servicer calls them through
`Database.run`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Dialect,
    Index,
    Select,
    and_,
    bindparam,
    delete,
    func,
    or_,
    text,
    true,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Field, Session, SQLModel, col, select

from tessera import jsoncodec, sticky
from tessera.db import Database
from tessera.errors import AlreadyExists, NotFound
from tessera.profiles.domain import identity
from tessera.profiles.domain.conversion import ConversionModel
from tessera.profiles.domain.event_history import (
    EventHistory,
    add_events_stored,
    event_history_from_json,
    event_history_to_json,
    merge_event_histories,
)
from tessera.profiles.domain.history import (
    History,
    add_to_history,
    changes_history,
    merge_histories,
)
from tessera.profiles.domain.model import EventData, IdentityKey, finite_add, saturating_add
from tessera.profiles.storage.prepared import Prepared, holds_text, in_list, prepared, run_in

MAX_IDENTIFY_ATTEMPTS = 5

_T = TypeVar("_T")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def history_to_json(history: History) -> dict[str, Any]:
    """The stored JSON object of a history."""
    last = history.last_purchase_at
    return {
        "orders": history.orders,
        "revenue": history.revenue,
        "last_purchase_at": last.isoformat() if last else None,
        "categories": dict(history.categories),
        "category_purchased_at": {
            name: at.isoformat() for name, at in history.category_purchased_at.items()
        },
    }


def history_from_json(raw: dict[str, Any]) -> History:
    """A history from its stored JSON object.

    Read saturated, like the domain keeps it: histories stored before
    revenue was bounded may hold an infinite sum. Histories stored before
    per-category purchase times have no `category_purchased_at`: each of
    their categories reads as bought at the profile's last purchase (the
    latest it can have been), and is written back so from then on.
    """
    last = raw.get("last_purchase_at")
    last_at = dt.datetime.fromisoformat(last) if last else None
    categories = {k: saturating_add(0, int(v)) for k, v in raw.get("categories", {}).items()}
    if "category_purchased_at" in raw:
        purchased_at = {
            name: dt.datetime.fromisoformat(at) for name, at in raw["category_purchased_at"].items()
        }
    else:
        purchased_at = {name: last_at for name in categories} if last_at else {}
    return History(
        orders=saturating_add(0, int(raw.get("orders", 0))),
        revenue=finite_add(0.0, float(raw.get("revenue", 0.0))),
        last_purchase_at=last_at,
        categories=categories,
        category_purchased_at=purchased_at,
    )


def _empty_history() -> dict[str, Any]:
    return history_to_json(History())


class ProfileRow(SQLModel, table=True):
    """One canonical profile."""

    __tablename__ = "profiles_profile"

    profile_id: str = Field(primary_key=True, max_length=40)
    traits: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    history: dict[str, Any] = Field(
        default_factory=_empty_history, sa_column=Column(JSON, nullable=False)
    )
    event_history: list[dict[str, Any]] | None = Field(
        default_factory=list, sa_column=Column(JSON, nullable=True)
    )
    """Daily counts and sums per event series (domain.event_history); None on
    rows written before revision 0004 (migrations/), read as an empty history."""
    created_at: dt.datetime
    updated_at: dt.datetime


class IdentityRow(SQLModel, table=True):
    """An identity attached to a profile; one profile per identity."""

    __tablename__ = "profiles_identity"

    id_type: str = Field(primary_key=True, max_length=32)
    id_value: str = Field(primary_key=True, max_length=512)
    profile_id: str = Field(index=True, max_length=40)
    created_at: dt.datetime


class AliasRow(SQLModel, table=True):
    """A merged profile id and the profile it now resolves to."""

    __tablename__ = "profiles_alias"

    alias_id: str = Field(primary_key=True, max_length=40)
    profile_id: str = Field(index=True, max_length=40)


class LogRow(SQLModel, table=True):
    """One record of the event log and change feed.

    `sequence` is the row id, taken at insert: on PostgreSQL concurrent
    writers commit in another order than they took ids, so the feed does
    not use it. `position` is the record's place in the feed (the
    `sequence` of StreamEvents), given by the sequencer once the row has
    committed; NULL until then.
    """

    __tablename__ = "profiles_log"
    __table_args__ = (
        # What the sequencer looks for at every run: a small index of the
        # few rows not sequenced yet, not a scan of the whole log.
        Index(
            "ix_profiles_log_unsequenced",
            "sequence",
            postgresql_where=text("position IS NULL"),
            sqlite_where=text("position IS NULL"),
        ),
        Index("ux_profiles_log_position", "position", unique=True),
    )

    sequence: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # "event", "merge", "deletion" or "profile"
    event_id: str | None = Field(default=None, unique=True, max_length=128)
    profile_id: str = Field(index=True, max_length=40)
    type: str = Field(default="", max_length=64)
    channel: int = 0
    ts: dt.datetime
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    identities: list[list[str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    applied: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    """False from an event's insert until its hot session has taken it: a
    retry of an event still False completes it, a retry of one True is a
    plain duplicate (docs/profile-writes.md). Merge and deletion records are
    always True."""
    position: int | None = Field(default=None, sa_type=BigInteger)
    """Place in the change feed (unique); NULL until the sequencer reaches the row."""
    sequenced_at: dt.datetime | None = None
    """When the record got its position: retention counts from here."""


class ModelRow(SQLModel, table=True):
    """One trained conversion model (`tessera train conversion`); the newest per goal is used."""

    __tablename__ = "profiles_model"

    version: str = Field(primary_key=True, max_length=64)
    goal: str = Field(index=True, max_length=64)
    """The event type the model predicts (the service uses TESSERA_CONVERSION_GOAL's)."""
    trained_at: dt.datetime = Field(index=True)
    intercept: float
    weights: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """One weight per signal name (`tessera.profiles.domain.conversion.SIGNALS`)."""
    auc: float
    calibration_error: float
    examples: int
    held_out: int


class FeedRow(SQLModel, table=True):
    """The change feed's counter: one row, written only by the sequencer and the purge."""

    __tablename__ = "profiles_feed"

    id: int = Field(default=1, primary_key=True)
    last_position: int = Field(default=0, sa_type=BigInteger)
    """The highest position given out; the next record gets the one after."""
    purged_through: int = Field(default=0, sa_type=BigInteger)
    """Every position up to this one was purged by retention."""


TABLES: list[type[SQLModel]] = [ProfileRow, IdentityRow, AliasRow, LogRow, FeedRow, ModelRow]


@dataclass(frozen=True)
class ProfileRecord:
    """A profile as stored: what GetProfile needs besides the hot session."""

    profile_id: str
    identities: list[IdentityKey]
    traits: dict[str, Any]
    history: History
    created_at: dt.datetime
    updated_at: dt.datetime
    event_history: EventHistory = field(default_factory=EventHistory)


@dataclass(frozen=True)
class Erased:
    """What erasing a person removed: the profile, its merged ids, how many events."""

    profile_id: str
    aliases: list[str]
    events: int


@dataclass(frozen=True)
class Recorded:
    """What storing an event found.

    `pending` is the event the hot session must still take: this one when
    it is new, the stored one when an earlier try stored it but never got
    as far as the session (a crash, a lost connection). None for a plain
    duplicate, which must not count again.
    """

    profile_id: str
    duplicate: bool
    pending: EventData | None


@dataclass(frozen=True)
class IdentifyResult:
    """The outcome of resolving identities."""

    profile: ProfileRecord
    created: bool
    merged_ids: list[str]
    refused: list[identity.Refusal] = field(default_factory=list)
    """Identities left out under the identity rules, with the reason."""
    wrote: bool = False
    """Something was stored (a profile, identities, a merge): the feed has a record."""


def new_profile_id() -> str:
    """A fresh, opaque profile id."""
    return uuid.uuid4().hex


@functools.cache
def _known_profile_query(count: int) -> Select[Any]:
    """Profile and all its identities, found by any of `count` identities.

    Built once per count from Core tables with bound parameters: building
    an ORM statement per call cost more than running it.
    """
    profile = ProfileRow.__table__  # type: ignore[attr-defined]
    match = IdentityRow.__table__.alias("match")  # type: ignore[attr-defined]
    owned = IdentityRow.__table__.alias("owned")  # type: ignore[attr-defined]
    condition = or_(
        *(
            and_(match.c.id_type == bindparam(f"t{i}"), match.c.id_value == bindparam(f"v{i}"))
            for i in range(count)
        )
    )
    return (
        sa_select(
            profile.c.profile_id,
            profile.c.traits,
            profile.c.history,
            profile.c.event_history,
            profile.c.created_at,
            profile.c.updated_at,
            owned.c.id_type,
            owned.c.id_value,
            owned.c.created_at.label("identity_created_at"),
        )
        .select_from(profile)
        .join(match, match.c.profile_id == profile.c.profile_id)
        .join(owned, owned.c.profile_id == profile.c.profile_id)
        .where(condition)
    )


@functools.cache
def _driver_sql(dialect: Dialect, statement: Select[Any]) -> tuple[str, Sequence[str] | None]:
    """A statement as the driver takes it: SQL text, and the order of its
    parameters for a positional paramstyle (None for named)."""
    compiled = statement.compile(dialect=dialect)
    return str(compiled), compiled.positiontup


def _json_value(raw: Any) -> Any:
    """A JSON column as the driver gave it: text (SQLite) or already decoded."""
    return jsoncodec.loads(raw) if isinstance(raw, str | bytes) else raw


DECODED_EVENT_HISTORIES = 1024
"""Stored event histories kept decoded, by their stored text (`_event_history_of`)."""
DECODED_EVENT_HISTORY_CHARS = 8192
"""Longest stored text kept decoded (a few dozen series-days): with the count above,
a few tens of MB at most; longer histories are decoded at each read."""
_decoded_event_histories: dict[str, EventHistory] = {}


def _event_history_of(raw: Any) -> EventHistory:
    """An event history column as the driver gave it, decoded.

    Text (SQLite) is decoded once per distinct text: a profile read again
    and again without a new event between (every Decide of a visitor
    reads it) has the very same stored text, and decoding it cost more
    than the query. Histories are immutable values, so one serves every
    read of that text.
    """
    if not isinstance(raw, str):
        return event_history_from_json(_json_value(raw))
    known = _decoded_event_histories.get(raw)
    if known is None:
        known = event_history_from_json(jsoncodec.loads(raw))
        if len(raw) > DECODED_EVENT_HISTORY_CHARS:
            return known
        if len(_decoded_event_histories) >= DECODED_EVENT_HISTORIES:
            del _decoded_event_histories[next(iter(_decoded_event_histories))]
        _decoded_event_histories[raw] = known
    return known


KNOWN_PROFILES = 2048
"""Profiles a store keeps decoded beside the rows they were read as (`_resolve_known`)."""
KNOWN_CHARS = 16_384
"""Most text (traits, histories) a profile kept decoded may hold: with the count above,
some 30 MB at most; a profile holding more is decoded at each read."""


def _stamp(raw: Any) -> dt.datetime:
    """A timestamp column as the driver gave it: ISO text (SQLite) or a datetime, as UTC."""
    return _utc(dt.datetime.fromisoformat(raw) if isinstance(raw, str) else raw)


def _stored_event(row: LogRow | Any) -> EventData:
    """The event a log row (or a row of `_STORED_EVENTS`) holds, as it was accepted."""
    return EventData(
        event_id=row.event_id or "",
        type=row.type,
        timestamp=_utc(row.ts),
        channel=row.channel,
        profile_id=row.profile_id,
        identities=[IdentityKey(t, v) for t, v in row.identities],
        properties=dict(row.properties),
    )


def profile_snapshot(row: ProfileRow, identities: Iterable[IdentityKey]) -> LogRow:
    """The feed record of a profile's traits and identity types as they are now.

    Written in the transaction of every change to them (docs/change-feed.md,
    "profile" records), so the latest one of a profile is its whole state.
    Identity types only, never values: a consumer needs no more.
    """
    return LogRow(
        kind="profile",
        profile_id=row.profile_id,
        ts=_utc(row.created_at),
        properties={
            "traits": dict(row.traits),
            "identity_types": sorted({key.type for key in identities}),
        },
    )


_PROFILE = ProfileRow.__table__  # type: ignore[attr-defined]
_ALIAS = AliasRow.__table__  # type: ignore[attr-defined]
_IDENTITY = IdentityRow.__table__  # type: ignore[attr-defined]
_LOG = LogRow.__table__  # type: ignore[attr-defined]

# The reads of GetProfile by id, run on the driver as `_known_rows` is.
_PROFILE_BY_ID = sa_select(
    _PROFILE.c.profile_id,
    _PROFILE.c.traits,
    _PROFILE.c.history,
    _PROFILE.c.event_history,
    _PROFILE.c.created_at,
    _PROFILE.c.updated_at,
).where(_PROFILE.c.profile_id == bindparam("id"))
_ALIAS_TARGET = sa_select(_ALIAS.c.profile_id).where(_ALIAS.c.alias_id == bindparam("id"))
_IDENTITIES_OF = sa_select(_IDENTITY.c.id_type, _IDENTITY.c.id_value, _IDENTITY.c.created_at).where(
    _IDENTITY.c.profile_id == bindparam("id")
)
"""A profile's identities, in the order the ORM read of `_record` finds them."""


# Statements of the batched write path. Each runs on the DBAPI cursor of the
# transaction's connection, compiled once per dialect (`storage.prepared`): for
# these small statements, run once or twice per batch, SQLAlchemy's
# execution layers (parameter processing, expanding lists, result rows)
# cost more than the database did.


def _owners(count: int | None) -> Any:
    """Identities of one type by value: a search of the identity key per value. (A row-value
    `(id_type, id_value) IN (...)` made SQLite scan the whole identity table.)"""
    return sa_select(_IDENTITY.c.id_value, _IDENTITY.c.profile_id).where(
        _IDENTITY.c.id_type == bindparam("type", type_=_IDENTITY.c.id_type.type),
        in_list(_IDENTITY.c.id_value, count),
    )


_STORED_COLUMNS = (
    _LOG.c.event_id,
    _LOG.c.profile_id,
    _LOG.c.applied,
    _LOG.c.type,
    _LOG.c.ts,
    _LOG.c.channel,
    _LOG.c.properties,
    _LOG.c.identities,
)


def _lock_profiles(count: int | None, purchases: bool) -> Any:
    """The profiles written, locked in id order; the purchase history only when a
    purchase is among the events (otherwise it is neither changed nor decoded)."""
    columns = [_PROFILE.c.profile_id, _PROFILE.c.event_history]
    if purchases:
        columns.append(_PROFILE.c.history)
    return (
        sa_select(*columns)
        .where(in_list(_PROFILE.c.profile_id, count))
        .order_by(_PROFILE.c.profile_id)
        .with_for_update()  # PostgreSQL; SQLite has one writer and renders none
    )


_IN_STATEMENTS: dict[str, Callable[[int | None], Any]] = {
    "profiles": lambda n: sa_select(_PROFILE.c.profile_id).where(in_list(_PROFILE.c.profile_id, n)),
    "aliases": lambda n: sa_select(_ALIAS.c.alias_id, _ALIAS.c.profile_id).where(
        in_list(_ALIAS.c.alias_id, n)
    ),
    "stored": lambda n: sa_select(*_STORED_COLUMNS).where(in_list(_LOG.c.event_id, n)),
    "lock": lambda n: _lock_profiles(n, purchases=False),
    "lock-purchases": lambda n: _lock_profiles(n, purchases=True),
    "mark-applied": lambda n: (
        update(_LOG)
        .where(in_list(_LOG.c.event_id, n), _LOG.c.applied.is_(False))
        .values(applied=bindparam("applied", type_=_LOG.c.applied.type))
    ),
}
"""The write path's statements over a list of ids, by name, for a number of ids."""

_UPDATE_EVENT_HISTORY = (
    update(_PROFILE)
    .where(_PROFILE.c.profile_id == bindparam("owner", type_=_PROFILE.c.profile_id.type))
    .values(
        event_history=bindparam("new_event_history", type_=_PROFILE.c.event_history.type),
        updated_at=bindparam("now", type_=_PROFILE.c.updated_at.type),
    )
)
_UPDATE_HISTORIES = _UPDATE_EVENT_HISTORY.values(
    history=bindparam("new_history", type_=_PROFILE.c.history.type)
)


_LOG_COLUMNS = (
    "kind",
    "event_id",
    "profile_id",
    "type",
    "channel",
    "ts",
    "properties",
    "identities",
    "applied",
)
"""The columns a new event's log row is inserted with (`_log_row` gives them, in order),
in table order (the order SQLAlchemy writes them in)."""
INSERT_ROWS = 250
"""Most log rows one INSERT statement carries."""


@dataclass(frozen=True)
class _LogInsert:
    """Inserting log rows, leaving out (not failing on) an event_id stored already,
    returning the event_ids inserted: one statement for many rows.

    The one-row statement is compiled once per dialect; a statement of n
    rows repeats its VALUES group n times (with the parameters of each row
    renamed for a named paramstyle), as SQLAlchemy's own insert of many
    values does.
    """

    head: str
    group: str
    tail: str
    named: bool
    processors: tuple[Callable[[Any], Any] | None, ...]
    """The conversion of each of `_LOG_COLUMNS`, in order."""

    @classmethod
    def of(cls, dialect: Dialect) -> _LogInsert:
        insert = postgresql_insert if dialect.name == "postgresql" else sqlite_insert
        statement = (
            insert(_LOG)
            .values({c: bindparam(c, type_=_LOG.c[c].type) for c in _LOG_COLUMNS})
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(_LOG.c.event_id)
        )
        one_row = Prepared.of(statement, dialect)
        head, rest = one_row.sql.split(" VALUES ", 1)
        group, tail = rest.split(" ON CONFLICT ", 1)
        if dialect.paramstyle not in ("qmark", "format", "pyformat"):
            raise RuntimeError(
                "the log insert takes the qmark, format or pyformat paramstyle, "
                f"not {dialect.paramstyle}"
            )
        named = one_row.order is None
        if named and any(group.count(f"%({c})s") != 1 for c in _LOG_COLUMNS):
            raise RuntimeError(f"the log insert compiled to an unexpected VALUES group {group!r}")
        if not named and one_row.order != _LOG_COLUMNS:
            raise RuntimeError(f"the log insert compiled to an unexpected order {one_row.order!r}")
        processors = tuple(one_row.processors.get(c) for c in _LOG_COLUMNS)
        return cls(head, group, f" ON CONFLICT {tail}", named, processors)

    def row_group(self, row: int) -> str:
        group = self.group
        if self.named:
            for c in _LOG_COLUMNS:
                group = group.replace(f"%({c})s", f"%({c}_{row})s")
        return group

    def sql(self, count: int) -> str:
        return _insert_sql(self, count)

    def args(self, rows: Sequence[Sequence[Any]]) -> Any:
        """The driver's parameters for `rows` (values of `_LOG_COLUMNS`, in order)."""
        flat = [
            value if process is None else process(value)
            for row in rows
            for value, process in zip(row, self.processors, strict=True)
        ]
        if not self.named:
            return flat
        width = len(_LOG_COLUMNS)
        return {f"{_LOG_COLUMNS[k % width]}_{k // width}": value for k, value in enumerate(flat)}


@functools.lru_cache(maxsize=2 * INSERT_ROWS)
def _insert_sql(insert: _LogInsert, count: int) -> str:
    groups = [insert.group] * count if not insert.named else map(insert.row_group, range(count))
    return f"{insert.head} VALUES {', '.join(groups)}{insert.tail}"


@functools.cache
def _log_insert(dialect: Dialect) -> _LogInsert:
    return _LogInsert.of(dialect)


@functools.cache
def _log_unnest(dialect: Dialect) -> tuple[str, tuple[Callable[[Any], Any] | None, ...]]:
    """PostgreSQL's insert of log rows: one array per column, rows from `unnest`; a
    short text whatever the number of rows, which the driver converts once and the
    server prepares (a VALUES group per row made texts too long for either). Strings
    go as unbounded text: the column's length is checked when the row is stored, as
    for any insert. With the conversion of each column's values, as `_LogInsert`."""
    kinds = []
    for name in _LOG_COLUMNS:
        kind = _LOG.c[name].type
        kinds.append("TEXT" if holds_text(kind) else kind.compile(dialect=dialect))
    arrays = ", ".join(f"%({c})s::{k}[]" for c, k in zip(_LOG_COLUMNS, kinds, strict=True))
    sql = (
        f"INSERT INTO {_LOG.name} ({', '.join(_LOG_COLUMNS)}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )
    return sql, _log_insert(dialect).processors


def _insert_log_rows(cursor: Any, dialect: Dialect, rows: Sequence[Sequence[Any]]) -> set[str]:
    """Insert new events' log rows (`_log_row`); the event_ids inserted (not stored before)."""
    if not rows:
        return set()
    if dialect.name == "postgresql":
        sql, processors = _log_unnest(dialect)
        columns = {
            name: [v if process is None else process(v) for v in values]
            for name, process, values in zip(
                _LOG_COLUMNS, processors, zip(*rows, strict=True), strict=True
            )
        }
        cursor.execute(sql, columns)
        return {row[0] for row in cursor.fetchall()}
    insert = _log_insert(dialect)
    inserted: set[str] = set()
    for start in range(0, len(rows), INSERT_ROWS):
        part = rows[start : start + INSERT_ROWS]
        cursor.execute(insert.sql(len(part)), insert.args(part))
        inserted.update(row[0] for row in cursor.fetchall())
    return inserted


def _canonical_ids(cursor: Any, dialect: Dialect, profile_ids: Collection[str]) -> dict[str, str]:
    """The canonical id of each profile id or merged id; unknown ids are left out."""
    if not profile_ids:
        return {}
    found = {
        row[0]: row[0]
        for row in run_in(cursor, dialect, _IN_STATEMENTS["profiles"], list(profile_ids))
    }
    rest = [p for p in profile_ids if p not in found]
    if rest:
        found.update((a, p) for a, p in run_in(cursor, dialect, _IN_STATEMENTS["aliases"], rest))
    return found


@dataclass(frozen=True)
class _StoredRow:
    """A stored event's log row, decoded (`_stored_events`)."""

    event_id: str
    profile_id: str
    applied: bool
    type: str
    ts: dt.datetime
    channel: int
    properties: dict[str, Any]
    identities: list[list[str]]


def _stored_events(cursor: Any, dialect: Dialect, event_ids: Sequence[str]) -> dict[str, Any]:
    """The log rows of those of `event_ids` that are stored, by event_id."""
    if not event_ids:
        return {}
    rows = run_in(cursor, dialect, _IN_STATEMENTS["stored"], event_ids)
    return {
        event_id: _StoredRow(
            event_id,
            profile_id,
            bool(applied),
            event_type,
            _stamp(ts),
            channel,
            _json_value(properties),
            _json_value(identities),
        )
        for event_id, profile_id, applied, event_type, ts, channel, properties, identities in rows
    }


def _log_row(event: EventData, owner: str) -> tuple[Any, ...]:
    """The log row of a new event (not yet applied) on profile `owner`: `_LOG_COLUMNS`."""
    return (
        "event",
        event.event_id,
        owner,
        event.type,
        event.channel,
        event.timestamp,
        event.properties,
        [[k.type, k.value] for k in event.identities],
        False,
    )


def _folded(
    profile_id: str,
    stored: list[dict[str, Any]] | None,
    history: Any,
    events: Sequence[EventData],
    now: dt.datetime,
) -> dict[str, Any]:
    """The `_UPDATE_HISTORIES` parameters of a locked profile after `events`, from its
    decoded event history and its purchase history as the driver gave it (None when
    none of the events is a purchase).

    Each event is added as `Track` of that one event would add it; the JSON
    columns are decoded and encoded once for all of them, and the purchase
    history not at all when none of the events is a purchase.
    """
    values = {
        "owner": profile_id,
        "new_event_history": add_events_stored(stored, events, now),
        "now": now,
    }
    if history is not None and any(changes_history(event) for event in events):
        folded = history_from_json(_json_value(history))
        for event in events:
            folded = add_to_history(folded, event)
        values["new_history"] = history_to_json(folded)
    return values


def _drained(cursor: Any, sql: str, args: Any) -> list[Sequence[Any]]:
    """Every row of `sql` on a DBAPI cursor."""
    cursor.execute(sql, args)
    return list(cursor.fetchall())


WRITTEN_EVENT_HISTORIES = 2048
"""Event histories a store keeps decoded beside the text it last wrote (`ProfileStore`)."""


class _Moved(Exception):
    """Identities moved under us (a concurrent merge); resolve again."""


class ProfileStore:
    """Profiles, identities and events in one SQL database."""

    def __init__(
        self, database: Database, rules: identity.IdentityRules = identity.DEFAULT_RULES
    ) -> None:
        self.database = database
        self.engine = database.engine
        self.rules = rules
        self._reader: Any = None
        """The pooled connection of `_read` (embedded database only)."""
        self._known: dict[str, tuple[list[Sequence[Any]], set[tuple[str, str]], ProfileRecord]] = {}
        """Profiles `_resolve_known` decoded, by id: the rows read, the identities they
        hold and the record built from them (see `_resolve_known`)."""
        self._by_id: dict[str, tuple[tuple[Any, list[Sequence[Any]]], ProfileRecord]] = {}
        """Profiles `get` decoded, by id: the rows read and the record built from them."""
        self._written: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        """Event histories last written, by profile: the stored text and the value it
        was written from (`_event_history_to_fold`)."""

    # Reads

    def _canonical(self, session: Session, profile_id: str) -> str | None:
        # Whether the row exists, not the row: loading it would decode its
        # JSON columns (the event history among them) for nothing.
        exists = select(ProfileRow.profile_id).where(ProfileRow.profile_id == profile_id)
        if session.exec(exists).first() is not None:
            return profile_id
        alias = session.get(AliasRow, profile_id)
        return alias.profile_id if alias else None

    def _record(self, session: Session, row: ProfileRow) -> ProfileRecord:
        identities = session.exec(
            select(IdentityRow).where(IdentityRow.profile_id == row.profile_id)
        ).all()
        return ProfileRecord(
            row.profile_id,
            [
                IdentityKey(i.id_type, i.id_value)
                for i in sorted(identities, key=lambda i: i.created_at)
            ],
            dict(row.traits),
            history_from_json(row.history),
            _utc(row.created_at),
            _utc(row.updated_at),
            event_history_from_json(row.event_history),
        )

    def _lock_canonical(self, session: Session, profile_id: str) -> ProfileRow | None:
        """The canonical profile row of an id or alias, locked for update.

        A merge may delete the profile between resolving the id and taking
        the lock; then the id is an alias by the time we look again.
        """
        for _ in range(3):
            canonical = self._canonical(session, profile_id)
            if canonical is None:
                return None
            row = session.get(ProfileRow, canonical, with_for_update=True, populate_existing=True)
            if row is not None:
                return row
            session.expire_all()
        return None

    def canonical_id(self, profile_id: str) -> str:
        """The canonical id of a profile id or alias; NOT_FOUND otherwise."""
        with Session(self.engine) as session:
            canonical = self._canonical(session, profile_id)
        if canonical is None:
            raise NotFound(f"no profile {profile_id!r}", field="profile_id")
        return canonical

    def get(self, profile_id: str) -> ProfileRecord:
        """The profile behind a canonical id or alias.

        Read on the driver like `_resolve_known` (the ORM's session cost
        ten times the queries): the profile row, else the alias's target's,
        then its identities, on one connection. A profile read again as the
        very same rows (embedded database) is the record decoded from them
        last time.
        """
        connection = None if self.database.inline else self.engine.raw_connection()
        try:
            rows = self._rows(_PROFILE_BY_ID, {"id": profile_id}, connection)
            if not rows:
                target = self._rows(_ALIAS_TARGET, {"id": profile_id}, connection)
                if target:
                    rows = self._rows(_PROFILE_BY_ID, {"id": target[0][0]}, connection)
            if not rows:
                raise NotFound(f"no profile {profile_id!r}", field="profile_id")
            row = rows[0]
            identities = self._rows(_IDENTITIES_OF, {"id": row[0]}, connection)
        finally:
            if connection is not None:
                connection.close()
        seen = (row, identities)
        known = self._by_id.get(row[0])
        if known is not None and known[0] == seen:
            return known[1]
        record = ProfileRecord(
            row[0],
            # By when each was attached; ties as the database listed them.
            [IdentityKey(t, v) for t, v, _ in sorted(identities, key=lambda i: _stamp(i[2]))],
            dict(_json_value(row[1])),
            history_from_json(_json_value(row[2])),
            _stamp(row[4]),
            _stamp(row[5]),
            _event_history_of(row[3]),
        )
        texts = row[1:4]
        if all(isinstance(t, str) for t in texts) and sum(map(len, texts)) <= KNOWN_CHARS:
            by_id = self._by_id
            by_id.pop(row[0], None)
            if len(by_id) >= KNOWN_PROFILES:
                del by_id[next(iter(by_id))]  # the least recently decoded
            by_id[row[0]] = (seen, record)
        return record

    def _rows(
        self, statement: Select[Any], params: dict[str, Any], connection: Any = None
    ) -> list[Sequence[Any]]:
        """The rows of a read, straight from the driver (see `_known_rows`): on the
        embedded database's reader, else on `connection` (a pooled DBAPI connection
        of the caller's) or one checked out for this read."""
        sql, order = _driver_sql(self.engine.dialect, statement)
        args = params if order is None else [params[n] for n in order]
        if connection is not None and not self.database.inline:
            cursor = connection.cursor()
            try:
                return _drained(cursor, sql, args)
            finally:
                cursor.close()
        return self._read(lambda cursor: _drained(cursor, sql, args))

    def get_by_identity(self, key: IdentityKey) -> ProfileRecord:
        """The profile an identity is attached to."""
        record = self._resolve_known([key])
        if record is None:
            raise NotFound(f"no profile with identity {key.type}", field="identity")
        return record

    def owners(self, keys: Collection[IdentityKey]) -> dict[IdentityKey, str]:
        """The profile each identity is attached to; identities of no profile are left out.

        One query for a whole batch of events: what `Track` of an event sent
        with identities resolves, for the common case of identities seen before.
        """
        by_type: dict[str, list[str]] = {}
        for key in keys:
            by_type.setdefault(key.type, []).append(key.value)
        found: dict[IdentityKey, str] = {}
        if not by_type:
            return found
        dialect = self.engine.dialect

        def read(cursor: Any) -> None:
            for id_type, values in by_type.items():
                rows = run_in(cursor, dialect, _owners, values, type=id_type)
                found.update((IdentityKey(id_type, v), profile_id) for v, profile_id in rows)

        self._read(read)
        return found

    # Writes

    def identify(self, keys: list[IdentityKey]) -> IdentifyResult:
        """Resolve identities to one profile, creating or merging as needed.

        Under the identity rules (`self.rules`, docs/identity.md): what would
        give a profile more identities of a type than its limit is refused
        for the lower-priority identity and reported. Most calls (every
        Decide of a known visitor) change nothing, so a single read-only
        query answers them; only a new identity, a new person or a merge
        takes the writing path. Concurrent writers may race
        to attach the same new identity; the loser sees an integrity error
        and resolves again, now finding the winner.
        """
        known = self._resolve_known(keys)
        if known is not None:
            return IdentifyResult(known, False, [])
        for attempt in range(MAX_IDENTIFY_ATTEMPTS):
            try:
                return self._identify_once(keys)
            except (IntegrityError, OperationalError, StaleDataError, _Moved):
                # Another writer got there first (same new identity, a merge
                # of the same profiles, a deadlock victim): resolve again.
                if attempt == MAX_IDENTIFY_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")

    def _resolve_known(self, keys: list[IdentityKey]) -> ProfileRecord | None:
        """The profile when every identity is already on one and the same profile.

        A profile read again unchanged (every Decide of a returning visitor)
        comes back as the very same rows: on the embedded database, where
        rows hold text, the record decoded from those rows last time is
        served again, equal to what decoding them afresh gives. Decoded
        values (PostgreSQL's JSON) are decoded each time: `1 == 1.0 == True`
        would let rows that differ pass for the same. A record is an
        immutable value to its readers, so one serves them all.
        """
        if len(keys) == 1:
            key = keys[0]
            wanted = {(key.type, key.value)}
            params = {"t0": key.type, "v0": key.value}
        else:
            wanted = {(k.type, k.value) for k in keys}
            params = {f"t{i}": t for i, (t, _) in enumerate(wanted)}
            params.update({f"v{i}": v for i, (_, v) in enumerate(wanted)})
        rows = self._known_rows(params, len(wanted))
        if not rows:
            return None
        known = self._known.get(rows[0][0])
        if known is not None and known[0] == rows:
            _, held, record = known
        else:
            decoded = self._decode_known(rows)
            if decoded is None:
                return None
            held, record = decoded
        return record if wanted <= held else None

    def _decode_known(
        self, rows: list[Sequence[Any]]
    ) -> tuple[set[tuple[str, str]], ProfileRecord] | None:
        """The identities and record of `_known_rows`; None when they span profiles."""
        if len({row[0] for row in rows}) != 1:
            return None
        identities = sorted({(_stamp(row[8]), row[6], row[7]) for row in rows})
        held = {(t, v) for _, t, v in identities}
        profile_id, traits, history, event_history, created_at, updated_at = rows[0][:6]
        record = ProfileRecord(
            profile_id,
            [IdentityKey(t, v) for _, t, v in identities],
            dict(_json_value(traits)),
            history_from_json(_json_value(history)),
            _stamp(created_at),
            _stamp(updated_at),
            _event_history_of(event_history),
        )
        texts = (traits, history, event_history)
        if all(isinstance(t, str) for t in texts) and sum(map(len, texts)) <= KNOWN_CHARS:
            known = self._known
            known.pop(profile_id, None)
            if len(known) >= KNOWN_PROFILES:
                del known[next(iter(known))]  # the least recently decoded
            known[profile_id] = (rows, held, record)
        return held, record

    def _known_rows(self, params: dict[str, str], count: int) -> list[Sequence[Any]]:
        """The rows of `_known_profile_query(count)`, straight from the driver.

        The read behind every GetProfile by identity and every Decide of a
        known visitor: SQLAlchemy's execution and result layers cost several
        times the query itself, so the statement is compiled once per
        dialect and run on the pooled DBAPI connection; `_json_value` and
        `_stamp` read what the driver gives.
        """
        return self._rows(_known_profile_query(count), params)

    def _read(self, read: Callable[[Any], _T]) -> _T:
        """`read(cursor)`, on a DBAPI cursor of a pooled connection, drained and closed.

        On the embedded database, a connection kept for these reads: inline
        calls run one at a time on the event loop, so one connection serves
        them all; checking one out of the pool and back (a rollback on
        return) cost more than the query. Nothing is held between reads: the
        cursor is drained and closed, so no snapshot stays open.
        """
        if not self.database.inline:
            connection = self.engine.raw_connection()
            try:
                cursor = connection.cursor()
                try:
                    return read(cursor)
                finally:
                    cursor.close()
            finally:
                connection.close()
        if self._reader is None:
            self._reader = self.engine.raw_connection()
        try:
            cursor = self._reader.cursor()
            try:
                return read(cursor)
            finally:
                cursor.close()
        except Exception:
            reader, self._reader = self._reader, None
            reader.invalidate()  # a broken connection is not kept
            raise

    def _identities(self, session: Session, keys: list[IdentityKey]) -> list[IdentityRow]:
        condition = or_(
            *(
                and_(col(IdentityRow.id_type) == k.type, col(IdentityRow.id_value) == k.value)
                for k in keys
            )
        )
        query = select(IdentityRow).where(condition).execution_options(populate_existing=True)
        return list(session.exec(query).all())

    def _held(self, session: Session, profile_ids: Sequence[str]) -> dict[str, list[IdentityKey]]:
        """Every identity each of `profile_ids` holds."""
        held: dict[str, list[IdentityKey]] = {p: [] for p in profile_ids}
        if profile_ids:
            rows = session.exec(
                select(IdentityRow)
                .where(col(IdentityRow.profile_id).in_(profile_ids))
                .execution_options(populate_existing=True)
            ).all()
            for row in rows:
                held[row.profile_id].append(IdentityKey(row.id_type, row.id_value))
        return held

    def _plan(self, session: Session, keys: list[IdentityKey]) -> identity.Plan:
        """What resolving `keys` does under the rules, from the rows as they are now."""
        found = self._identities(session, keys)
        owners = {IdentityKey(i.id_type, i.id_value): i.profile_id for i in found}
        held = self._held(session, sorted(set(owners.values())))
        return identity.plan(self.rules, keys, owners, held)

    def _identify_once(self, keys: list[IdentityKey]) -> IdentifyResult:
        with Session(self.engine) as session:
            plan = self._plan(session, keys)
            if not plan.changes:
                # Nothing to write (a refused identity stays where it is):
                # answered from this read, without a lock. A kiosk's device
                # seen with a known user_id takes this path every time.
                row = session.get(ProfileRow, plan.profiles[0])
                if row is None:
                    raise _Moved()
                return IdentifyResult(self._record(session, row), False, [], list(plan.refused))
            involved = sorted(plan.profiles)
            # Lock the profiles the plan writes, in id order so two merges
            # never deadlock; then plan again from what is there now: a
            # merge that committed while we waited may have moved identities.
            # Profiles of refused identities are not written, so not locked.
            rows = list(
                session.exec(
                    select(ProfileRow)
                    .where(col(ProfileRow.profile_id).in_(involved))
                    .order_by(ProfileRow.profile_id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                ).all()
            )
            plan = self._plan(session, keys)
            if len(rows) != len(involved) or sorted(plan.profiles) != involved:
                raise _Moved()
            now = _now()
            created = False
            merged: list[str] = []
            if not rows:
                survivor = ProfileRow(profile_id=new_profile_id(), created_at=now, updated_at=now)
                session.add(survivor)
                created = True
            else:
                # The oldest profile survives: it carries the longest history
                # and the id other systems have most likely stored.
                rows.sort(key=lambda r: (_utc(r.created_at), r.profile_id))
                survivor, others = rows[0], rows[1:]
                for other in others:
                    self._merge_into(session, survivor, other, now)
                    merged.append(other.profile_id)
            for key in plan.attach:
                session.add(
                    IdentityRow(
                        id_type=key.type,
                        id_value=key.value,
                        profile_id=survivor.profile_id,
                        created_at=now,
                    )
                )
            survivor.updated_at = now
            session.add(survivor)
            session.flush()
            # The answer is read inside the transaction: once it commits, a
            # concurrent merge may fold the survivor into an older profile at
            # once (its id then resolves as an alias), so it cannot be read back.
            record = self._record(session, survivor)
            # After the merge records (a higher row id): the survivor's state.
            session.add(profile_snapshot(survivor, record.identities))
            session.commit()
            return IdentifyResult(record, created, merged, list(plan.refused), wrote=True)

    def _merge_into(
        self, session: Session, survivor: ProfileRow, other: ProfileRow, now: dt.datetime
    ) -> None:
        """Fold `other` into `survivor`: identities, events, aliases, traits, history."""
        session.execute(
            update(IdentityRow)
            .where(col(IdentityRow.profile_id) == other.profile_id)
            .values(profile_id=survivor.profile_id)
        )
        session.execute(
            update(LogRow)
            .where(col(LogRow.profile_id) == other.profile_id)
            .values(profile_id=survivor.profile_id)
        )
        session.execute(
            update(AliasRow)
            .where(col(AliasRow.profile_id) == other.profile_id)
            .values(profile_id=survivor.profile_id)
        )
        session.add(AliasRow(alias_id=other.profile_id, profile_id=survivor.profile_id))
        self._written.pop(other.profile_id, None)  # its row goes: nothing to reuse
        # The survivor's traits win; the merged profile only fills gaps. Sticky
        # variants keep the person's earliest exposure (tessera.sticky).
        survivor.traits = sticky.merge_traits(survivor.traits, other.traits)
        survivor.history = history_to_json(
            merge_histories(history_from_json(survivor.history), history_from_json(other.history))
        )
        survivor.event_history = event_history_to_json(
            merge_event_histories(
                event_history_from_json(survivor.event_history),
                event_history_from_json(other.event_history),
                now,
            )
        )
        session.add(
            LogRow(
                kind="merge",
                profile_id=survivor.profile_id,
                ts=now,
                properties={"merged_profile_id": other.profile_id},
            )
        )
        session.delete(other)

    def update_traits(self, profile_id: str, patch: dict[str, Any]) -> ProfileRecord:
        """Set traits; a None value removes the trait, a sticky variant keeps its earliest."""
        with Session(self.engine) as session:
            row = self._lock_canonical(session, profile_id)
            if row is None:
                raise NotFound(f"no profile {profile_id!r}", field="profile_id")
            row.traits = sticky.patch_traits(row.traits, patch)
            row.updated_at = _now()
            session.add(row)
            session.flush()
            # Read before the commit: see `_identify_once`.
            record = self._record(session, row)
            session.add(profile_snapshot(row, record.identities))
            session.commit()
            return record

    def record_event(self, event: EventData, profile_id: str) -> Recorded:
        """Append one event to the log (not yet applied) and fold it into history.

        `record_events` of a single event: NOT_FOUND when the profile does not exist.
        """
        (outcome,) = self.record_events([event], [profile_id])
        if isinstance(outcome, NotFound):
            raise outcome
        return outcome

    def record_events(
        self, events: Sequence[EventData], profile_ids: Sequence[str]
    ) -> list[Recorded | NotFound]:
        """Append events to the log (not yet applied) and fold them into history, in one
        transaction; one outcome per event, in order.

        `profile_ids[i]` is the profile (or merged id) event i is for. An event
        whose profile does not exist gets NotFound and changes nothing; the
        others are stored. An event_id stored before (or earlier in the same
        batch) is a duplicate: it changes nothing and reports the profile it
        was stored on and, when the session never took it, the stored event.
        A merge committing meanwhile makes the batch start again, as does a
        deadlock with another writer (PostgreSQL picks a victim).
        """
        for attempt in range(MAX_IDENTIFY_ATTEMPTS):
            try:
                return self._record_events_once(events, profile_ids)
            except (OperationalError, _Moved):
                if attempt == MAX_IDENTIFY_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")

    def _record_events_once(
        self, events: Sequence[EventData], profile_ids: Sequence[str]
    ) -> list[Recorded | NotFound]:
        outcomes: list[Recorded | NotFound | None] = [None] * len(events)
        dialect = self.engine.dialect
        written: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        with self.engine.begin() as connection:
            cursor = connection.connection.cursor()
            try:
                repeats = self._record_on(cursor, dialect, events, profile_ids, outcomes, written)
            finally:
                cursor.close()
        self._remember_written(written)
        for index, original in repeats:
            done = outcomes[original]
            assert isinstance(done, Recorded)
            outcomes[index] = Recorded(done.profile_id, True, None)
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    def _record_on(
        self,
        cursor: Any,
        dialect: Dialect,
        events: Sequence[EventData],
        profile_ids: Sequence[str],
        outcomes: list[Recorded | NotFound | None],
        written: dict[str, tuple[Any, list[dict[str, Any]]]],
    ) -> list[tuple[int, int]]:
        """`_record_events_once` inside its transaction, on its DBAPI cursor: fills
        `outcomes` but for the repeats of an event_id (returned as (index, index of
        the first)), and `written` with the event histories written."""
        canonical = _canonical_ids(cursor, dialect, set(profile_ids))
        # The first occurrence of each event_id is the one stored; a later
        # one in the same batch is its duplicate (as if sent after it).
        first: dict[str, int] = {}
        repeats: list[tuple[int, int]] = []
        for index, (event, profile_id) in enumerate(zip(events, profile_ids, strict=True)):
            if profile_id not in canonical:
                outcomes[index] = NotFound(f"no profile {profile_id!r}", field="event.profile_id")
            elif event.event_id in first:
                repeats.append((index, first[event.event_id]))
            else:
                first[event.event_id] = index
        stored = _stored_events(cursor, dialect, list(first))
        new = [i for i in first.values() if events[i].event_id not in stored]
        # Lock the profiles written, in id order like a merge, so that no
        # merge moves them (nor their events) until this commits.
        owners = sorted({canonical[profile_ids[i]] for i in new})
        purchases = any(changes_history(events[i]) for i in new)
        lock = "lock-purchases" if purchases else "lock"
        rows = (
            {r[0]: r for r in run_in(cursor, dialect, _IN_STATEMENTS[lock], owners)}
            if owners
            else {}
        )
        if len(rows) != len(owners):
            raise _Moved()  # merged or erased since resolved: resolve again
        inserted: set[str] = set()
        if new:
            inserted = _insert_log_rows(
                cursor, dialect, [_log_row(events[i], canonical[profile_ids[i]]) for i in new]
            )
        if len(inserted) != len(new):
            # Stored by a concurrent writer between our read and our insert.
            lost = [events[i].event_id for i in new if events[i].event_id not in inserted]
            stored.update(_stored_events(cursor, dialect, lost))
        by_owner: dict[str, list[EventData]] = {}
        for index in new:
            event = events[index]
            if event.event_id in inserted:
                owner = canonical[profile_ids[index]]
                by_owner.setdefault(owner, []).append(event)
                outcomes[index] = Recorded(owner, False, event)
        now = _now()
        folded = [
            _folded(
                owner,
                self._event_history_to_fold(owner, rows[owner][1]),
                rows[owner][2] if purchases else None,
                taken,
                now,
            )
            for owner, taken in by_owner.items()
        ]
        for statement, with_history in ((_UPDATE_HISTORIES, True), (_UPDATE_EVENT_HISTORY, False)):
            chosen = [f for f in folded if ("new_history" in f) == with_history]
            if not chosen:
                continue
            update_rows = prepared(dialect, statement)
            args = []
            for values in chosen:
                decoded = values["new_event_history"]
                values["new_event_history"] = update_rows.encode("new_event_history", decoded)
                written[values["owner"]] = (values["new_event_history"], decoded)
                args.append(update_rows.args(values, encoded=("new_event_history",)))
            cursor.executemany(update_rows.sql, args)
        earlier = [s.profile_id for s in stored.values()]
        stored_owners = _canonical_ids(cursor, dialect, set(earlier) - set(canonical))
        stored_owners.update(canonical)
        for event_id, index in first.items():
            if outcomes[index] is None:
                row = stored[event_id]
                pending = None if row.applied else _stored_event(row)
                owner = stored_owners.get(row.profile_id, row.profile_id)
                outcomes[index] = Recorded(owner, True, pending)
        return repeats

    def _event_history_to_fold(self, profile_id: str, raw: Any) -> list[dict[str, Any]] | None:
        """A locked profile's stored event history, decoded, for `add_events_stored`
        (which may change it in place).

        When the stored text is the very text this store last wrote for the
        profile (the common case: one replica writing its visitors), the
        value it was written from is taken instead of decoding the text
        again. It is taken out, not shared: it is put back, changed, only
        once the transaction that changes it has committed
        (`_remember_written`).
        """
        if isinstance(raw, str):
            known = self._written.pop(profile_id, None)
            if known is not None and known[0] == raw:
                return known[1]
        value: list[dict[str, Any]] | None = _json_value(raw)
        return value

    def _remember_written(self, written: dict[str, tuple[Any, list[dict[str, Any]]]]) -> None:
        """Keep the event histories a committed transaction wrote as text, by profile."""
        kept = self._written
        for profile_id, (stored, decoded) in written.items():
            if not isinstance(stored, str) or len(stored) > DECODED_EVENT_HISTORY_CHARS:
                continue
            kept.pop(profile_id, None)
            if len(kept) >= WRITTEN_EVENT_HISTORIES:
                del kept[next(iter(kept))]  # the least recently written
            kept[profile_id] = (stored, decoded)

    # The conversion model

    def save_model(
        self,
        model: ConversionModel,
        goal: str,
        trained_at: dt.datetime,
        *,
        auc: float,
        calibration_error: float,
        examples: int,
        held_out: int,
    ) -> None:
        """Store a trained model; running services pick it up at their next poll."""
        with Session(self.engine) as session:
            session.add(
                ModelRow(
                    version=model.version,
                    goal=goal,
                    trained_at=trained_at,
                    intercept=model.intercept,
                    weights=dict(model.weights),
                    auc=auc,
                    calibration_error=calibration_error,
                    examples=examples,
                    held_out=held_out,
                )
            )
            try:
                session.commit()
            except IntegrityError:
                raise AlreadyExists(
                    f"a model {model.version!r} is stored already", field="version"
                ) from None

    def latest_model(self, goal: str) -> ConversionModel | None:
        """The newest trained model for `goal`, or None when none was trained."""
        table = ModelRow.__table__  # type: ignore[attr-defined]
        query = (
            sa_select(table.c.version, table.c.intercept, table.c.weights)
            .where(table.c.goal == goal)
            .order_by(table.c.trained_at.desc(), table.c.version.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        weights = {str(k): float(v) for k, v in row.weights.items()}
        return ConversionModel(row.version, float(row.intercept), weights)

    def count_events(self) -> int:
        """Events in the log (what training reads)."""
        with self.engine.connect() as connection:
            count = connection.execute(
                sa_select(func.count()).select_from(LogRow).where(col(LogRow.kind) == "event")
            ).scalar()
        return int(count or 0)

    def events(self, batch: int = 5000) -> Iterator[EventData]:
        """Every stored event, on the profile it belongs to now, streamed in batches."""
        table = LogRow.__table__  # type: ignore[attr-defined]
        query = sa_select(
            table.c.event_id,
            table.c.type,
            table.c.ts,
            table.c.channel,
            table.c.profile_id,
            table.c.properties,
        ).where(table.c.kind == "event")
        with self.engine.connect() as connection:
            result = connection.execution_options(yield_per=batch).execute(query)
            for row in result:
                yield EventData(
                    event_id=row.event_id or "",
                    type=row.type,
                    timestamp=_utc(row.ts),
                    channel=row.channel,
                    profile_id=row.profile_id,
                    properties=dict(row.properties),
                )

    def mark_applied(self, event_ids: Sequence[str]) -> None:
        """Record that the hot sessions have taken the events: retries are duplicates now."""
        if not event_ids:
            return
        with self.engine.begin() as connection:
            cursor = connection.connection.cursor()
            try:
                run_in(
                    cursor,
                    self.engine.dialect,
                    _IN_STATEMENTS["mark-applied"],
                    event_ids,
                    applied=True,
                )
            finally:
                cursor.close()

    def delete_profile(self, profile_id: str) -> Erased:
        """Erase a profile and everything of it, leaving nothing readable on disk."""
        with Session(self.engine) as session:
            row = self._lock_canonical(session, profile_id)
            if row is None:
                raise NotFound(f"no profile {profile_id!r}", field="profile_id")
            canonical = row.profile_id
            aliases = list(
                session.exec(
                    select(AliasRow.alias_id).where(col(AliasRow.profile_id) == canonical)
                ).all()
            )
            # The profile's merge records are erased too, but are not events.
            events = session.execute(
                delete(LogRow).where(
                    col(LogRow.profile_id) == canonical, col(LogRow.kind) == "event"
                )
            )
            session.execute(delete(LogRow).where(col(LogRow.profile_id) == canonical))
            session.execute(delete(IdentityRow).where(col(IdentityRow.profile_id) == canonical))
            session.execute(delete(AliasRow).where(col(AliasRow.profile_id) == canonical))
            session.execute(delete(ProfileRow).where(col(ProfileRow.profile_id) == canonical))
            # The erasure's own feed record: the opaque ids only, so that
            # consumers can remove what they hold under any of them.
            session.add(
                LogRow(
                    kind="deletion",
                    profile_id=canonical,
                    ts=_now(),
                    properties={"merged_profile_ids": sorted(aliases)},
                )
            )
            session.commit()
            self._written.pop(canonical, None)  # nothing of the person stays in memory either
            self.database.scrub()
            return Erased(canonical, aliases, int(events.rowcount or 0))  # type: ignore[attr-defined]

    # Export

    def aliases_of(self, profile_id: str) -> list[str]:
        """The profile ids merged into a canonical profile."""
        with Session(self.engine) as session:
            return sorted(
                session.exec(
                    select(AliasRow.alias_id).where(col(AliasRow.profile_id) == profile_id)
                ).all()
            )

    def events_page(
        self, profile_id: str, after: int, limit: int, max_bytes: int
    ) -> tuple[list[EventData], int | None]:
        """A canonical profile's events stored after row `after`, in stored order.

        At most `limit`, and no more once their properties hold about
        `max_bytes` (at least one). Returns them with the row id to continue
        after, or None when there are no more.
        """
        with Session(self.engine) as session:
            rows = session.exec(
                select(LogRow)
                .where(
                    col(LogRow.profile_id) == profile_id,
                    col(LogRow.kind) == "event",
                    col(LogRow.sequence) > after,
                )
                .order_by(col(LogRow.sequence))
                .limit(limit + 1)
            ).all()
        events: list[EventData] = []
        size = 0
        for index, row in enumerate(rows):
            size += len(json.dumps(row.properties)) + len(row.event_id or "") + 100
            if index == limit or (events and size > max_bytes):
                return events, rows[index - 1].sequence
            events.append(_stored_event(row))
        return events, None
