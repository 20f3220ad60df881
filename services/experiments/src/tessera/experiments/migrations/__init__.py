"""The experiment service's schema: Alembic revisions in `versions/` (see `tessera.migrations`).

0001: the definitions. 0002: exposures, sticky assignments, goal events,
splits, aliases and the feed cursors (which the hand-written migrator of
earlier releases created from the models under its version 1, so a database
stamped at 0001 may hold them).
"""

from __future__ import annotations

from sqlalchemy import Table

LEGACY_REVISIONS = {1: "0001"}
"""Hand-written schema version -> the revision that stands for it."""


def tables() -> list[Table]:
    """The tables the experiment service's code reads and writes."""
    from tessera.definitions.store import tables_of
    from tessera.experiments.storage.sql import TABLES
    from tessera.feed import cursor_table

    models = [*tables_of("experiments"), cursor_table("experiments"), *TABLES]
    return [model.__table__ for model in models]  # type: ignore[attr-defined]
