"""The feed cursors (`tessera.feed.Cursors`) and the stored projection snapshot.

The hand-written migrator of earlier releases created both from the models
under its version 1, so a database stamped at 0001 may hold them already:
only a table that is missing is created.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    held = set(sa.inspect(op.get_bind()).get_table_names())
    if "segments_feed_cursor" not in held:
        op.create_table(
            "segments_feed_cursor",
            sa.Column("consumer", sa.String(length=64), primary_key=True),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "segments_projection" not in held:
        op.create_table(
            "segments_projection",
            sa.Column("part", sa.Integer(), primary_key=True),
            sa.Column("data", sa.LargeBinary(), nullable=False),
        )
