"""Schema migrations (Alembic, one environment per service) on SQLite and PostgreSQL.

Databases of the previous release are built here as that release left them:
the hand-written migrator's tables and its `<service>_schema` version row,
with data in them. Upgrading must keep the data and bring the schema to
exactly what the code expects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    inspect,
    text,
    true,
)

from tessera import db, migrations
from tessera.errors import FailedPrecondition
from tessera.settings import SERVICES, RuntimeSettings

pytestmark = pytest.mark.integration

OLD = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(
    request: pytest.FixtureRequest, tmp_path: object, postgres_url: str
) -> Iterator[db.Database]:
    """An empty database of the test's own, so it can hold tables of an old release."""
    if request.param == "sqlite":
        database = db.Database(f"sqlite:///{tmp_path}/tessera.db")
        yield database
        database.dispose()
        return
    with _postgres_database(postgres_url) as url:
        database = db.Database(url)
        yield database
        database.dispose()


class _postgres_database:
    """A PostgreSQL database of its own (context manager yielding its SQLAlchemy URL)."""

    def __init__(self, postgres_url: str) -> None:
        self.base = postgres_url.rsplit("/", 1)[0]
        self.name = f"tessera_mig_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> str:
        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        return f"{self.base}/{self.name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def __exit__(self, *_: object) -> None:
        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def differences(database: db.Database, service: str) -> list[object]:
    """What autogenerate would change to make the database match the service's code."""
    with database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_name": lambda name, kind, _: (
                    kind != "table" or migrations.owns(service, name)
                ),
                "compare_type": True,
            },
        )
        return list(compare_metadata(context, migrations.metadata(service)))


def tables_of(database: db.Database) -> set[str]:
    return set(inspect(database.engine).get_table_names())


# --- The previous release: its profile tables as its models created them
# (hand-written schema version 4), frozen here.


def previous_release_profiles(metadata: MetaData) -> None:
    stamp = DateTime(timezone=True)
    Table(
        "profiles_profile",
        metadata,
        Column("profile_id", String(40), primary_key=True),
        Column("traits", JSON, nullable=False),
        Column("history", JSON, nullable=False),
        Column("event_history", JSON),
        Column("created_at", stamp, nullable=False),
        Column("updated_at", stamp, nullable=False),
    )
    Table(
        "profiles_identity",
        metadata,
        Column("id_type", String(32), primary_key=True),
        Column("id_value", String(512), primary_key=True),
        Column("profile_id", String(40), nullable=False, index=True),
        Column("created_at", stamp, nullable=False),
    )
    Table(
        "profiles_alias",
        metadata,
        Column("alias_id", String(40), primary_key=True),
        Column("profile_id", String(40), nullable=False, index=True),
    )
    Table(
        "profiles_log",
        metadata,
        Column("sequence", Integer, primary_key=True),
        Column("kind", String(16), nullable=False),
        Column("event_id", String(128), unique=True),
        Column("profile_id", String(40), nullable=False, index=True),
        Column("type", String(64), nullable=False),
        Column("channel", Integer, nullable=False),
        Column("ts", stamp, nullable=False),
        Column("properties", JSON, nullable=False),
        Column("identities", JSON, nullable=False),
        Column("applied", Boolean, nullable=False, server_default=true()),
        Column("position", BigInteger, unique=True),
        Column("sequenced_at", stamp),
        Index(
            "ix_profiles_log_unsequenced",
            "sequence",
            postgresql_where=text("position IS NULL"),
            sqlite_where=text("position IS NULL"),
        ),
    )
    Table(
        "profiles_feed",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("last_position", BigInteger, nullable=False),
        Column("purged_through", BigInteger, nullable=False),
    )
    Table(
        "profiles_model",
        metadata,
        Column("version", String(64), primary_key=True),
        Column("goal", String(64), nullable=False, index=True),
        Column("trained_at", stamp, nullable=False, index=True),
        Column("intercept", Float, nullable=False),
        Column("weights", JSON, nullable=False),
        Column("auc", Float, nullable=False),
        Column("calibration_error", Float, nullable=False),
        Column("examples", Integer, nullable=False),
        Column("held_out", Integer, nullable=False),
    )
    Table("profiles_schema", metadata, Column("version", Integer, nullable=False))


def as_hand_written_version(database: db.Database, service: str, version: int) -> None:
    """Make a database Alembic built look as the hand-written migrator left it."""
    with database.engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {migrations.version_table(service)}"))
        connection.execute(text(f"CREATE TABLE {service}_schema (version INTEGER NOT NULL)"))
        connection.execute(text(f"INSERT INTO {service}_schema (version) VALUES ({version})"))


