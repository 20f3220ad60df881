"""Recording exposures, and copying each person's sticky variant onto their profile.

`record` stores a batch (idempotent by exposure id) and wakes the
`StickySync`: an outbox loop that writes each new sticky record onto the
profile as its `_variant:<experiment key>` trait through
ProfileService.UpdateTraits, so Decide finds it with the profile, in its one
hop. The same call answers with the profile, whose event history gives the
person's goal metric before the exposure (the CUPED covariate), stored with
the record.

The outbox is the `synced` flag of the sticky table: a record stays pending
until its trait is written, across restarts and while the profile service
is away, and writing it twice is harmless (the profile keeps the earliest).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import grpc

from tessera.background import Background
from tessera.convert import dict_to_struct
from tessera.definitions import Backoff
from tessera.experiments.domain.covariate import pre_exposure_value
from tessera.experiments.domain.exposures import Exposure, validate_exposures
from tessera.experiments.domain.model import GoalKind
from tessera.experiments.storage import ExposureStore, PendingSticky
from tessera.profiles.v1 import profiles_pb2
from tessera.sticky import trait_name

if TYPE_CHECKING:
    from tessera.profiles.v1.profiles_pb2_grpc import ProfileServiceAsyncStub

log = logging.getLogger("tessera.experiments.exposures")

Goal = tuple[str, GoalKind]
"""An experiment's goal: event type and kind."""

SYNC_BATCH = 200
"""Sticky records taken from the outbox per round."""
SYNC_CONCURRENCY = 16
"""UpdateTraits calls in flight at once."""
SYNC_INTERVAL_S = 1.0
"""How often the outbox is looked at without being woken (records left by a crash)."""
SYNC_TIMEOUT_S = 5.0
"""Deadline of one UpdateTraits call."""


async def record(
    store: ExposureStore,
    exposures: Sequence[Exposure],
    sync: StickySync | None = None,
    splits: Mapping[str, tuple[int, dict[str, float]]] | None = None,
) -> tuple[int, int]:
    """Validate and store `exposures`; (accepted, duplicates). Wakes the sticky sync.

    `splits` is each experiment's version and weights now, kept with the
    people first exposed under it (for the sample-ratio test).
    """
    validate_exposures(exposures)
    now = dt.datetime.now(dt.UTC)
    accepted, duplicates = await store.database.run(store.record, exposures, now, splits)
    if accepted and sync is not None:
        sync.kick()
    return accepted, duplicates


def covariate(
    profile: profiles_pb2.Profile, goal: Goal, exposed_at: dt.datetime, window_days: int
) -> float:
    """The person's goal metric over `window_days` before `exposed_at`, from their history."""
    event_type, kind = goal
    for series in profile.event_history.series:
        if series.event_type == event_type and not series.filter_property:
            revenue = next((s.values for s in series.sums if s.property == "revenue"), None)
            return pre_exposure_value(
                kind, series.days, series.counts, revenue, exposed_at, window_days
            )
    return 0.0


class StickySync:
    """Writes pending sticky records onto their profiles, in the background."""

    def __init__(
        self,
        store: ExposureStore,
        profiles: ProfileServiceAsyncStub,
        goal_of: Callable[[str], Goal | None],
        window_days: int,
        backoff: Backoff | None = None,
    ) -> None:
        self.store = store
        self.profiles = profiles
        self.goal_of = goal_of
        self.window_days = window_days
        self.backoff = backoff or Backoff(initial_s=0.2, max_s=10.0)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._background = Background()

    def kick(self) -> None:
        """Look at the outbox now."""
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        """Run until `stop`."""
        self._background.start(self._run, name="sticky-sync")

    async def stop(self) -> None:
        """Stop; pending records stay pending (and are written after the next start)."""
        await self._background.stop()

    async def idle(self) -> None:
        """Return once a round found nothing left to write."""
        await self._idle.wait()

    async def _run(self) -> None:
        delays = self.backoff.delays()
        while True:
            try:
                written = await self.round()
            except Exception:  # the database or the profile service: try again later
                log.warning("writing sticky variants to profiles failed; retrying", exc_info=True)
                await asyncio.sleep(next(delays))
                continue
            delays = self.backoff.delays()
            if written:
                continue
            self._idle.set()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_INTERVAL_S):
                    await self._wake.wait()

    async def round(self) -> int:
        """Write one batch of pending records; how many were taken."""
        database = self.store.database
        pending = await database.run(self.store.pending, SYNC_BATCH)
        if not pending:
            return 0
        limit = asyncio.Semaphore(SYNC_CONCURRENCY)

        async def write(item: PendingSticky) -> tuple[PendingSticky, float | None] | None:
            async with limit:
                return await self._write(item)

        outcomes = await asyncio.gather(*(write(item) for item in pending))
        await database.run(self.store.synced, [o for o in outcomes if o is not None])
        if any(o is None for o in outcomes):
            raise ConnectionError("some sticky variants could not be written")
        return len(pending)

    async def _write(self, item: PendingSticky) -> tuple[PendingSticky, float | None] | None:
        """Write one trait; the record and its covariate, or None to try again later."""
        request = profiles_pb2.UpdateTraitsRequest(
            profile_id=item.profile_id,
            traits=dict_to_struct({trait_name(item.experiment_key): item.sticky.trait()}),
        )
        try:
            reply = await self.profiles.UpdateTraits(request, timeout=SYNC_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                # Erased, or never a profile: nothing of the person is kept.
                await self.store.database.run(self.store.forget, item.profile_id)
                return item, None
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                log.error(
                    "the profile service refused a sticky variant; left unwritten",
                    extra={"experiment": item.experiment_key, "details": error.details()},
                )
                return item, None
            return None
        goal = self.goal_of(item.experiment_key)
        if goal is None or self.window_days <= 0:
            return item, None
        return item, covariate(reply.profile, goal, item.sticky.exposed_at, self.window_days)
