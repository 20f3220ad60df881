"""The decision service's schema: Alembic revisions in `versions/` (see `tessera.migrations`).

0001: the campaign definitions. 0002: the cursor of its change-feed consumer
(merges and erasures reach the pressure counters, docs/decide.md).
"""

from __future__ import annotations

from sqlalchemy import Table

LEGACY_REVISIONS = {1: "0001"}
"""Hand-written schema version -> the revision that stands for it."""


def tables() -> list[Table]:
    """The tables the decision service's code reads and writes."""
    from tessera.definitions.store import tables_of
    from tessera.feed import cursor_table

    models = [*tables_of("decision"), cursor_table("decision")]
    return [model.__table__ for model in models]  # type: ignore[attr-defined]