def test_migrate__empty_database__every_service_at_head_tables_as_the_code_expects(
    fresh_database: db.Database,
) -> None:
    done = [migrations.upgrade(fresh_database.engine, service) for service in SERVICES]

    assert [(d.service, d.before, d.after) for d in done] == [
        (service, None, migrations.head(service)) for service in SERVICES
    ]
    for service in SERVICES:
        assert differences(fresh_database, service) == [], service
        assert migrations.state(fresh_database.engine, service) == (
            migrations.head(service),
            migrations.head(service),
            True,
        )
    again = migrations.upgrade(fresh_database.engine, "profiles")
    assert not again.changed


@pytest.mark.parametrize("version", [4, 5])
def test_migrate__previous_release_at_version_4_or_5__stamped_upgraded_data_kept(
    fresh_database: db.Database, version: int
) -> None:
    from tessera.profiles.domain.model import EventData, IdentityKey
    from tessera.profiles.storage.feed import FeedStore
    from tessera.profiles.storage.sql import ProfileStore

    engine = fresh_database.engine
    metadata = MetaData()
    previous_release_profiles(metadata)
    metadata.create_all(engine)
    tables = metadata.tables
    with engine.begin() as connection:
        connection.execute(tables["profiles_schema"].insert().values(version=version))
        connection.execute(
            tables["profiles_profile"].insert(),
            [
                {
                    "profile_id": "old-a",
                    "traits": {"plan": "pro"},
                    "history": {"orders": 2, "revenue": 30.0, "categories": {"juicers": 1}},
                    "event_history": [],
                    "created_at": OLD,
                    "updated_at": OLD,
                }
            ],
        )
        connection.execute(
            tables["profiles_identity"]
            .insert()
            .values(id_type="cookie", id_value="c-old", profile_id="old-a", created_at=OLD)
        )
        connection.execute(
            tables["profiles_alias"].insert().values(alias_id="old-b", profile_id="old-a")
        )
        connection.execute(
            tables["profiles_log"].insert(),
            [
                {
                    "kind": "event",
                    "event_id": f"e-{n}",
                    "profile_id": "old-a",
                    "type": "page_view",
                    "channel": 0,
                    "ts": OLD,
                    "properties": {},
                    "identities": [],
                    "applied": True,
                    "position": n,
                    "sequenced_at": OLD,
                }
                for n in (1, 2)
            ],
        )
        if version == 5:  # its backfill: the profile's record, sequenced
            connection.execute(
                tables["profiles_log"]
                .insert()
                .values(
                    kind="profile",
                    profile_id="old-a",
                    type="",
                    channel=0,
                    ts=OLD,
                    properties={"traits": {"plan": "pro"}, "identity_types": ["cookie"]},
                    identities=[],
                    applied=True,
                    position=3,
                    sequenced_at=OLD,
                )
            )
        last = 3 if version == 5 else 2
        connection.execute(
            tables["profiles_feed"].insert().values(id=1, last_position=last, purged_through=0)
        )
        connection.execute(
            tables["profiles_model"]
            .insert()
            .values(
                version="conv-old",
                goal="purchase",
                trained_at=OLD,
                intercept=-1.5,
                weights={"cart_items": 0.5},
                auc=0.7,
                calibration_error=0.01,
                examples=100,
                held_out=30,
            )
        )

    done = migrations.upgrade(engine, "profiles")

    assert (done.before, done.after) == ("0004", migrations.head("profiles"))
    assert "profiles_schema" not in tables_of(fresh_database)
    store = ProfileStore(fresh_database)
    kept = store.get("old-b")
    assert (kept.profile_id, kept.traits, kept.history.orders) == ("old-a", {"plan": "pro"}, 2)
    assert [(k.type, k.value) for k in kept.identities] == [("cookie", "c-old")]
    model = store.latest_model("purchase")
    assert model is not None and model.version == "conv-old"
    assert store.record_event(EventData("e-1", "page_view", OLD), "old-a").duplicate
    store.record_event(EventData("e-3", "page_view", OLD), "old-a")
    feed = FeedStore(fresh_database)
    feed.sequence()
    served = [(r.sequence, r.event.event_id) for r in feed.read(0, [], 10).records if r.event]
    # 3: the profile's record, from version 5's backfill or from 0006 (once either way).
    assert served == [(1, "e-1"), (2, "e-2"), (4, "e-3")]
    records = feed.read(0, [], 10, profiles=True).records
    assert [(r.sequence, r.profile_id, dict(r.traits)) for r in records if r.kind == "profile"] == [
        (3, "old-a", {"plan": "pro"})
    ]
    assert store.identify([IdentityKey("cookie", "c-old")]).profile.profile_id == "old-a"


