"""Closed-loop load from separate processes.

Each load process runs one asyncio loop with its share of the concurrency as
closed-loop workers (send, wait for the answer, send the next) over one
grpc.aio channel. The processes are spawned once and reused for every level;
a barrier lines them up so their warm-up and measured windows coincide.
Only loopback addresses are used and every level is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from bench.stats import (
    BASELINE,
    DECIDE_MODES,
    PROFILE_TARGETS,
    RELAY,
    TRACK_MESSAGE_EVENTS,
    TRACK_STREAM_BATCH,
    LevelSummary,
    Sample,
    summarise_rounds,
)

EVALUATE = "evaluate-segments"
"""EvaluateSegments with the profile in the request: the segment service alone."""

TARGETS = (BASELINE, RELAY, *DECIDE_MODES, *PROFILE_TARGETS, EVALUATE)
"""echo, the relay, each Decide target (one per evaluation mode), the profile service's,
segments'."""

# Headroom on top of a level's own time bound before the parent gives up on a
# load process: connecting, the barrier and draining the last calls.
_SLACK_S = 30.0


@dataclass(frozen=True)
class LevelSpec:
    """What one load process does for one level."""

    target: str
    address: str
    workers: int
    """Closed-loop workers in this process (may be 0: the process just lines up)."""
    first_worker: int
    """Global index of this process's first worker, so rotation does not overlap."""
    total_workers: int
    warmup_s: float
    duration_s: float
    requests: int | None
    """This process's share of a fixed request count; None measures for duration_s."""
    max_s: float
    """Upper bound of the measured window in fixed-count mode."""
    timeout_s: float
    payload_bytes: int = 0
    cookies: Sequence[str] = ()
    connections: int = 1
    """Channels (each its own TCP connection) this process spreads its workers over:
    workers of a server sharing a port (SO_REUSEPORT) each take whole connections."""


@dataclass
class LevelResult:
    """What one load process measured in one level."""

    latencies_ns: bytes
    """int64 latencies of successful calls, as raw bytes (cheap to pickle)."""
    errors: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0


def _call_for(
    spec: LevelSpec, channel: grpc.aio.Channel, tag: str
) -> tuple[Callable[..., Any], Callable[[int], Any]]:
    """The stub method for `spec.target`, and the request of the call at a position.

    Reads and Decide rotate over messages built once (the load generator should
    spend its CPU on calls); writes build each call's events anew, with ids
    unique to this level (`tag`), so every event is new to the service.
    """
    if spec.target in (BASELINE, RELAY):
        from tessera.bench.v1 import bench_pb2, bench_pb2_grpc

        echo = bench_pb2_grpc.EchoServiceStub(channel)
        message = bench_pb2.EchoRequest(payload=b"x" * spec.payload_bytes)
        return echo.Echo, lambda _: message
    if not spec.cookies:
        raise ValueError(f"{spec.target} needs at least one cookie to rotate over")
    if spec.target == EVALUATE:
        from bench.seed import evaluate_request
        from tessera.segments.v1 import segments_pb2_grpc

        segments = segments_pb2_grpc.SegmentServiceStub(channel)
        evaluations = [evaluate_request(cookie) for cookie in spec.cookies]
        return segments.EvaluateSegments, lambda position: evaluations[position % len(evaluations)]
    if spec.target in DECIDE_MODES:
        # The same Decide for every mode; only the decision service behind
        # `spec.address` differs.
        from bench.seed import decide_request
        from tessera.decision.v1 import decision_pb2_grpc

        decision = decision_pb2_grpc.DecisionServiceStub(channel)
        messages = [decide_request(cookie) for cookie in spec.cookies]
        return decision.Decide, lambda position: messages[position % len(messages)]
    from bench.seed import track_event
    from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

    profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
    cookies = spec.cookies
    if spec.target == "get-profile":
        from tessera.common.v1 import common_pb2

        reads = [
            profiles_pb2.GetProfileRequest(identity=common_pb2.Identity(type="cookie", value=c))
            for c in cookies
        ]
        return profiles.GetProfile, lambda position: reads[position % len(reads)]
    if spec.target == "track":
        return profiles.Track, lambda position: profiles_pb2.TrackRequest(
            event=track_event(cookies[position % len(cookies)], f"{tag}-{position}")
        )
    if spec.target == "track-stream":

        def batch(position: int) -> Any:
            return iter(
                [
                    profiles_pb2.TrackStreamRequest(
                        event=track_event(
                            cookies[(position + k) % len(cookies)], f"{tag}-{position}-{k}"
                        )
                    )
                    for k in range(TRACK_STREAM_BATCH)
                ]
            )

        return profiles.TrackStream, batch
    if spec.target == "track-batched":

        def batched(position: int) -> Any:
            events = [
                track_event(cookies[(position + k) % len(cookies)], f"{tag}-{position}-{k}")
                for k in range(TRACK_STREAM_BATCH)
            ]
            return iter(
                [
                    profiles_pb2.TrackStreamRequest(events=events[k : k + TRACK_MESSAGE_EVENTS])
                    for k in range(0, TRACK_STREAM_BATCH, TRACK_MESSAGE_EVENTS)
                ]
            )

        return profiles.TrackStream, batched
    raise ValueError(f"unknown target {spec.target!r}; expected one of {TARGETS}")


