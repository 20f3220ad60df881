"""Fixtures of the profile service's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera import db, migrations
from tessera.profiles.server import ProfilesSettings
from tessera.profiles.storage.sql import ProfileStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProfileStore]:
    """A profile store on an embedded database of its own."""
    database = db.open_database(ProfilesSettings(data_dir=str(tmp_path)), "profiles")
    migrations.upgrade(database.engine, "profiles")
    yield ProfileStore(database)
    database.dispose()
