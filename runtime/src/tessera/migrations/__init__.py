"""Schema migrations: one Alembic environment per service.

Each service keeps its revisions in its own package
(`tessera/<service>/migrations/versions/`), so they ship with it, and
records where its tables stand in a version table of its own
(`<service>_alembic_version`): services can share one database without
touching each other's tables or revisions. Nothing reads an alembic.ini:
the configuration is built here (`config`), and the environment script
beside this file (`env.py`, calling `environment`) is the same for every
service.

Who runs them:
- `tessera migrate [service...]` (a Kubernetes Job in production);
- a service at start when TESSERA_MIGRATE_ON_START is on (the default,
  so the embedded suite creates and upgrades its files by itself). With it
  off, a service waits up to TESSERA_SCHEMA_WAIT_S for its schema to reach
  this release's revision and refuses to start otherwise.

An upgrade runs in one transaction, on PostgreSQL under an advisory lock
per service, so replicas or Jobs running at once migrate one after the
other instead of racing to create the same tables.

Databases written by the hand-written migrator of earlier releases (a
`<service>_schema` table holding a version number) are adopted: stamped
at the revision matching their version (the service's `LEGACY_REVISIONS`)
and upgraded from there, never recreated.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import Connection, DateTime, Engine, MetaData, Table, TypeDecorator, inspect, text
from sqlmodel.sql.sqltypes import AutoString

from tessera.db import Database, make_engine
from tessera.errors import FailedPrecondition
from tessera.settings import RuntimeSettings

log = logging.getLogger("tessera.migrations")

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Schema:
    """What a service's `tessera.<service>.migrations` package declares."""

    service: str
    versions: Path
    """The folder of its revision files."""
    tables: Callable[[], Sequence[Table]]
    """The tables its code expects, for comparing against a migrated database."""
    legacy: Mapping[int, str]
    """Hand-written schema version -> the revision that stands for it."""


@functools.cache
def schema_of(service: str) -> Schema:
    """The migrations of `service`, from its package."""
    module: Any = importlib.import_module(f"tessera.{service}.migrations")
    return Schema(
        service=service,
        versions=Path(module.__file__).resolve().parent / "versions",
        tables=module.tables,
        legacy=dict(module.LEGACY_REVISIONS),
    )


def version_table(service: str) -> str:
    """The table holding `service`'s revision."""
    return f"{service}_alembic_version"


def metadata(service: str) -> MetaData:
    """A MetaData holding the tables `service`'s code expects (for autogenerate, checks)."""
    target = MetaData()
    for table in schema_of(service).tables():
        table.to_metadata(target)
    return target


def owns(service: str, name: str | None) -> bool:
    """Whether table `name` belongs to `service`: its prefix, and not its version table."""
    return bool(name) and str(name).startswith(f"{service}_") and name != version_table(service)


def config(
    service: str, connection: Connection | None = None, url: str = "", extra: Path | None = None
) -> Config:
    """Alembic's configuration for `service`, built here rather than read from a file.

    `env.py` runs on `connection` when given, else on a connection to `url`.
    `extra` is one more folder of revisions (a new one written elsewhere).
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    folders = [str(schema_of(service).versions), *([str(extra)] if extra else [])]
    cfg.set_main_option("version_locations", os.pathsep.join(folders))
    # Revision files are named v<id>_<slug>.py: importable names (mypy, ruff).
    cfg.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    cfg.attributes["service"] = service
    cfg.attributes["connection"] = connection
    cfg.attributes["url"] = url
    return cfg


def _render_item(type_: str, item: Any, _context: AutogenContext) -> str | Literal[False]:
    """SQLModel's column types written as plain SQLAlchemy ones: a revision
    spells out the schema and does not change when SQLModel does."""
    if type_ == "type" and isinstance(item, AutoString):
        return f"sa.String(length={item.length})" if item.length else "sa.String()"
    if type_ == "type" and isinstance(item, TypeDecorator) and isinstance(item.impl, DateTime):
        return f"sa.DateTime(timezone={item.impl.timezone})"
    return False


def environment(cfg: Config) -> None:
    """What Alembic's environment script (`env.py`) does for every service and command.

    Runs on the connection `config` handed over (inside the caller's
    transaction and lock), or on a connection of its own to the URL given
    there. Only the service's own tables are compared or touched: services
    may share one database.
    """
    from alembic import context

    service: str = cfg.attributes["service"]

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata(service),
            version_table=version_table(service),
            include_name=lambda name, kind, _parent: kind != "table" or owns(service, name),
            compare_type=True,
            render_item=_render_item,
        )
        with context.begin_transaction():
            context.run_migrations()

    handed: Connection | None = cfg.attributes.get("connection")
    if handed is not None:
        run(handed)
        return
    engine = make_engine(cfg.attributes["url"])
    try:
        with engine.begin() as connection:
            run(connection)
    finally:
        engine.dispose()


def script(service: str) -> ScriptDirectory:
    """The revisions of `service`."""
    return ScriptDirectory.from_config(config(service))


def head(service: str) -> str:
    """The revision this release's code expects."""
    found = script(service).get_current_head()
    if found is None:
        raise RuntimeError(f"{service} has no migrations")
    return found


