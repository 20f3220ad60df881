"""Exposures sent to the experiment service off the request path.

Decide hands each exposure to `ExposureEmitter.emit`, which only appends to
an in-memory queue: no I/O and no await on the request path. A background
task sends the queue in batches (`RecordExposures`), waits a little for a
batch to fill, retries a failed send with capped, jittered backoff, and
flushes what is left when the service stops.

Bounded on purpose: when the experiment service is away longer than the
queue lasts, new exposures are dropped rather than growing memory without
end. Every drop is counted (`tessera_exposures_dropped_total{reason}`) and
logged (at most one line a second), and the queue depth is a gauge
(`tessera_exposure_queue_depth`).

Exposure ids are derived from the decision (person, experiment, variant,
holdout, UTC day: `exposure_id_for`), so a batch sent again after a lost
answer is stored once; the emitter also skips ids it sent recently, which
keeps a visitor who is decided every few seconds from costing an exposure
each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from tessera import metrics
from tessera.background import Background
from tessera.definitions import Backoff
from tessera.experiments.domain.exposures import Exposure
from tessera.experiments.v1 import experiments_pb2

if TYPE_CHECKING:
    from tessera.experiments.v1.experiments_pb2_grpc import ExperimentServiceAsyncStub

log = logging.getLogger("tessera.decision.exposures")

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
"""Codes after which the same batch is sent again; any other drops the batch."""

DROP_LOG_INTERVAL_S = 1.0
"""At most one log line about drops per this interval."""


@dataclass(frozen=True)
class EmitterSettings:
    """How the emitter batches, waits and gives up (TESSERA_EXPOSURE_* settings)."""

    queue_size: int = 10_000
    batch_size: int = 500
    linger_s: float = 0.2
    timeout_s: float = 2.0
    retry_max_s: float = 5.0
    recent_ids: int = 100_000


class ExposureEmitter:
    """A bounded queue of exposures and the task that delivers it."""

    def __init__(
        self, experiments: ExperimentServiceAsyncStub, settings: EmitterSettings | None = None
    ) -> None:
        self.experiments = experiments
        self.settings = settings or EmitterSettings()
        self.backoff = Backoff(initial_s=0.05, max_s=self.settings.retry_max_s)
        self._queue: deque[Exposure] = deque()
        self._in_flight: list[Exposure] = []
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._queued = asyncio.Event()
        """Set when something is queued: the sender wakes."""
        self._full = asyncio.Event()
        """Set when a batch is full (or a flush is asked for): the sender stops lingering."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._background = Background()
        self._dropped_unlogged = 0
        self._last_drop_log = 0.0

    @property
    def pending(self) -> int:
        """Exposures queued or in a batch being sent."""
        return len(self._queue) + len(self._in_flight)

    def emit(self, exposures: Iterable[Exposure]) -> None:
        """Queue exposures for sending; never blocks. Recently sent ids are skipped."""
        added = False
        for exposure in exposures:
            if exposure.exposure_id in self._recent:
                continue
            if len(self._queue) >= self.settings.queue_size:
                self._dropped("queue_full", 1)
                continue
            self._remember(exposure.exposure_id)
            self._queue.append(exposure)
            added = True
        if added:
            self._idle.clear()
            self._queued.set()
            metrics.EXPOSURE_QUEUE_DEPTH.set(self.pending)
            if len(self._queue) >= self.settings.batch_size:
                self._full.set()

    def _remember(self, exposure_id: str) -> None:
        self._recent[exposure_id] = None
        if len(self._recent) > self.settings.recent_ids:
            self._recent.popitem(last=False)

    def _dropped(self, reason: str, count: int, batch: Iterable[Exposure] = ()) -> None:
        metrics.EXPOSURES_DROPPED.labels(reason).inc(count)
        for exposure in batch:
            # Not sent after all: the next decision of the person may try again.
            self._recent.pop(exposure.exposure_id, None)
        self._dropped_unlogged += count
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            log.warning(
                "exposures dropped",
                extra={"reason": reason, "dropped": self._dropped_unlogged},
            )
            self._dropped_unlogged = 0
            self._last_drop_log = now

    def start(self) -> None:
        """Send in the background until `close`."""
        self._background.start(self._run, name="exposure-emitter")

    async def flushed(self) -> None:
        """Return once everything emitted so far was sent or dropped."""
        self._full.set()
        await self._idle.wait()

    async def close(self, timeout_s: float) -> None:
        """Send what is queued within `timeout_s`, then stop; what is left is dropped."""
        if not self._background.started:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.flushed()
        # Taken before the sender is cancelled: its batch in flight counts too.
        left = [*self._in_flight, *self._queue]
        await self._background.stop()
        self._queue.clear()
        self._in_flight = []
        if left:
            self._dropped("shutdown", len(left), left)
        metrics.EXPOSURE_QUEUE_DEPTH.set(0)
        self._idle.set()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._queued.clear()
                await self._queued.wait()
            if len(self._queue) < self.settings.batch_size:
                # Let a batch fill a little: one call for many decisions.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.linger_s):
                        await self._full.wait()
            self._full.clear()
            size = min(len(self._queue), self.settings.batch_size)
            batch = [self._queue.popleft() for _ in range(size)]
            self._in_flight = batch
            try:
                await self._deliver(batch)
            finally:
                self._in_flight = []
                metrics.EXPOSURE_QUEUE_DEPTH.set(self.pending)

    async def _deliver(self, batch: list[Exposure]) -> None:
        """Send one batch until it is stored or refused; retries are the same ids."""
        request = experiments_pb2.RecordExposuresRequest(exposures=[_proto(e) for e in batch])
        delays = self.backoff.delays()
        while True:
            try:
                await self.experiments.RecordExposures(request, timeout=self.settings.timeout_s)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE:
                    log.error(
                        "the experiment service refused a batch of exposures",
                        extra={"code": error.code().name, "details": error.details()},
                    )
                    self._dropped("refused", len(batch), batch)
                    return
                await asyncio.sleep(next(delays))
                continue
            metrics.EXPOSURES_SENT.inc(len(batch))
            return


def _proto(exposure: Exposure) -> experiments_pb2.Exposure:
    message = experiments_pb2.Exposure(
        exposure_id=exposure.exposure_id,
        experiment_key=exposure.experiment_key,
        variant_key=exposure.variant_key,
        profile_id=exposure.profile_id,
        in_holdout=exposure.in_holdout,
    )
    message.timestamp.FromDatetime(exposure.seen_at)
    return message
