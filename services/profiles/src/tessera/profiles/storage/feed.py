"""The event log read as a change feed: the sequencer, reads by position, retention.

Writers insert log records without a feed position (`storage.sql`). The
sequencer gives positions afterwards, in one short transaction that

1. takes a transaction-level advisory lock of the profile service's feed
   (`pg_try_advisory_xact_lock`; on SQLite the write lock, taken first),
2. selects the committed records that have no position, in row-id order,
3. numbers them from the counter row on, and moves the counter.

Only committed rows are visible to step 2, so a position is never given to
a row that may still roll back, and a row that commits just after a run is
simply numbered by the next one. Runs are serialised by the lock and each
run's positions commit together, after the previous run's, so positions
become visible strictly in the order they were given: a reader that sees
position N sees every position below N that still exists. That is what lets
a follower read "after N" and never pass over a record.

Everything here is blocking; call it through `Database.run`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Connection, bindparam, delete, func, or_, text, update
from sqlalchemy import select as sa_select
from sqlmodel import col

from tessera.db import Database
from tessera.errors import FailedPrecondition
from tessera.profiles.domain.model import EventData, IdentityKey
from tessera.profiles.storage.prepared import IN_LIST_LIMIT, in_list, run, run_in
from tessera.profiles.storage.sql import FeedRow, LogRow

SEQUENCE_BATCH = 5000
"""Most records one sequencer run numbers; the rest wait for the next run."""
PURGE_BATCH = 1000
"""Most records one purge transaction deletes, so the lock is held briefly."""


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(f"tessera-feed:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


FEED_LOCK_KEY = _lock_key("profiles")
"""The advisory lock serialising sequencer runs and purges of the profile feed."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class FeedRecord:
    """One record of the change feed.

    `kind` is "event" (with `event`), "merge" (`merged_profile_ids` holds
    the one id merged into `profile_id`), "deletion" (`merged_profile_ids`
    holds the ids that had been merged into the erased `profile_id`) or
    "profile" (`traits` and `identity_types` after a change, `created_at`).
    """

    sequence: int
    kind: str
    profile_id: str
    event: EventData | None = None
    merged_profile_ids: Sequence[str] = field(default_factory=tuple)
    traits: Mapping[str, Any] = field(default_factory=dict)
    identity_types: Sequence[str] = field(default_factory=tuple)
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class FeedPage:
    """Records after a position, and how far the read has looked.

    `through` is the highest position the read covered: every record up to
    it that matched is in `records` (a follower filtering by type may get
    none and still move on). `more` says the page was cut at its limit.
    """

    records: list[FeedRecord]
    through: int
    more: bool


def _record(row: Any) -> FeedRecord:
    """The feed record of a log row (its `_FEED_COLUMNS`)."""
    assert row.position is not None
    if row.kind == "event":
        return FeedRecord(
            row.position,
            row.kind,
            row.profile_id,
            EventData(
                event_id=row.event_id or "",
                type=row.type,
                timestamp=_utc(row.ts),
                channel=row.channel,
                profile_id=row.profile_id,
                identities=[IdentityKey(t, v) for t, v in row.identities],
                properties=dict(row.properties),
            ),
        )
    if row.kind == "profile":
        return FeedRecord(
            row.position,
            row.kind,
            row.profile_id,
            traits=dict(row.properties.get("traits") or {}),
            identity_types=tuple(str(t) for t in row.properties.get("identity_types") or ()),
            created_at=_utc(row.ts),
        )
    if row.kind == "merge":
        merged = [str(row.properties.get("merged_profile_id", ""))]
    else:
        merged = [str(i) for i in row.properties.get("merged_profile_ids", [])]
    return FeedRecord(row.position, row.kind, row.profile_id, None, tuple(merged))


_LOG = LogRow.__table__  # type: ignore[attr-defined]
_FEED_COLUMNS = (
    _LOG.c.position,
    _LOG.c.kind,
    _LOG.c.profile_id,
    _LOG.c.event_id,
    _LOG.c.type,
    _LOG.c.ts,
    _LOG.c.channel,
    _LOG.c.identities,
    _LOG.c.properties,
)
"""What a feed record is built from (`_record`)."""


def _number_rows(count: int | None) -> Any:
    """One statement numbers `count` rows of a run: `last` + their rank in row-id order."""
    numbered = (
        sa_select(
            _LOG.c.sequence,
            (
                bindparam("last", type_=BigInteger())
                + func.row_number().over(order_by=_LOG.c.sequence)
            ).label("position"),
        )
        .where(in_list(_LOG.c.sequence, count))
        .subquery()
    )
    return (
        update(_LOG)
        .where(_LOG.c.sequence == numbered.c.sequence)
        .values(
            position=numbered.c.position,
            sequenced_at=bindparam("now", type_=_LOG.c.sequenced_at.type),
        )
    )


