"""Following definitions: one watcher for every snapshot-then-changes stream.

A `Watcher` connects to a stream (the `WatchSegments` / `WatchExperiments`
RPCs of a peer, or this replica's own `DefinitionFeed`), folds the snapshot
and then every change into a `WatchedSet` that evaluation reads, and when the
stream breaks or ends, reconnects after a capped, jittered exponential
backoff, the way flagd's gRPC sync connector does. On reconnect the server
sends a fresh snapshot, which replaces what the set held; until then readers
keep the last state they had.

A definition that cannot be read (a rule from a newer release, say) is left
out of the set and logged; it does not stop the rest from loading, and the
stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from tessera import metrics
from tessera.background import Background

log = logging.getLogger("tessera.definitions.watcher")

M = TypeVar("M")
"""A message of the stream."""
S = TypeVar("S")
"""A definition as the stream carries it (a proto message, a stored row)."""
T = TypeVar("T")
"""A definition as evaluation reads it."""


@dataclass(frozen=True)
class Batch(Generic[S]):
    """One stream message, read: the snapshot, or the changes after it.

    `position` is how far along its source the batch brings a watcher (the
    local feed's revision); None where the stream does not say.
    """

    snapshot: bool
    upserted: Sequence[S]
    deleted_keys: Sequence[str]
    position: int | None = None


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnects: exponential, capped, jittered.

    Jitter takes up to `jitter` (a fraction) off each delay, so replicas
    that lost a peer together do not all come back at the same instant.
    """

    initial_s: float = 0.1
    max_s: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays before each attempt in a row of failed ones."""
        rng = rng or random.Random()
        delay = self.initial_s
        while True:
            yield min(delay, self.max_s) * (1 - self.jitter * rng.random())
            delay = min(delay * self.multiplier, self.max_s)


class WatchedSet(Generic[S, T]):
    """Definitions by key, as evaluation reads them, folded from a stream's batches.

    `convert` turns a streamed definition into what evaluation reads (a
    compiled rule, an experiment); `on_change` runs after each batch with
    every item, for readers that derive something from the whole set. Each
    batch builds a new mapping and swaps it in, so a reader never sees half
    of a batch.
    """

    def __init__(
        self,
        name: str,
        convert: Callable[[S], T],
        key: Callable[[S], str],
        on_change: Callable[[dict[str, T]], None] | None = None,
    ) -> None:
        self.name = name
        self.convert = convert
        self.key = key
        self.on_change = on_change
        self.items: Mapping[str, T] = {}

    def fold(self, batch: Batch[S]) -> None:
        """Apply a batch: a snapshot replaces every item, changes replace theirs."""
        items: dict[str, T] = {} if batch.snapshot else dict(self.items)
        for definition in batch.upserted:
            key = self.key(definition)
            try:
                items[key] = self.convert(definition)
            except Exception:  # one unreadable definition must not blind the rest
                log.exception("cannot use definition", extra={"kind": self.name, "key": key})
                # Evaluating an older version of it would be worse than leaving
                # it out: readers treat it as unknown until a readable one comes.
                items.pop(key, None)
        for key in batch.deleted_keys:
            items.pop(key, None)
        self.items = items
        metrics.DEFINITIONS_HELD.labels(self.name).set(len(items))
        if self.on_change is not None:
            try:
                self.on_change(items)
            except Exception:  # keep what was derived from the last consistent set
                log.exception("definitions changed into an inconsistent set")


class Watcher(Generic[M, S, T]):
    """Follows one snapshot-then-changes stream into a `WatchedSet`, reconnecting."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], AsyncIterable[M]],
        read: Callable[[M], Batch[S]],
        into: WatchedSet[S, T],
        backoff: Backoff | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.connect = connect
        self.read = read
        self.set = into
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._rng = rng
        self._loaded = asyncio.Event()
        self._position = -1
        self._moved = asyncio.Event()
        self._stopped = False
        self._background = Background()

    @property
    def items(self) -> Mapping[str, T]:
        """The definitions as last folded."""
        return self.set.items

    @property
    def loaded(self) -> bool:
        """Whether a snapshot has been folded, so `items` is the whole set."""
        return self._loaded.is_set()

    def start(self) -> None:
        """Start following in the background; `wait_loaded` tells when the snapshot is in."""
        if not self._background.started:
            self._stopped = False
            self._background.start(self._run, name=f"watch:{self.name}")

    async def wait_loaded(self) -> None:
        """Return once the first snapshot has been folded."""
        await self._loaded.wait()

    async def reached(self, position: int) -> None:
        """Return once a batch at `position` or later is folded, or the watcher stopped."""
        while self._position < position and not self._stopped:
            moved = self._moved
            await moved.wait()

    async def stop(self) -> None:
        """Stop following; `items` keeps the last state. Safe to call twice."""
        self._stopped = True
        self._wake()
        await self._background.stop()

    def _wake(self) -> None:
        # A fresh event per move: waiters re-check their position and wait again.
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def _fold(self, message: M) -> bool:
        """Fold one message; True if it was a snapshot."""
        batch = self.read(message)
        self.set.fold(batch)
        if batch.snapshot:
            self._loaded.set()
        if batch.position is not None:
            self._position = max(self._position, batch.position)
        self._wake()
        return batch.snapshot

    async def _run(self) -> None:
        delays = self.backoff.delays(self._rng)
        while True:
            stream: AsyncIterable[M] | None = None
            try:
                stream = self.connect()
                async for message in stream:
                    if self._fold(message):
                        # The peer answered with its whole state: the next
                        # break starts the backoff over.
                        delays = self.backoff.delays(self._rng)
                log.info("watch ended; reconnecting", extra={"watch": self.name})
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "watch broke; reconnecting",
                    extra={"watch": self.name, "code": error.code().name},
                )
            except Exception:  # a bad message must not end the watch for good
                log.exception("watch failed; reconnecting", extra={"watch": self.name})
            finally:
                if stream is not None:
                    await _close(stream)
            await self._sleep(next(delays))


async def _close(stream: AsyncIterable[object]) -> None:
    """Leave nothing open behind a watch that broke or was stopped.

    A gRPC call would otherwise stay open until its channel closes, and a
    local feed would keep queueing batches for a reader that is gone.
    """
    if isinstance(stream, grpc.aio.Call):
        stream.cancel()
    elif isinstance(stream, AsyncGenerator):
        await stream.aclose()
