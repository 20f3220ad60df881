"""The first tables: profiles, identities, aliases, the event log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles_profile",
        sa.Column("profile_id", sa.String(length=40), primary_key=True),
        sa.Column("traits", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "profiles_identity",
        sa.Column("id_type", sa.String(length=32), primary_key=True),
        sa.Column("id_value", sa.String(length=512), primary_key=True),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_profiles_identity_profile_id", "profiles_identity", ["profile_id"])
    op.create_table(
        "profiles_alias",
        sa.Column("alias_id", sa.String(length=40), primary_key=True),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
    )
    op.create_index("ix_profiles_alias_profile_id", "profiles_alias", ["profile_id"])
    op.create_table(
        "profiles_log",
        sa.Column("sequence", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True, unique=True),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("identities", sa.JSON(), nullable=False),
    )
    op.create_index("ix_profiles_log_profile_id", "profiles_log", ["profile_id"])