# The sequencer's and the readers' other statements, built once: they run
# after every batch a writer commits, and building them cost more than
# running them.
_FEED = FeedRow.__table__  # type: ignore[attr-defined]
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")
_TAKE_WRITE_LOCK = update(_FEED).where(_FEED.c.id == 1).values(last_position=_FEED.c.last_position)
_COUNTER = sa_select(_FEED.c.last_position, _FEED.c.purged_through).where(_FEED.c.id == 1)
_LAST_POSITION = sa_select(_FEED.c.last_position).where(_FEED.c.id == 1)
_PURGED_THROUGH = sa_select(_FEED.c.purged_through).where(_FEED.c.id == 1)
_MOVE_HEAD = update(_FEED).where(_FEED.c.id == 1).values(last_position=bindparam("head"))
_UNSEQUENCED = (
    sa_select(_LOG.c.sequence)
    .where(_LOG.c.position.is_(None))
    .order_by(_LOG.c.sequence)
    .limit(SEQUENCE_BATCH)
)
_UNSEQUENCED_SKIP_LOCKED = _UNSEQUENCED.with_for_update(skip_locked=True)
_ANY_UNSEQUENCED = _UNSEQUENCED.limit(1)


@functools.cache
def _page_query(by_type: bool, profiles: bool, events: bool = True) -> Any:
    """Records with positions in (`after`, `last`], at most `limit`, in position order;
    with `by_type` only events of `types` (and every other kind); profile
    records only with `profiles`; no events at all without `events`."""
    query = (
        sa_select(*_FEED_COLUMNS)
        .where(_LOG.c.position > bindparam("after"), _LOG.c.position <= bindparam("last"))
        .order_by(_LOG.c.position)
        .limit(bindparam("limit"))
    )
    if by_type:
        query = query.where(
            or_(_LOG.c.kind != "event", _LOG.c.type.in_(bindparam("types", expanding=True)))
        )
    if not profiles:
        query = query.where(_LOG.c.kind != "profile")
    if not events:
        query = query.where(_LOG.c.kind != "event")
    return query