def new_revision(service: str, message: str, into: Path | None = None) -> Path:
    """Write `service`'s next revision: what its tables lack against its models.

    For developers (`tessera migrate --new-revision`): Alembic's autogenerate
    compares the models with a scratch SQLite database brought to the
    current head, and writes the difference as `op.*` calls to review and
    complete (data to move, defaults to fill). Into the service's
    `versions/`, or `into`.
    """
    with tempfile.TemporaryDirectory(prefix="tessera-revision-") as scratch:
        url = f"sqlite:///{scratch}/scratch.db"
        engine = make_engine(url)
        try:
            upgrade(engine, service)
        finally:
            engine.dispose()
        number = f"{int(head(service)) + 1:04d}"
        cfg = config(service, url=url, extra=into)
        ruff = Path(sys.executable).with_name("ruff")
        if ruff.is_file():  # a developer's environment: the file in the project's format
            cfg.set_section_option("post_write_hooks", "hooks", "ruff")
            cfg.set_section_option("post_write_hooks", "ruff.type", "exec")
            cfg.set_section_option("post_write_hooks", "ruff.executable", str(ruff))
            cfg.set_section_option(
                "post_write_hooks", "ruff.options", "format REVISION_SCRIPT_FILENAME"
            )
        written = command.revision(
            cfg,
            message=message,
            autogenerate=True,
            rev_id=number,
            version_path=str(into) if into else None,
        )
    assert written is not None and not isinstance(written, list)
    return Path(written.path)


def _lock_key(service: str) -> int:
    """A stable 64-bit key for PostgreSQL's advisory lock of `service`'s schema."""
    digest = hashlib.sha256(f"tessera-schema:{service}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def current(connection: Connection, service: str) -> str | None:
    """The revision the database is at; None before the first migration."""
    context = MigrationContext.configure(connection, opts={"version_table": version_table(service)})
    return context.get_current_revision()


def _adopt_legacy(connection: Connection, service: str) -> str | None:
    """Stamp a database of the hand-written migrator at its revision; the revision or None."""
    legacy_table = f"{service}_schema"
    names = set(inspect(connection).get_table_names())
    if legacy_table not in names or version_table(service) in names:
        return None
    version = connection.execute(text(f"SELECT version FROM {legacy_table}")).scalar()
    revision = schema_of(service).legacy.get(int(version or 0))
    if revision is None:
        raise FailedPrecondition(
            f"database schema of {service} is at hand-written version {version}, "
            f"which this release does not know",
            field="database_url",
        )
    command.stamp(config(service, connection), revision)
    # Alembic's version table replaces it; kept, an older release would read
    # a version number that no longer says where the tables stand.
    connection.execute(text(f"DROP TABLE {legacy_table}"))
    log.info(
        "adopted a database of the hand-written migrator",
        extra={"service": service, "schema_version": version, "revision": revision},
    )
    return revision


@dataclass(frozen=True)
class Upgraded:
    """What an upgrade did: the revision before (None: empty database) and after."""

    service: str
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        """Whether any revision ran."""
        return self.before != self.after


def upgrade(engine: Engine, service: str, revision: str = "head") -> Upgraded:
    """Bring `service`'s tables in `engine`'s database to `revision` (blocking).

    One transaction; on PostgreSQL under the service's advisory lock. A
    database at a revision this release does not know (a newer release
    migrated it) is refused rather than misread.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(service)}
            )
        before = _adopt_legacy(connection, service) or current(connection, service)
        if before is not None and not knows(service, before):
            raise FailedPrecondition(
                f"database schema of {service} is at revision {before}, which this release "
                "does not know (a newer release migrated it)",
                field="database_url",
            )
        command.upgrade(config(service, connection), revision)
        after = current(connection, service)
    assert after is not None  # an upgrade always leaves a revision
    return Upgraded(service, before, after)


def knows(service: str, revision: str) -> bool:
    """Whether this release has `revision` among `service`'s revisions."""
    try:
        return script(service).get_revision(revision) is not None
    except (ResolutionError, CommandError):
        return False


def state(engine: Engine, service: str) -> tuple[str | None, str, bool]:
    """(where the database stands, this release's head, whether this release knows the former)."""
    with engine.connect() as connection:
        at = current(connection, service)
        legacy = at is None and f"{service}_schema" in inspect(connection).get_table_names()
    if legacy:
        return "a hand-written schema version", head(service), True
    return at, head(service), at is None or knows(service, at)


async def prepare(database: Database, service: str, settings: RuntimeSettings) -> None:
    """A service's schema at start: migrate it, or wait for `tessera migrate` to have done so.

    Without `settings.migrate_on_start`, a schema behind this release is
    waited for (up to `settings.schema_wait_s`, looked at every second) and
    then refused; a schema ahead of it, which a newer release's migration
    Job brought forward during a rolling upgrade, is served with a warning:
    revisions only add (docs/operations.md, "Upgrade without downtime").
    """
    engine = database.engine
    if settings.migrate_on_start:
        done = await database.run(upgrade, engine, service)
        if done.changed:
            log.info(
                "schema migrated",
                extra={"service": service, "from": done.before, "to": done.after},
            )
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.schema_wait_s
    while True:
        at, expected, known = await database.run(state, engine, service)
        if at == expected:
            return
        if not known:
            log.warning(
                "schema is ahead of this release (a newer release migrated it); serving",
                extra={"service": service, "revision": at, "expected": expected},
            )
            return
        if loop.time() >= deadline:
            raise FailedPrecondition(
                f"database schema of {service} is at {at or 'nothing yet'}, this release needs "
                f"{expected}: run `tessera migrate {service}` (production's migration Job), "
                "or set TESSERA_MIGRATE_ON_START=true",
                field="database_url",
            )
        log.info(
            "waiting for the schema migration",
            extra={"service": service, "revision": at, "expected": expected},
        )
        await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
