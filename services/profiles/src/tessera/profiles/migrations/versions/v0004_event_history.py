"""`profiles_profile.event_history`; profiles stored before read as no history.

Events already in the log are not replayed into it: windows fill from the
first event after the upgrade (docs/rules.md says so).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("profiles_profile", sa.Column("event_history", sa.JSON(), nullable=True))
