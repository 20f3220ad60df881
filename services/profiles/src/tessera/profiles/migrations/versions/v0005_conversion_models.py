"""Trained conversion models; one schema for every database, however it came.

`profiles_model` arrived without a version of the hand-written migrator,
so a database stamped at 0004 may or may not hold it. That migrator also
added feed positions without making them unique; databases it upgraded get
the unique index here (one it created whole already has a constraint).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "profiles_model" not in inspector.get_table_names():
        op.create_table(
            "profiles_model",
            sa.Column("version", sa.String(length=64), primary_key=True),
            sa.Column("goal", sa.String(length=64), nullable=False),
            sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("intercept", sa.Float(), nullable=False),
            sa.Column("weights", sa.JSON(), nullable=False),
            sa.Column("auc", sa.Float(), nullable=False),
            sa.Column("calibration_error", sa.Float(), nullable=False),
            sa.Column("examples", sa.Integer(), nullable=False),
            sa.Column("held_out", sa.Integer(), nullable=False),
        )
        op.create_index("ix_profiles_model_goal", "profiles_model", ["goal"])
        op.create_index("ix_profiles_model_trained_at", "profiles_model", ["trained_at"])
    unique: list[list[str | None]] = [
        list(c["column_names"]) for c in inspector.get_unique_constraints("profiles_log")
    ]
    unique += [
        list(i["column_names"]) for i in inspector.get_indexes("profiles_log") if i["unique"]
    ]
    if ["position"] not in unique:
        op.create_index("ux_profiles_log_position", "profiles_log", ["position"], unique=True)
