"""Alembic's environment script for every service: see `tessera.migrations.environment`.

Alembic runs this file with its context set up; imported any other way (a
tool walking the package), it does nothing.
"""

from __future__ import annotations

from alembic import context

from tessera.migrations import environment

if hasattr(context, "config"):
    environment(context.config)
