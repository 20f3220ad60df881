"""Durable storage plumbing: one SQLModel engine per service.

Embedded default: a SQLite file per service in the data folder (WAL mode, so
readers do not wait for the writer). Production: PostgreSQL through
`TESSERA_DATABASE_URL`. Each service has only its own tables, all named with
the service's prefix, so services can share one database server without
touching each other's data; `tessera.migrations` creates and upgrades them.

SQL runs in worker threads (`run`), never on the event loop: a slow query
must not stall every other call of the process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    event,
    text,
)
from sqlmodel import create_engine

from tessera import jsoncodec
from tessera.settings import RuntimeSettings

T = TypeVar("T")

log = logging.getLogger("tessera.db")

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
    # Deleted rows are overwritten with zeros, not left in free pages: an
    # erased person must not stay readable in the file (see `scrub`).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`, tuned for SQLite or PostgreSQL; JSON columns through
    `tessera.jsoncodec`."""
    if url.startswith("sqlite"):
        # One pooled connection per database thread: opening SQLite connections
        # per call (the default pool's overflow) costs more than the query.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=DB_THREADS,
            max_overflow=0,
            json_serializer=jsoncodec.dumps,
            json_deserializer=jsoncodec.loads,
        )
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=DB_THREADS,
        max_overflow=0,
        json_serializer=jsoncodec.dumps,
        json_deserializer=jsoncodec.loads,
    )


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

    async def ping(self) -> None:
        """Raise when the database cannot answer a trivial query (for health)."""

        def select_one() -> None:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        await self.run(select_one)

    def scrub(self) -> None:
        """Leave nothing deleted readable in the database's files (blocking).

        SQLite: `secure_delete` zeroes deleted rows in the pages, but the
        write-ahead log still holds the pages as they were before; a
        checkpoint copies the current pages into the file and truncates the
        log to nothing. PostgreSQL: deleted rows are no longer live in any
        snapshot once the deletion commits; their space is reclaimed by
        (auto)vacuum, as for any other delete.
        """
        if not self.url.startswith("sqlite"):
            return
        with self.engine.connect() as connection:
            busy = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").scalar()
        if busy:
            # A reader of another process holds an old snapshot past the busy
            # timeout; the log is truncated at the next checkpoint instead.
            log.warning("wal checkpoint after erasure was busy", extra={"url": self.url})

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def open_database(settings: RuntimeSettings, service: str) -> Database:
    """The database the settings give `service`."""
    return Database(database_url(settings, service))
