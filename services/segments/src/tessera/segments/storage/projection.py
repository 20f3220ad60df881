"""The stored projection: its latest snapshot, in the segment service's own database.

A snapshot is the projection's compressed blob (`Projection.to_bytes`), in
parts of at most `PART_BYTES` (rows of `segments_projection`), and the
feed position it covers, kept as the cursor of the consumer "projection"
in `segments_feed_cursor`. Both are written in one transaction, so the
parts and the position always match; the cursor moves by compare and set,
so of two replicas saving at once only one snapshot is kept, and an older
one never replaces a newer one. Everything here is blocking; call it
through `Database.run`.
"""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary, delete
from sqlmodel import Field, Session, SQLModel, col, select

from tessera.db import Database
from tessera.feed import CursorMoved, Cursors

CONSUMER = "projection"
"""The cursor row holding the position of the stored snapshot."""
PART_BYTES = 8 * 1024 * 1024
"""Largest part of a stored snapshot (one row)."""


class ProjectionPart(SQLModel, table=True):
    """One part of the stored snapshot, in order."""

    __tablename__ = "segments_projection"

    part: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SnapshotStore:
    """The latest snapshot of the projection and the position it covers (blocking)."""

    def __init__(self, database: Database, cursors: Cursors) -> None:
        self.database = database
        self.cursors = cursors

    @property
    def tables(self) -> list[type[SQLModel]]:
        """The tables it reads and writes (the cursor table comes with `cursors`)."""
        return [ProjectionPart]

    def position(self) -> int:
        """The feed position of the stored snapshot; 0 when there is none."""
        return self.cursors.load(CONSUMER)

    def load(self) -> bytes | None:
        """The stored snapshot's blob, or None when none is stored."""
        with Session(self.database.engine) as session:
            # One statement: the parts of one snapshot, never of two.
            parts = session.exec(select(ProjectionPart).order_by(col(ProjectionPart.part))).all()
        return b"".join(part.data for part in parts) if parts else None

    def save(self, blob: bytes, position: int) -> bool:
        """Store `blob` as the snapshot at `position`; False when a newer one is stored."""
        with Session(self.database.engine) as session:
            stored = self.cursors.load(CONSUMER)
            if stored >= position:
                return False
            session.execute(delete(ProjectionPart))
            for index, start in enumerate(range(0, len(blob), PART_BYTES)):
                session.add(ProjectionPart(part=index, data=blob[start : start + PART_BYTES]))
            try:
                self.cursors.advance(session, CONSUMER, stored, position)
            except CursorMoved:
                session.rollback()
                return False
            session.commit()
        return True
