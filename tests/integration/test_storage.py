"""Storage plumbing on PostgreSQL: definition revisions and merges under concurrency."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from support import create_tables

from tessera import db, migrations
from tessera.catalog import Catalog
from tessera.convert import to_json
from tessera.definitions import DefinitionStore
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


def test_definitions__concurrent_writers__every_change_once_in_revision_order(
    database: db.Database,
) -> None:
    prefix = f"defs{uuid.uuid4().hex[:6]}"
    store = DefinitionStore(database, prefix, "thing")
    create_tables(database.engine, store.tables)
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

    migrations.upgrade(database.engine, "profiles")
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
    create_tables(database.engine, store.tables)
    store.prepare()

    errors = run_together(lambda: store.create("contested", "{}") and None, threads=8)

    assert len(errors) == 7
    assert all(isinstance(error, AlreadyExists) for error in errors)
    assert store.get("contested").version == 1


def _catalog(database: db.Database, prefix: str) -> Catalog[segments_pb2.Segment]:
    catalog = Catalog(database, prefix, "segment", segments_pb2.Segment)
    create_tables(database.engine, catalog.tables)
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

    migrations.upgrade(database.engine, "profiles")
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