async def _run_level(spec: LevelSpec, barrier: multiprocessing.synchronize.Barrier) -> LevelResult:
    # A subchannel pool of each channel's own: otherwise channels to one
    # address share a single connection.
    options = [("grpc.use_local_subchannel_pool", 1)] if spec.connections > 1 else []
    channels = [
        grpc.aio.insecure_channel(spec.address, options=options)
        for _ in range(max(1, spec.connections))
    ]
    try:
        return await _run_level_on(spec, barrier, channels)
    finally:
        for channel in channels:
            await channel.close()


async def _run_level_on(
    spec: LevelSpec,
    barrier: multiprocessing.synchronize.Barrier,
    channels: Sequence[grpc.aio.Channel],
) -> LevelResult:
    tag = f"{spec.target}-{time.time_ns()}"
    calls = [_call_for(spec, channel, tag) for channel in channels]
    request_at = calls[0][1]
    # Connect before the barrier so connection setup is in nobody's window.
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), timeout=_SLACK_S)
    await asyncio.to_thread(barrier.wait, _SLACK_S)

    start = time.perf_counter_ns()
    warm_end = start + int(spec.warmup_s * 1e9)
    if spec.requests is None:
        measure_end = warm_end + int(spec.duration_s * 1e9)
    else:
        measure_end = warm_end + int(spec.max_s * 1e9)
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    remaining = spec.requests
    last_done = warm_end

    async def worker(index: int) -> None:
        nonlocal remaining, last_done
        call = calls[index % len(calls)][0]
        position = index
        while True:
            sent = time.perf_counter_ns()
            if sent >= measure_end:
                return
            measuring = sent >= warm_end
            if measuring and remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            request = request_at(position)
            position += spec.total_workers
            try:
                await call(request, timeout=spec.timeout_s)
            except grpc.aio.AioRpcError as error:
                if measuring:
                    errors[error.code().name] += 1
                    last_done = max(last_done, time.perf_counter_ns())
                continue
            done = time.perf_counter_ns()
            if measuring:
                latencies.append(done - sent)
                last_done = max(last_done, done)

    await asyncio.gather(*(worker(spec.first_worker + k) for k in range(spec.workers)))

    measured = len(latencies) + sum(errors.values())
    window_ns = last_done - warm_end if measured else 0
    return LevelResult(
        latencies_ns=np.asarray(latencies, dtype=np.int64).tobytes(),
        errors=dict(errors),
        window_s=window_ns / 1e9,
    )


