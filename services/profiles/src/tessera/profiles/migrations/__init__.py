"""The profile service's schema: Alembic revisions in `versions/` (see `tessera.migrations`).

0001 to 0004 are the versions of the hand-written migrator of earlier
releases (`profiles_schema`), which a database at one of them is stamped
with; 0005 brings every database, whichever way it came, to the same tables;
0006 gives every profile held a "profile" feed record. The migrator's
version 5 was that backfill, on version 4's tables: such a database is
stamped at 0004, and 0006 skips the profiles that have their record.
"""

from __future__ import annotations

from sqlalchemy import Table

LEGACY_REVISIONS = {1: "0001", 2: "0002", 3: "0003", 4: "0004", 5: "0004"}
"""Hand-written schema version -> the revision that stands for it."""


def tables() -> list[Table]:
    """The tables the profile service's code reads and writes."""
    from tessera.profiles.storage.sql import TABLES

    return [model.__table__ for model in TABLES]  # type: ignore[attr-defined]
