"""Versioned definitions (segments, experiments, campaigns): stored, fanned out, cached.

Three jobs that fail differently, one module each:

- `store`: the durable rows in SQL (`DefinitionStore`); blocking, fails with
  the database, never half-writes.
- `feed`: one poller per kind fanning snapshot-then-changes out to watchers
  (`DefinitionFeed`); a failed poll is retried, watchers keep what they have.
- `cache`: what a replica's hot path reads (`DefinitionCache`); an unreadable
  definition is left out, the rest keeps serving.
"""

from tessera.definitions.cache import DefinitionCache
from tessera.definitions.feed import Change, DefinitionFeed
from tessera.definitions.store import Check, Definition, DefinitionStore

__all__ = [
    "Change",
    "Check",
    "Definition",
    "DefinitionCache",
    "DefinitionFeed",
    "DefinitionStore",
]
