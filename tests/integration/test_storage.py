"""Storage plumbing on PostgreSQL: migrations and definition revisions under concurrency."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from tessera import db
from tessera.catalog import Catalog
from tessera.convert import to_json
from tessera.definitions import DefinitionStore
from tessera.errors import FailedPrecondition
from tessera.profiles.storage import sql as profiles_sql
from tessera.profiles.storage.sql import TABLES
from tessera.segments.v1 import segments_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def database(postgres_url: str) -> Iterator[db.Database]:
    database = db.Database(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    yield database
    database.dispose()


def run_together(work: Callable[[], None], threads: int) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def one() -> None:
        barrier.wait()
        try:
            work()
        except BaseException as error:  # collected and asserted on below
            errors.append(error)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_migrate__replicas_start_together__one_schema_no_error(database: db.Database) -> None:
    service = f"mig{uuid.uuid4().hex[:6]}"

    errors = run_together(lambda: db.migrate(database.engine, service, TABLES), threads=6)

    assert errors == []
    with database.engine.connect() as connection:
        rows = connection.execute(text(f"SELECT version FROM {service}_schema")).all()
    assert rows == [(1,)]


def test_migrate__database_from_newer_release__refused(database: db.Database) -> None:
    service = f"mig{uuid.uuid4().hex[:6]}"
    db.migrate(database.engine, service, TABLES, version=3)

    with pytest.raises(FailedPrecondition) as raised:
        db.migrate(database.engine, service, TABLES, version=2)

    assert raised.value.field == "database_url"


def test_definitions__concurrent_writers__every_change_once_in_revision_order(
    database: db.Database,
) -> None:
    prefix = f"defs{uuid.uuid4().hex[:6]}"
    store = DefinitionStore(database, prefix, "thing")
    db.migrate(database.engine, prefix, store.tables)
    store.prepare()
    counter = iter(range(10_000))
    lock = threading.Lock()

    def write_some() -> None:
        for _ in range(15):
            with lock:
                key = f"k{next(counter)}"
            store.create(key, "{}")
            store.update(key, '{"changed": true}')

    errors = run_together(write_some, threads=8)

    changes = store.changes_since(0)
    assert errors == []
    assert len(changes) == 8 * 15
    revisions = [c.revision for c in changes]
    assert revisions == sorted(set(revisions))
    assert all(c.version == 2 for c in changes)
    assert store.changes_since(revisions[-1]) == []


def _one_each(store: object, batches: list[list[object]]) -> Callable[[], None]:
    """Work for `run_together`: each thread identifies the next batch of identities."""
    pending = iter(batches)
    lock = threading.Lock()

    def identify_next() -> None:
        with lock:
            keys = next(pending)
        store.identify(keys)  # type: ignore[attr-defined]

    return identify_next


def test_identify__overlapping_merges_at_once__every_identity_on_one_live_profile(
    database: db.Database,
) -> None:
    from sqlmodel import Session

    from tessera.profiles.domain.model import IdentityKey
    from tessera.profiles.storage.sql import IdentityRow, ProfileRow, ProfileStore

    profiles_sql.migrate(database.engine)
    store = ProfileStore(database)
    for trial in range(10):
        a, b, c, d = (IdentityKey("cookie", f"{uuid.uuid4().hex}-{n}") for n in "abcd")
        for key in (a, b, c, d):
            store.identify([key])
        errors = run_together(_one_each(store, [[a, b], [b, c], [c, d], [d, a]]), threads=4)

        assert errors == [], trial
        with Session(database.engine) as session:
            owners = {session.get(IdentityRow, (k.type, k.value)).profile_id for k in (a, b, c, d)}  # type: ignore[union-attr]
            assert len(owners) == 1, trial
            assert session.get(ProfileRow, owners.pop()) is not None, trial


def test_definitions__same_new_key_created_at_once__one_wins_others_already_exist(
    database: db.Database,
) -> None:
    from tessera.errors import AlreadyExists

    prefix = f"defs{uuid.uuid4().hex[:6]}"
    store = DefinitionStore(database, prefix, "thing")
    db.migrate(database.engine, prefix, store.tables)
    store.prepare()

    errors = run_together(lambda: store.create("contested", "{}") and None, threads=8)

    assert len(errors) == 7
    assert all(isinstance(error, AlreadyExists) for error in errors)
    assert store.get("contested").version == 1


def _catalog(database: db.Database, prefix: str) -> Catalog[segments_pb2.Segment]:
    catalog = Catalog(database, prefix, "segment", segments_pb2.Segment)
    db.migrate(database.engine, prefix, catalog.tables)
    return catalog


def _name(segment: segments_pb2.Segment) -> str:
    if segment.name == "unreadable":
        raise ValueError("a rule from a newer release")
    return segment.name


def test_catalog__write_returns__this_replicas_cache_holds_it(database: db.Database) -> None:
    prefix = f"defs{uuid.uuid4().hex[:6]}"
    catalog = _catalog(database, prefix)
    cache = catalog.cache(_name)
    seen: list[dict[str, str]] = []

    async def go() -> None:
        await catalog.open()
        try:
            await catalog.create(segments_pb2.Segment(key="a", name="first"))
            seen.append(dict(cache.items))
            await catalog.update(segments_pb2.Segment(key="a", name="second"))
            seen.append(dict(cache.items))
            await catalog.delete("a")
            seen.append(dict(cache.items))
        finally:
            await catalog.close()

    asyncio.run(go())

    assert seen == [{"a": "first"}, {"a": "second"}, {}]


def test_catalog__stored_definition_unreadable__left_out_rest_loaded(
    database: db.Database,
) -> None:
    prefix = f"defs{uuid.uuid4().hex[:6]}"
    catalog = _catalog(database, prefix)
    cache = catalog.cache(_name)
    catalog.store.prepare()
    for key, name in (("a", "fine"), ("b", "unreadable"), ("c", "fine")):
        catalog.store.create(key, to_json(segments_pb2.Segment(key=key, name=name)))

    async def go() -> tuple[dict[str, str], dict[str, str]]:
        await catalog.open()
        try:
            loaded = dict(cache.items)
            await catalog.update(segments_pb2.Segment(key="a", name="unreadable"))
            return loaded, dict(cache.items)
        finally:
            await catalog.close()

    loaded, after = asyncio.run(go())

    assert loaded == {"a": "fine", "c": "fine"}
    assert after == {"c": "fine"}


def test_catalog__other_replica_writes__cache_follows_within_a_poll(
    database: db.Database,
) -> None:
    prefix = f"defs{uuid.uuid4().hex[:6]}"
    catalog = _catalog(database, prefix)
    cache = catalog.cache(_name)
    other = DefinitionStore(database, prefix, "segment")

    async def go() -> dict[str, str]:
        await catalog.open()
        try:
            await database.run(
                other.create, "b", to_json(segments_pb2.Segment(key="b", name="elsewhere"))
            )
            async with asyncio.timeout(5):
                while "b" not in cache.items:
                    await asyncio.sleep(0.05)
            return dict(cache.items)
        finally:
            await catalog.close()

    assert asyncio.run(go()) == {"b": "elsewhere"}


def test_identify__survivor_merged_away_right_after_commit__answers_without_error(
    database: db.Database,
) -> None:
    # The race behind a flaky overlapping-merges run, made deterministic: the
    # moment one merge commits (survivor B), another merges B into the older
    # A, before the first has built its answer.
    from sqlalchemy import event
    from sqlalchemy.orm import Session as OrmSession

    from tessera.profiles.domain.model import IdentityKey
    from tessera.profiles.storage.sql import ProfileStore

    profiles_sql.migrate(database.engine)
    store = ProfileStore(database)
    a, b, c = (IdentityKey("cookie", f"{uuid.uuid4().hex}-{n}") for n in "abc")
    older, survivor, _ = (store.identify([key]).profile.profile_id for key in (a, b, c))
    armed = [True]

    def merge_survivor_away(session: OrmSession) -> None:
        if armed[0]:
            armed[0] = False
            store.identify([a, b])

    event.listen(OrmSession, "after_commit", merge_survivor_away)
    try:
        result = store.identify([b, c])
    finally:
        event.remove(OrmSession, "after_commit", merge_survivor_away)

    assert armed == [False]
    assert result.profile.profile_id == survivor
    assert store.get(survivor).profile_id == older
    assert {k.value for k in store.get(older).identities} == {a.value, b.value, c.value}


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(
    request: pytest.FixtureRequest, tmp_path: object, postgres_url: str
) -> Iterator[db.Database]:
    """An empty database of the test's own, so it can hold tables of an old release."""
    import psycopg

    if request.param == "sqlite":
        database = db.Database(f"sqlite:///{tmp_path}/profiles.db")
        yield database
        database.dispose()
        return
    name = f"tessera_mig_{uuid.uuid4().hex[:12]}"
    base, _ = postgres_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database = db.Database(f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1))
    yield database
    database.dispose()
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrate__profiles_log_of_version_1__gains_applied_and_old_events_count_as_applied(
    fresh_database: db.Database,
) -> None:
    import datetime as dt

    from tessera.profiles.domain.model import EventData
    from tessera.profiles.storage.sql import MIGRATIONS, SCHEMA_VERSION, ProfileStore

    engine = fresh_database.engine
    db.migrate(engine, "profiles", TABLES, version=1)
    with engine.begin() as connection:  # the log as release 1 created it
        connection.execute(text("ALTER TABLE profiles_log DROP COLUMN applied"))
        connection.execute(
            text(
                "INSERT INTO profiles_log (kind, event_id, profile_id, type, channel, ts,"
                " properties, identities) VALUES ('event', 'old-1', 'p', 'page_view', 0,"
                " '2026-01-01 00:00:00', '{}', '[]')"
            )
        )

    db.migrate(engine, "profiles", TABLES, SCHEMA_VERSION, MIGRATIONS)

    store = ProfileStore(fresh_database)
    profile_id = store.identify([_cookie()]).profile.profile_id
    old = EventData("old-1", "page_view", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    new = EventData("new-1", "page_view", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert store.record_event(old, profile_id).pending is None
    assert store.record_event(new, profile_id).pending == new
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version FROM profiles_schema")).scalar()
    assert version == SCHEMA_VERSION


def test_migrate__profiles_of_version_2__gain_an_empty_event_history_that_then_fills(
    fresh_database: db.Database,
) -> None:
    import datetime as dt

    from tessera.profiles.domain.model import EventData
    from tessera.profiles.storage.sql import MIGRATIONS, SCHEMA_VERSION, ProfileStore

    engine = fresh_database.engine
    db.migrate(engine, "profiles", TABLES, 2, MIGRATIONS)
    with engine.begin() as connection:  # the profile table as release 2 created it
        connection.execute(text("ALTER TABLE profiles_profile DROP COLUMN event_history"))
        connection.execute(
            text(
                "INSERT INTO profiles_profile (profile_id, traits, history, created_at,"
                " updated_at) VALUES ('old', '{}', '{\"orders\": 0, \"revenue\": 0.0,"
                ' "last_purchase_at": null, "categories": {}}\', '
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )

    db.migrate(engine, "profiles", TABLES, SCHEMA_VERSION, MIGRATIONS)

    store = ProfileStore(fresh_database)
    assert store.get("old").event_history.series == {}
    now = dt.datetime.now(dt.UTC)
    store.record_event(EventData("e-1", "purchase", now, properties={"revenue": 5.0}), "old")
    series = store.get("old").event_history.series
    assert [(key, s.counts, dict(s.sums)) for key, s in series.items()] == [
        (("purchase", "", ""), (1,), {"revenue": (5.0,)})
    ]
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version FROM profiles_schema")).scalar()
    assert version == SCHEMA_VERSION


def test_migrate__profiles_of_version_4__each_gets_a_profile_record_for_the_feed(
    fresh_database: db.Database,
) -> None:
    from tessera.profiles.storage.feed import FeedStore
    from tessera.profiles.storage.sql import MIGRATIONS, SCHEMA_VERSION

    engine = fresh_database.engine
    db.migrate(engine, "profiles", TABLES, 4, MIGRATIONS)
    with engine.begin() as connection:  # two profiles of release 4, one with identities
        for profile_id, traits in (("old-a", '{"plan": "pro"}'), ("old-b", "{}")):
            connection.execute(
                text(
                    "INSERT INTO profiles_profile (profile_id, traits, history, created_at,"
                    f" updated_at) VALUES ('{profile_id}', '{traits}', '{{}}',"
                    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
        for id_type, value in (("email", "h1"), ("cookie", "c1"), ("cookie", "c2")):
            connection.execute(
                text(
                    "INSERT INTO profiles_identity (id_type, id_value, profile_id, created_at)"
                    f" VALUES ('{id_type}', '{value}', 'old-a', '2026-01-01 00:00:00')"
                )
            )

    db.migrate(engine, "profiles", TABLES, SCHEMA_VERSION, MIGRATIONS)
    feed = FeedStore(fresh_database)
    feed.sequence()
    records = feed.read(0, [], 100, profiles=True).records
    hidden = feed.read(0, [], 100).records

    assert [(r.kind, r.profile_id, dict(r.traits), list(r.identity_types)) for r in records] == [
        ("profile", "old-a", {"plan": "pro"}, ["cookie", "email"]),
        ("profile", "old-b", {}, []),
    ]
    assert hidden == []


def _cookie() -> object:
    from tessera.profiles.domain.model import IdentityKey

    return IdentityKey("cookie", uuid.uuid4().hex)
