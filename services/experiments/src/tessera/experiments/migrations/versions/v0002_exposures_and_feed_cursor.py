"""Exposures, sticky assignments, goal events, splits, aliases, the feed cursors.

The tables of `tessera.experiments.storage.sql` and the service's
`tessera.feed.Cursors`. The hand-written migrator of earlier releases
created them from the models under its version 1, so a database stamped at
0001 may hold them already: only a table that is missing is created.

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

ID = 256
"""Length of profile ids, exposure ids and event types (`storage.sql._ID`)."""


def upgrade() -> None:
    held = set(sa.inspect(op.get_bind()).get_table_names())
    if "experiments_exposure" not in held:
        op.create_table(
            "experiments_exposure",
            sa.Column("exposure_id", sa.String(length=ID), primary_key=True),
            sa.Column("experiment_key", sa.String(length=64), nullable=False),
            sa.Column("variant_key", sa.String(length=64), nullable=False),
            sa.Column("profile_id", sa.String(length=ID), nullable=False),
            sa.Column("in_holdout", sa.Boolean(), nullable=False),
            sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index(
            "ix_experiments_exposure_profile_id", "experiments_exposure", ["profile_id"]
        )
    if "experiments_assignment" not in held:
        op.create_table(
            "experiments_assignment",
            sa.Column("experiment_key", sa.String(length=64), primary_key=True),
            sa.Column("profile_id", sa.String(length=ID), primary_key=True),
            sa.Column("variant_key", sa.String(length=64), nullable=False),
            sa.Column("in_holdout", sa.Boolean(), nullable=False),
            sa.Column("exposed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("exposure_id", sa.String(length=ID), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("pre_value", sa.Float(), nullable=True),
            sa.Column("synced", sa.Boolean(), nullable=False),
        )
        op.create_index(
            "ix_experiments_assignment_profile", "experiments_assignment", ["profile_id"]
        )
        op.create_index("ix_experiments_assignment_synced", "experiments_assignment", ["synced"])
    if "experiments_goal_event" not in held:
        op.create_table(
            "experiments_goal_event",
            # The profile service's feed sequence: given there, not here.
            sa.Column("sequence", sa.BigInteger(), primary_key=True, autoincrement=False),
            sa.Column("profile_id", sa.String(length=ID), nullable=False),
            sa.Column("event_type", sa.String(length=ID), nullable=False),
            sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revenue", sa.Float(), nullable=False),
        )
        op.create_index(
            "ix_experiments_goal_event_person",
            "experiments_goal_event",
            ["profile_id", "event_type"],
        )
    if "experiments_split" not in held:
        op.create_table(
            "experiments_split",
            sa.Column("experiment_key", sa.String(length=64), primary_key=True),
            sa.Column("version", sa.Integer(), primary_key=True),
            sa.Column("weights", sa.JSON(), nullable=False),
        )
    if "experiments_alias" not in held:
        op.create_table(
            "experiments_alias",
            sa.Column("alias_id", sa.String(length=ID), primary_key=True),
            sa.Column("profile_id", sa.String(length=ID), nullable=False),
        )
        op.create_index("ix_experiments_alias_profile_id", "experiments_alias", ["profile_id"])
    if "experiments_feed_cursor" not in held:
        op.create_table(
            "experiments_feed_cursor",
            sa.Column("consumer", sa.String(length=64), primary_key=True),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