def _serve_levels(
    conn: multiprocessing.connection.Connection, barrier: multiprocessing.synchronize.Barrier
) -> None:
    """Load process main loop: run each LevelSpec received, send back its result."""
    while True:
        spec = conn.recv()
        if spec is None:
            return
        try:
            conn.send(asyncio.run(_run_level(spec, barrier)))
        except Exception as error:  # reported to the parent, which stops the run
            barrier.abort()
            conn.send(error)


def split(concurrency: int, processes: int) -> list[int]:
    """Workers per process: as even as possible, earlier processes take the rest."""
    base, rest = divmod(concurrency, processes)
    return [base + (1 if i < rest else 0) for i in range(processes)]


class LoadPool:
    """A fixed set of load processes, reused for every level of a run."""

    def __init__(self, processes: int) -> None:
        # spawn, not fork: gRPC's core does not survive fork() of a process
        # that already used it (the parent seeds the suite over gRPC).
        context = multiprocessing.get_context("spawn")
        self.barrier = context.Barrier(processes)
        self.connections: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for index in range(processes):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_serve_levels,
                args=(child_end, self.barrier),
                name=f"bench-load-{index}",
                daemon=True,
            )
            process.start()
            self.connections.append(parent_end)
            self.processes.append(process)

    def sample(
        self,
        target: str,
        address: str,
        concurrency: int,
        *,
        warmup_s: float,
        duration_s: float,
        requests: int | None,
        max_s: float,
        timeout_s: float,
        payload_bytes: int = 0,
        cookies: Sequence[str] = (),
        connections: int = 1,
    ) -> Sample:
        """Run one measured window of a level across all load processes."""
        shares = split(concurrency, len(self.processes))
        request_shares = split(requests, concurrency) if requests is not None else None
        first = 0
        for connection, workers in zip(self.connections, shares, strict=True):
            quota = None
            if request_shares is not None:
                quota = sum(request_shares[first : first + workers])
            connection.send(
                LevelSpec(
                    target=target,
                    address=address,
                    workers=workers,
                    first_worker=first,
                    total_workers=concurrency,
                    warmup_s=warmup_s,
                    duration_s=duration_s,
                    requests=quota,
                    max_s=max_s,
                    timeout_s=timeout_s,
                    payload_bytes=payload_bytes,
                    cookies=cookies,
                    connections=connections,
                )
            )
            first += workers
        bound_s = warmup_s + (duration_s if requests is None else max_s) + _SLACK_S
        results = [self._receive(connection, bound_s) for connection in self.connections]
        latencies = np.concatenate([np.frombuffer(r.latencies_ns, dtype=np.int64) for r in results])
        errors: Counter[str] = Counter()
        for result in results:
            errors.update(result.errors)
        # The processes' windows start together (barrier); the longest one is
        # the honest denominator for the combined rate.
        window_s = max(r.window_s for r in results)
        return Sample(latencies, window_s, dict(errors))

    def run(self, target: str, address: str, concurrency: int, **level: Any) -> LevelSummary:
        """Run one level across all load processes and summarise it (`sample`'s arguments)."""
        return summarise_rounds(
            target, concurrency, [self.sample(target, address, concurrency, **level)]
        )

    def _receive(
        self, connection: multiprocessing.connection.Connection, bound_s: float
    ) -> LevelResult:
        if not connection.poll(bound_s):
            raise TimeoutError(f"a load process gave no result within {bound_s:.0f} s")
        result = connection.recv()
        if isinstance(result, BaseException):
            raise RuntimeError(f"a load process failed: {result!r}") from result
        if not isinstance(result, LevelResult):
            raise TypeError(f"unexpected result from a load process: {result!r}")
        return result

    def close(self) -> None:
        """Ask every load process to exit; terminate any that does not."""
        for connection in self.connections:
            with contextlib.suppress(BrokenPipeError, OSError):
                connection.send(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