def test_migrate__hand_written_version_1__each_step_runs_data_kept(
    fresh_database: db.Database,
) -> None:
    from tessera.profiles.domain.model import EventData
    from tessera.profiles.storage.feed import FeedStore
    from tessera.profiles.storage.sql import ProfileStore

    engine = fresh_database.engine
    migrations.upgrade(engine, "profiles", "0001")
    as_hand_written_version(fresh_database, "profiles", 1)
    with engine.begin() as connection:  # what release 1 held: a profile, three events
        connection.execute(
            text(
                "INSERT INTO profiles_profile (profile_id, traits, history, created_at,"
                " updated_at) VALUES ('old', '{}', '{\"orders\": 0, \"revenue\": 0.0,"
                ' "last_purchase_at": null, "categories": {}}\','
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        for n in range(3):
            connection.execute(
                text(
                    "INSERT INTO profiles_log (kind, event_id, profile_id, type, channel, ts,"
                    " properties, identities) VALUES ('event', :id, 'old', 'page_view', 0,"
                    " '2026-01-01 00:00:00', '{}', '[]')"
                ),
                {"id": f"v1-{n}"},
            )
        connection.execute(text("DELETE FROM profiles_log WHERE event_id = 'v1-1'"))

    done = migrations.upgrade(engine, "profiles")

    assert (done.before, done.after) == ("0001", migrations.head("profiles"))
    assert differences(fresh_database, "profiles") == []
    store = ProfileStore(fresh_database)
    # 0002: events stored before the flag count as applied (a retry is a plain duplicate).
    assert store.record_event(EventData("v1-0", "page_view", OLD), "old").pending is None
    new = EventData("new-0", "purchase", dt.datetime.now(dt.UTC), properties={"revenue": 5.0})
    assert store.record_event(new, "old").pending == new
    # 0003: records held get positions in id order, new ones follow.
    feed = FeedStore(fresh_database)
    feed.sequence()
    served = [(r.sequence, r.event.event_id) for r in feed.read(0, [], 10).records if r.event]
    assert [event_id for _, event_id in served] == ["v1-0", "v1-2", "new-0"]
    assert [sequence for sequence, _ in served] == sorted({s for s, _ in served})
    # 0004: the profile had no event history; it fills from the first event after.
    series = store.get("old").event_history.series
    assert [(key, s.counts) for key, s in series.items()] == [(("purchase", "", ""), (1,))]


def test_migrate__profiles_at_0005__0006_gives_each_profile_one_profile_record(
    fresh_database: db.Database,
) -> None:
    from tessera.profiles.storage.feed import FeedStore

    engine = fresh_database.engine
    migrations.upgrade(engine, "profiles", "0005")
    with engine.begin() as connection:  # three profiles of 0005, one with identities
        for profile_id, traits in (("old-a", '{"plan": "pro"}'), ("old-b", "{}"), ("old-c", "{}")):
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
        # old-c's record was written by a replica of this release before 0006 ran.
        connection.execute(
            text(
                "INSERT INTO profiles_log (kind, profile_id, type, channel, ts, properties,"
                " identities, applied) VALUES ('profile', 'old-c', '', 0, '2026-01-02 00:00:00',"
                " '{\"traits\": {}, \"identity_types\": []}', '[]', true)"
            )
        )

    done = migrations.upgrade(engine, "profiles")
    feed = FeedStore(fresh_database)
    feed.sequence()
    records = feed.read(0, [], 100, profiles=True).records
    hidden = feed.read(0, [], 100).records

    assert (done.before, done.after) == ("0005", "0006")
    assert sorted(
        (r.kind, r.profile_id, dict(r.traits), list(r.identity_types)) for r in records
    ) == [
        ("profile", "old-a", {"plan": "pro"}, ["cookie", "email"]),
        ("profile", "old-b", {}, []),
        ("profile", "old-c", {}, []),
    ]
    assert hidden == []
    assert differences(fresh_database, "profiles") == []


def test_migrate__segments_of_hand_written_version_1__stamped_definitions_kept(
    fresh_database: db.Database,
) -> None:
    from tessera.definitions import DefinitionStore

    engine = fresh_database.engine
    migrations.upgrade(engine, "segments")
    as_hand_written_version(fresh_database, "segments", 1)
    store = DefinitionStore(fresh_database, "segments", "segment")
    store.prepare()
    store.create("juicer-fans", '{"key": "juicer-fans"}')

    done = migrations.upgrade(engine, "segments")

    # Its version 1 created the cursor and projection tables from the models: 0002 keeps them.
    assert (done.before, done.after) == ("0001", migrations.head("segments"))
    assert differences(fresh_database, "segments") == []
    assert "segments_schema" not in tables_of(fresh_database)
    assert store.get("juicer-fans").body == '{"key": "juicer-fans"}'


def test_migrate__database_from_newer_release__upgrade_refused_service_serves(
    fresh_database: db.Database,
) -> None:
    engine = fresh_database.engine
    migrations.upgrade(engine, "experiments")
    with engine.begin() as connection:
        connection.execute(text("UPDATE experiments_alembic_version SET version_num = '0099'"))

    with pytest.raises(FailedPrecondition) as refused:
        migrations.upgrade(engine, "experiments")
    settings = RuntimeSettings(migrate_on_start=False, schema_wait_s=0)
    asyncio.run(migrations.prepare(fresh_database, "experiments", settings))

    assert refused.value.field == "database_url"
    assert "0099" in refused.value.message


def test_prepare__not_migrating_schema_behind__waits_then_refuses_naming_the_command(
    fresh_database: db.Database,
) -> None:
    settings = RuntimeSettings(migrate_on_start=False, schema_wait_s=0.3)

    with pytest.raises(FailedPrecondition) as refused:
        asyncio.run(migrations.prepare(fresh_database, "decision", settings))

    assert "tessera migrate decision" in refused.value.message
    assert "decision_definitions" not in tables_of(fresh_database)


def test_prepare__not_migrating__starts_once_the_migration_job_has_run(
    fresh_database: db.Database,
) -> None:
    settings = RuntimeSettings(migrate_on_start=False, schema_wait_s=20)
    job = threading.Timer(0.5, migrations.upgrade, (fresh_database.engine, "decision"))
    started = time.monotonic()
    job.start()

    asyncio.run(migrations.prepare(fresh_database, "decision", settings))

    job.join()
    assert 0.5 <= time.monotonic() - started < 10
    assert (
        migrations.state(fresh_database.engine, "decision")[0]
        == migrations.head("decision")
        == "0002"
    )


def test_migrate__replicas_migrate_together__one_schema_no_error(postgres_url: str) -> None:
    with _postgres_database(postgres_url) as url:
        database = db.Database(url)
        errors: list[BaseException] = []
        barrier = threading.Barrier(6)

        def one() -> None:
            barrier.wait()
            try:
                migrations.upgrade(database.engine, "profiles")
            except BaseException as error:  # collected and asserted on below
                errors.append(error)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with database.engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM profiles_alembic_version"))
            revisions = rows.all()
        database.dispose()

    assert errors == []
    assert revisions == [(migrations.head("profiles"),)]


def test_cli_migrate__postgres__upgrades_then_nothing_to_do_and_check_says_so(
    postgres_url: str,
) -> None:
    def tessera(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TESSERA_DATABASE_URL": url.replace("+psycopg", "")}
        return subprocess.run(
            [sys.executable, "-m", "tessera.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    with _postgres_database(postgres_url) as url:
        before = tessera("migrate", "--check")
        first = tessera("migrate")
        second = tessera("migrate", "profiles")
        after = tessera("migrate", "--check")

    assert before.returncode == 1
    assert "profiles: at nothing, this release's head 0006: behind" in before.stdout
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"{service}: empty -> {migrations.head(service)} (at {migrations.head(service)})"
        for service in ("profiles", "segments", "experiments", "decision")
    ]
    assert second.stdout.splitlines() == ["profiles: nothing to do (at 0006)"]
    assert after.returncode == 0
    assert after.stdout.count("up to date") == 4


def test_new_revision__model_adds_a_table__revision_creates_it_and_upgrades(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    real = migrations.schema_of("decision")
    extra = Table(
        "decision_pressure",
        MetaData(),
        Column("profile_id", String(40), primary_key=True),
        Column("spent", Integer, nullable=False),
    )
    grown = migrations.Schema(
        real.service, real.versions, lambda: [*real.tables(), extra], real.legacy
    )
    monkeypatch.setattr(migrations, "schema_of", lambda service: grown)
    into = Path(str(tmp_path)) / "versions"
    into.mkdir()

    written = migrations.new_revision("decision", "pressure counters", into=into)

    source = written.read_text()
    assert written.parent == into and written.name == "v0003_pressure_counters.py"
    assert 'revision = "0003"' in source and 'down_revision = "0002"' in source
    assert "op.create_table(" in source and "decision_pressure" in source
    assert "sa.String(length=40)" in source
    database = db.Database(f"sqlite:///{tmp_path}/grown.db")
    try:
        monkeypatch.setattr(migrations, "config", _with_extra(migrations.config, into))
        migrations.upgrade(database.engine, "decision")
        assert differences(database, "decision") == []
        assert "decision_pressure" in tables_of(database)
    finally:
        database.dispose()


def _with_extra(config: object, into: object) -> object:
    """`migrations.config` reading revisions from `into` as well."""

    def configured(service: str, connection: object = None, url: str = "", extra: object = None):
        return config(service, connection, url, extra or into)  # type: ignore[operator]

    return configured