class FeedStore:
    """The profile service's change feed over its event log (blocking)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.engine = database.engine
        self.postgres = self.engine.dialect.name == "postgresql"
        self.head = 0
        """The highest position given out, as this store last saw it: its own runs'
        positions, and the counter when a run looked at it (0 before either)."""

    def _lock(self, connection: Connection) -> bool:
        """Take the feed's lock for this transaction; False when another holds it."""
        if self.postgres:
            return bool(connection.execute(_TRY_LOCK, {"key": FEED_LOCK_KEY}).scalar())
        # SQLite has one writer: writing first takes its lock before anything
        # is read, so the read below sees every committed record.
        connection.execute(_TAKE_WRITE_LOCK)
        return True

    def _counter(self, connection: Connection) -> tuple[int, int]:
        """(last position given, last position purged), under the lock."""
        row = connection.execute(_COUNTER).first()
        if row is None:
            # A database created by this release: the first run seeds the row
            # (under the lock, so no two runs seed it).
            connection.execute(FeedRow.__table__.insert().values(id=1))  # type: ignore[attr-defined]
            return 0, 0
        return int(row.last_position), int(row.purged_through)

    def _look(self, connection: Connection) -> None:
        """Learn the head from the counter: positions other replicas gave out too."""
        last = connection.execute(_LAST_POSITION).scalar()
        self.head = max(self.head, int(last or 0))

    def sequence(self, look: bool = False) -> int | None:
        """Give the committed records without a position the next positions.

        Returns how many records were numbered, or None when another run
        (of any replica) holds the lock: it, or the next periodic run, will
        number them. Rows another transaction is updating right now (a
        merge moving them, the applied flag) are skipped, not waited for, and
        numbered by a later run: the sequencer never waits on a writer and
        never deadlocks with one. With `look`, `head` ends at least at the
        counter as it was when the run started, whatever the run did (the
        followers' wake-up: `feed.Feed.follow`).
        """
        dialect = self.engine.dialect
        if not self.postgres:
            # An idle run finds nothing: looked for first with a read, so that
            # it does not take SQLite's write lock and commit for nothing
            # every poll. A record committed after this look kicks a run of
            # its own (or the next poll finds it); nothing is numbered here,
            # so nothing can be passed over.
            with self.engine.connect() as connection:
                cursor = connection.connection.cursor()
                try:
                    found = run(cursor, dialect, _ANY_UNSEQUENCED)
                finally:
                    cursor.close()
                if not found:
                    if look:
                        self._look(connection)
                    return 0
        with self.engine.begin() as connection:
            if not self._lock(connection):
                if look:
                    self._look(connection)
                return None
            # The run's statements on the DBAPI cursor (`storage.prepared`):
            # the sequencer runs after every batch a writer commits.
            cursor = connection.connection.cursor()
            try:
                query = _UNSEQUENCED_SKIP_LOCKED if self.postgres else _UNSEQUENCED
                rows = [row[0] for row in run(cursor, dialect, query)]
                if not rows:
                    if look:
                        self._look(connection)
                    return 0
                last, _ = self._counter(connection)
                now = _now()
                for start in range(0, len(rows), IN_LIST_LIMIT):
                    part = rows[start : start + IN_LIST_LIMIT]
                    run_in(cursor, dialect, _number_rows, part, last=last + start, now=now)
                run(cursor, dialect, _MOVE_HEAD, head=last + len(rows))
            finally:
                cursor.close()
        self.head = max(self.head, last + len(rows))
        return len(rows)

    def state(self) -> tuple[int, int]:
        """(last position given, last position purged)."""
        with self.engine.connect() as connection:
            row = connection.execute(_COUNTER).first()
        return (row.last_position, row.purged_through) if row else (0, 0)

    def read(
        self,
        after: int,
        types: Sequence[str],
        limit: int,
        profiles: bool = False,
        events: bool = True,
    ) -> FeedPage:
        """Records with a position above `after`, in position order, at most `limit`.

        With `types`, only events of those types (merges and deletions
        always); no events at all without `events`; profile records only
        with `profiles`. FAILED_PRECONDITION
        naming `after` when retention has purged records above it: the
        follower would miss them.
        """
        with self.engine.connect() as connection:
            # Positions up to `last` are all committed (the counter moves in
            # the same transaction as the positions it gives), so bounding the
            # read by it and reading the rows afterwards misses none. Each
            # statement reads what had committed when it started (READ
            # COMMITTED; SQLite reads outside a write transaction).
            last = connection.execute(_LAST_POSITION).scalar()
            rows: list[Any] = []
            if last is not None and last > after:
                # Columns, not ORM objects: building a model object per record
                # cost more than reading it (every follower reads every record).
                values: dict[str, Any] = {"after": after, "last": last, "limit": limit}
                if types:
                    values["types"] = list(types)
                rows = list(
                    connection.execute(_page_query(bool(types), profiles, events), values).all()
                )
            # Read after the rows: a purge that committed before the rows were
            # read shows here, so a page with holes is never served.
            purged = connection.execute(_PURGED_THROUGH).scalar() or 0
        if after < purged:
            raise FailedPrecondition(
                f"{after} is older than this feed keeps: records up to {purged} were purged "
                f"by retention; the oldest sequence still held is {purged + 1}, so resume "
                f"with after={purged} (and resynchronise what the gap held)",
                field="after",
            )
        more = len(rows) == limit
        # A full page reached its last row; a short one everything up to `last`.
        through = (rows[-1].position or after) if more else max(after, last or 0)
        return FeedPage([_record(r) for r in rows], through, more)

    def purge(self, older_than: dt.datetime) -> int:
        """Delete the oldest records, sequenced before `older_than`; how many went.

        Retention deletes a prefix of the feed, never a record in the middle
        of it: records are taken in position order up to the first one that
        is still young, and `purged_through` moves to the last one deleted.
        """
        deleted = 0
        while True:
            with self.engine.begin() as connection:
                if not self._lock(connection):
                    return deleted
                _, purged = self._counter(connection)
                rows = connection.execute(
                    sa_select(col(LogRow.position), col(LogRow.sequenced_at))
                    .where(col(LogRow.position) > purged)
                    .order_by(col(LogRow.position))
                    .limit(PURGE_BATCH)
                ).all()
                horizon = purged
                for position, sequenced_at in rows:
                    if position is None or sequenced_at is None or _utc(sequenced_at) >= older_than:
                        break
                    horizon = position
                if horizon == purged:
                    return deleted
                result = connection.execute(
                    delete(LogRow).where(
                        col(LogRow.position) > purged,
                        col(LogRow.position) <= horizon,
                    )
                )
                connection.execute(
                    update(FeedRow).where(col(FeedRow.id) == 1).values(purged_through=horizon)
                )
                deleted += int(result.rowcount or 0)
