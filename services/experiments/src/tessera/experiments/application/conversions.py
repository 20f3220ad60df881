"""Conversions from the profiles change feed: goal events, merges, erasures.

The experiment service follows `StreamEvents` with its own cursor
(`tessera.feed.FeedRunner`, consumer `conversions`, table
`experiments_feed_cursor`). The handler runs in the same transaction that
moves the cursor, so each record takes effect exactly once across restarts
of either service:

- an event whose type is the goal of some experiment is kept (its time and
  revenue), under the canonical profile id; whether it converts anyone is
  decided when results are read (after the person's first exposure, within
  the experiment's window), so an event that arrives before its exposure
  does is still counted;
- a merge re-keys the merged id onto the survivor, keeping per experiment
  the earlier exposure as the sticky one;
- an erasure removes the person's exposures, sticky records and goal events
  under the profile id and every id merged into it.

The stream asks only for goal event types (merges and erasures always
come). When an experiment brings a new goal type, the runner reconnects from
its cursor with the new list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any

from sqlmodel import Session

from tessera.experiments.storage import ExposureStore
from tessera.feed import Cursors, FeedRunner, sequence_of

log = logging.getLogger("tessera.experiments.conversions")

CONSUMER = "conversions"
"""The experiment service's consumer name in its cursor table."""

Connect = Callable[[Sequence[str]], Callable[[int], AsyncIterable[Any]]]
"""Opens StreamEvents for some event types, after a sequence."""


def _revenue(event: Any) -> float:
    value = event.properties.fields.get("revenue")
    if value is not None and value.WhichOneof("kind") == "number_value":
        return float(value.number_value)
    return 0.0


class Conversions:
    """The feed handler and its runner, restarted when the goal types change."""

    def __init__(self, store: ExposureStore, cursors: Cursors, connect: Connect) -> None:
        self.store = store
        self.cursors = cursors
        self.connect = connect
        self.goal_types: frozenset[str] = frozenset()
        self.runner: FeedRunner[Any] | None = None
        self._restarting: asyncio.Task[None] | None = None

    def apply(self, records: Sequence[Any], session: Session) -> None:
        """Take a batch of feed records in `session`'s transaction (the cursor moves with it)."""
        for record in records:
            kind = record.WhichOneof("record")
            if kind == "event":
                event = record.event
                if event.type in self.goal_types and event.profile_id:
                    self.store.add_goal_event(
                        session,
                        record.sequence,
                        event.profile_id,
                        event.type,
                        event.timestamp.ToDatetime(),
                        _revenue(event),
                    )
            elif kind == "merge":
                merge = record.merge
                self.store.merge(session, merge.survivor_profile_id, merge.merged_profile_id)
            elif kind == "deletion":
                deletion = record.deletion
                self.store.erase(session, [deletion.profile_id, *deletion.merged_profile_ids])

    def _runner(self) -> FeedRunner[Any]:
        return FeedRunner(
            CONSUMER,
            self.cursors,
            self.connect(sorted(self.goal_types)),
            sequence_of,
            in_transaction=self.apply,
        )

    def follow(self, goal_types: frozenset[str]) -> None:
        """Follow the feed for these goal types; reconnect when they differ from before."""
        if self.runner is not None and goal_types == self.goal_types:
            return
        self.goal_types = goal_types
        previous, self.runner = self.runner, self._runner()
        if previous is None:
            self.runner.start()
            return
        log.info("goal event types changed; following the feed again", extra={"types": goal_types})
        runner = self.runner

        async def swap() -> None:
            await previous.stop()
            runner.start()

        self._restarting = asyncio.create_task(swap(), name="conversions-restart")

    async def stop(self) -> None:
        """Stop following; the cursor keeps what was handled."""
        if self._restarting is not None:
            await self._restarting
        if self.runner is not None:
            await self.runner.stop()
