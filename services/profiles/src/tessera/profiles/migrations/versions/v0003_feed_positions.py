"""Feed positions; the records already held get theirs in id order.

Each record takes its row id as position (ids grow with inserts, so that
is id order) and the feed's counter starts after the highest. Records
written meanwhile by replicas of the previous release (a rolling upgrade)
have no position and are numbered by the sequencer like any new record.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("profiles_log", sa.Column("position", sa.BigInteger(), nullable=True))
    op.add_column(
        "profiles_log", sa.Column("sequenced_at", sa.DateTime(timezone=True), nullable=True)
    )
    # A unique index rather than a constraint: SQLite adds an index to a
    # table in place, a constraint only by rewriting the table.
    op.create_index("ux_profiles_log_position", "profiles_log", ["position"], unique=True)
    # What the sequencer looks for at every run: the few rows not numbered yet.
    op.create_index(
        "ix_profiles_log_unsequenced",
        "profiles_log",
        ["sequence"],
        postgresql_where=sa.text("position IS NULL"),
        sqlite_where=sa.text("position IS NULL"),
    )
    feed = op.create_table(
        "profiles_feed",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("purged_through", sa.BigInteger(), nullable=False),
    )
    log = sa.table(
        "profiles_log",
        sa.column("sequence", sa.Integer()),
        sa.column("position", sa.BigInteger()),
        sa.column("sequenced_at", sa.DateTime(timezone=True)),
    )
    connection = op.get_bind()
    connection.execute(
        log.update()
        .where(log.c.position.is_(None))
        .values(position=log.c.sequence, sequenced_at=dt.datetime.now(dt.UTC))
    )
    last = connection.execute(sa.select(sa.func.max(log.c.position))).scalar() or 0
    connection.execute(feed.insert().values(id=1, last_position=last, purged_through=0))
