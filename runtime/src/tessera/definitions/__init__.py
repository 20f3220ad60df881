"""Versioned definitions (segments, experiments, campaigns): stored, fanned out, followed.

Three jobs that fail differently, one module each:

- `store`: the durable rows in SQL (`DefinitionStore`); blocking, fails with
  the database, never half-writes.
- `feed`: one poller per kind fanning snapshot-then-changes out to watchers
  (`DefinitionFeed`); a failed poll is retried, watchers keep what they have.
- `cache`: what a replica's hot path reads (`DefinitionCache`); an unreadable
  definition is left out, the rest keeps serving.

`watcher` holds the one loop that follows a snapshot-then-changes stream
(local feed or a peer's `Watch…` RPC) into what evaluation reads.
"""

from tessera.definitions.cache import DefinitionCache
from tessera.definitions.feed import Change, DefinitionFeed
from tessera.definitions.store import Check, Definition, DefinitionStore
from tessera.definitions.watcher import Backoff, Batch, WatchedSet, Watcher

__all__ = [
    "Backoff",
    "Batch",
    "Change",
    "Check",
    "Definition",
    "DefinitionCache",
    "DefinitionFeed",
    "DefinitionStore",
    "WatchedSet",
    "Watcher",
]
