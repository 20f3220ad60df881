"""Fixtures shared by every test folder: real PostgreSQL and Redis per run.

Integration and end-to-end tests use the servers the machine runs, each run
in a database and under a key prefix of its own, removed afterwards. When a
server cannot be reached the test fails (never skips) and says how to start
it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis

ADMIN_DATABASE_URL = os.environ.get(
    "TESSERA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TESSERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

START_POSTGRES = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
    "(or `bash .ci/run`), or point TESSERA_TEST_DATABASE_URL at a server"
)
START_REDIS = (
    "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''` "
    "(or `bash .ci/run`), or point TESSERA_TEST_REDIS_URL at a server"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    name = f"tessera_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(ADMIN_DATABASE_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL at {ADMIN_DATABASE_URL} is not reachable ({error}); {START_POSTGRES}"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_DATABASE_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server tests use; each test run keeps to its own key prefix."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({error}); {START_REDIS}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def key_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this run's own; its keys are deleted at the end."""
    prefix = f"tessera-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def store_env(postgres_url: str, redis_url: str, key_prefix: str) -> dict[str, str]:
    """TESSERA_* settings that put a service on this run's PostgreSQL and Redis."""
    return {
        "TESSERA_DATABASE_URL": postgres_url,
        "TESSERA_REDIS_URL": redis_url,
        "TESSERA_KEY_PREFIX": key_prefix,
    }
