"""The change feed's storage on PostgreSQL: the sequencer and retention.

These drive transactions by hand, to put commits in the order that breaks a
naive feed (ids taken at insert, committed in another order).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from tessera import db, migrations
from tessera.errors import FailedPrecondition
from tessera.profiles.storage.feed import FEED_LOCK_KEY, FeedStore

pytestmark = pytest.mark.integration


@pytest.fixture
def database(postgres_url: str) -> Iterator[db.Database]:
    """A database of its own: the feed's counter and retention are database-wide."""
    name = f"tessera_feed_{uuid.uuid4().hex[:12]}"
    base, _ = postgres_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database = db.Database(f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1))
    yield database
    database.dispose()
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _insert_event(connection: object, event_id: str) -> None:
    connection.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO profiles_log (kind, event_id, profile_id, type, channel, ts,"
            " properties, identities, applied) VALUES ('event', :id, 'p', 'page_view', 0,"
            " now(), '{}', '[]', true)"
        ),
        {"id": event_id},
    )


def _event_ids(feed: FeedStore, after: int) -> list[tuple[int, str]]:
    page = feed.read(after, [], 100)
    return [(r.sequence, r.event.event_id if r.event else r.kind) for r in page.records]


def test_sequencer__lower_id_commits_after_higher__follower_reading_after_gets_it(
    database: db.Database,
) -> None:
    migrations.upgrade(database.engine, "profiles")
    feed = FeedStore(database)
    slow = database.engine.connect()
    slow_transaction = slow.begin()
    _insert_event(slow, "takes-id-first")  # the lower id, not committed yet
    with database.engine.begin() as fast:
        _insert_event(fast, "commits-first")

    feed.sequence()
    first = _event_ids(feed, 0)
    slow_transaction.commit()
    slow.close()
    feed.sequence()
    second = _event_ids(feed, first[-1][0])

    assert [event_id for _, event_id in first] == ["commits-first"]
    assert [event_id for _, event_id in second] == ["takes-id-first"]
    assert second[0][0] > first[0][0]


def test_sequencer__rolled_back_insert__no_position_given_and_no_gap_served(
    database: db.Database,
) -> None:
    migrations.upgrade(database.engine, "profiles")
    feed = FeedStore(database)
    with database.engine.connect() as connection:
        transaction = connection.begin()
        _insert_event(connection, "rolled-back")
        feed.sequence()
        transaction.rollback()
    with database.engine.begin() as connection:
        _insert_event(connection, "kept")

    feed.sequence()

    assert _event_ids(feed, 0) == [(1, "kept")]


def test_sequencer__another_run_holds_lock__skips_without_waiting(
    database: db.Database,
) -> None:
    migrations.upgrade(database.engine, "profiles")
    feed = FeedStore(database)
    with database.engine.begin() as connection:
        _insert_event(connection, "waiting")
    with database.engine.connect() as holder:
        transaction = holder.begin()
        holder.execute(
            text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": FEED_LOCK_KEY},
        )
        skipped = feed.sequence()
        transaction.rollback()

    assert skipped is None
    assert feed.sequence() == 1


def test_purge__records_older_than_retention__oldest_prefix_gone_old_cursor_refused(
    database: db.Database,
) -> None:
    migrations.upgrade(database.engine, "profiles")
    feed = FeedStore(database)
    with database.engine.begin() as connection:
        for n in range(3):
            _insert_event(connection, f"old-{n}")
    feed.sequence()
    cutoff = dt.datetime.now(dt.UTC)
    with database.engine.begin() as connection:
        _insert_event(connection, "young")
    feed.sequence()

    purged = feed.purge(cutoff)

    assert purged == 3
    with pytest.raises(FailedPrecondition) as refused:
        feed.read(2, [], 100)
    assert refused.value.field == "after"
    assert "oldest sequence still held is 4" in refused.value.message
    assert _event_ids(feed, 3) == [(4, "young")]
