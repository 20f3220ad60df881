"""Durable storage plumbing: one SQLModel engine per service.

Embedded default: a SQLite file per service in the data folder (WAL mode, so
readers do not wait for the writer). Production: PostgreSQL through
`TESSERA_DATABASE_URL`. Each service creates only its own tables, all named
with the service's prefix, so services can share one database server without
touching each other's data.

SQL runs in worker threads (`run`), never on the event loop: a slow query
must not stall every other call of the process.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, event
from sqlmodel import Field, Session, SQLModel, create_engine, select

from tessera.errors import FailedPrecondition
from tessera.settings import RuntimeSettings

T = TypeVar("T")

DB_THREADS = 8
"""Threads running SQL per process, and pooled connections per engine."""


def database_url(settings: RuntimeSettings, service: str) -> str:
    """The service's database: the configured URL, else its SQLite file."""
    if settings.database_url:
        url = settings.database_url
        # psycopg 3 is the driver we ship; accept the plain scheme people copy.
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        elif url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgres://")
        return url
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / f'{service}.db').resolve()}"


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`, tuned for SQLite or PostgreSQL."""
    if url.startswith("sqlite"):
        # One pooled connection per database thread: opening SQLite connections
        # per call (the default pool's overflow) costs more than the query.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=DB_THREADS,
            max_overflow=0,
        )
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=DB_THREADS, max_overflow=0)


class SchemaVersion(SQLModel, table=True):
    """The schema version each service's tables are at."""

    __tablename__ = "tessera_schema"

    service: str = Field(primary_key=True)
    version: int


Migration = Callable[[Session], None]


def migrate(
    engine: Engine,
    service: str,
    tables: Sequence[type[SQLModel]],
    version: int = 1,
    steps: dict[int, Migration] | None = None,
) -> None:
    """Create the service's tables, then run the migration steps it lacks.

    `steps[n]` brings the schema from version n-1 to n. A database written by
    a newer release is refused rather than misread.
    """
    SQLModel.metadata.create_all(
        engine, tables=[SchemaVersion.__table__, *(_table(t) for t in tables)]
    )
    with Session(engine) as session:
        row = session.get(SchemaVersion, service)
        current = row.version if row else 0
        if current > version:
            raise FailedPrecondition(
                f"database schema of {service} is at version {current}, newer than this "
                f"release's {version}",
                field="database_url",
            )
        for step in range(current + 1, version + 1):
            if steps and step in steps and current > 0:
                steps[step](session)
        if row is None:
            session.add(SchemaVersion(service=service, version=version))
        else:
            row.version = version
        session.commit()


def _table(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


_executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="tessera-db")


class Database:
    """A service's database: its engine, and how blocking SQL is run from async code.

    PostgreSQL calls wait on the network, so they run in worker threads and
    never stall the event loop. Embedded SQLite answers in tens of
    microseconds, less than a hop to a thread costs, so its calls run
    inline; only this process writes the file, so they do not wait on locks.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.inline = url.startswith("sqlite")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, inline for SQLite, in the database thread pool otherwise."""
        if self.inline:
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_executor, functools.partial(fn, *args))

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def open_database(settings: RuntimeSettings, service: str) -> Database:
    """The database the settings give `service`."""
    return Database(database_url(settings, service))


__all__ = [
    "Database",
    "Session",
    "database_url",
    "make_engine",
    "migrate",
    "open_database",
    "select",
]
