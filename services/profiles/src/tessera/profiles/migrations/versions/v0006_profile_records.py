"""One "profile" feed record for every profile held.

Identify and UpdateTraits write a "profile" record (traits and identity
types after the change) into the log; profiles stored before that get
theirs here, with the traits and identity types they hold and their
creation time, and no feed position: the sequencer numbers them like any
new record, so a follower that keeps traits learns of every profile.

A profile that has a "profile" record already gets none: a database the
hand-written migrator brought to its version 5 (stamped at 0004, the tables
being the same) did this backfill then, and replicas of this release may
have written records before this ran.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 1000
"""Profiles read and records written at a time."""

profile = sa.table(
    "profiles_profile",
    sa.column("profile_id", sa.String()),
    sa.column("traits", sa.JSON()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
identity = sa.table(
    "profiles_identity",
    sa.column("profile_id", sa.String()),
    sa.column("id_type", sa.String()),
)
log = sa.table(
    "profiles_log",
    sa.column("kind", sa.String()),
    sa.column("profile_id", sa.String()),
    sa.column("type", sa.String()),
    sa.column("channel", sa.Integer()),
    sa.column("ts", sa.DateTime()),
    sa.column("properties", sa.JSON()),
    sa.column("identities", sa.JSON()),
    sa.column("applied", sa.Boolean()),
)


def upgrade() -> None:
    connection = op.get_bind()
    recorded = sa.exists().where(log.c.kind == "profile", log.c.profile_id == profile.c.profile_id)
    query = (
        sa.select(profile.c.profile_id, profile.c.traits, profile.c.created_at)
        .where(~recorded)
        .order_by(profile.c.created_at, profile.c.profile_id)
        .limit(BATCH)
    )
    while True:
        # The profiles given a record no longer match `~recorded`: each page
        # is the next one, and every page written brings the end nearer.
        rows = connection.execute(query).all()
        if not rows:
            return
        ids = [row.profile_id for row in rows]
        types: dict[str, set[str]] = {}
        for profile_id, id_type in connection.execute(
            sa.select(identity.c.profile_id, identity.c.id_type).where(
                identity.c.profile_id.in_(ids)
            )
        ):
            types.setdefault(profile_id, set()).add(id_type)
        op.bulk_insert(
            log,
            [
                {
                    "kind": "profile",
                    "profile_id": row.profile_id,
                    "type": "",
                    "channel": 0,
                    "ts": row.created_at,
                    "properties": {
                        "traits": dict(row.traits or {}),
                        "identity_types": sorted(types.get(row.profile_id, ())),
                    },
                    "identities": [],
                    "applied": True,
                }
                for row in rows
            ],
        )
