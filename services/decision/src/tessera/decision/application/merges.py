"""Merges and erasures from the profile service's change feed, applied to the counters.

Decide folds the counters of the profiles its own Identify merged at once
(IdentifyResponse.merged_profile_ids). A merge made elsewhere (a login
handled by a backend calling ProfileService.Identify itself, an import)
reaches this service through the change feed's `merge` record instead, and
an erased person's counters go with the feed's `deletion` record.

The runner (tessera.feed.FeedRunner) delivers at least once; both effects
are idempotent: a fold removes the merged record, so folding it again adds
nothing, and forgetting twice forgets nothing more.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any

from tessera.decision.domain.pressure import ChargePlan
from tessera.decision.storage.counters import CounterStore
from tessera.feed import Cursors, FeedRunner, sequence_of

CONSUMER = "decision-pressure"
"""The consumer's name in the decision service's feed cursor table."""


class MergeFollower:
    """Folds merged people's counters into the survivor's; forgets erased people."""

    def __init__(
        self,
        store: CounterStore,
        cursors: Cursors,
        connect: Callable[[int], AsyncIterable[Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.clock = clock
        self.runner: FeedRunner[Any] = FeedRunner(
            CONSUMER, cursors, connect, sequence_of, handle=self.handle
        )

    async def handle(self, records: Sequence[Any]) -> None:
        """Apply a batch of feed records to the counters (idempotent)."""
        for record in records:
            kind = record.WhichOneof("record")
            if kind == "merge":
                merge = record.merge
                await self.store.charge(
                    merge.survivor_profile_id,
                    ChargePlan(),
                    [merge.merged_profile_id],
                    int(self.clock()),
                    [],
                )
            elif kind == "deletion":
                deletion = record.deletion
                await self.store.forget([deletion.profile_id, *deletion.merged_profile_ids])

    def start(self) -> None:
        """Follow the feed in the background."""
        self.runner.start()

    async def stop(self) -> None:
        """Stop following; the cursor keeps what was handled."""
        await self.runner.stop()
