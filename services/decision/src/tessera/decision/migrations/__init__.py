"""The decision service's schema: Alembic revisions in `versions/` (see `tessera.migrations`)."""

from __future__ import annotations

from sqlalchemy import Table

LEGACY_REVISIONS = {1: "0001"}
"""Hand-written schema version -> the revision that stands for it."""


def tables() -> list[Table]:
    """The tables the decision service's code reads and writes."""
    from tessera.definitions.store import tables_of

    return [model.__table__ for model in tables_of("decision")]  # type: ignore[attr-defined]
