"""`profiles_log.applied`: events stored before the flag were applied when stored.

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
    # The default fills the rows already held: they were applied when stored.
    op.add_column(
        "profiles_log",
        sa.Column("applied", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
