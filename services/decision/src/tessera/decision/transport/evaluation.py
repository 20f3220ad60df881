"""Where Decide gets segments and assignments: in-process or over RPC.

One protocol, two implementations, as the flagd provider does it. The
in-process evaluator follows `WatchSegments` and `WatchExperiments` and runs
the segment and experiment services' own domain code here, so a Decide costs
one hop (to the profile service). The RPC evaluator asks the services each
time; it exists for deployments that want no rule evaluation in the decision
replicas, and for comparing the two in the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import grpc
from google.protobuf import struct_pb2

from tessera.clients import peer_error
from tessera.common.v1 import common_pb2
from tessera.errors import TesseraError, Unavailable
from tessera.experiments.domain import ExperimentDef, assign_all
from tessera.experiments.transport.convert import experiment_from_proto
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.domain import (
    CompiledSegments,
    SegmentDefinition,
    compile_available,
    compile_segments,
)
from tessera.segments.transport.convert import segment_from_proto, subject_from_profile
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

log = logging.getLogger("tessera.decision.evaluation")

RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 2.0


class Evaluator(Protocol):
    """Segments and assignments for one Decide."""

    async def start(self) -> None:
        """Connect; return once the evaluator can answer."""

    async def stop(self) -> None:
        """Disconnect."""

    async def segments(
        self,
        profile: profiles_pb2.Profile,
        channel: common_pb2.Channel.ValueType,
        context: struct_pb2.Struct,
        timeout: float,
    ) -> list[str]:
        """Sorted keys of the segments the profile is in."""

    async def assign(
        self,
        profile_id: str,
        segment_keys: Sequence[str],
        channel: common_pb2.Channel.ValueType,
        experiment_keys: Sequence[str],
        timeout: float,
    ) -> dict[str, str]:
        """Experiment key -> variant key, for the experiments that take the profile."""


class RpcEvaluator:
    """Asks SegmentService and ExperimentService on every Decide."""

    def __init__(
        self,
        segments: segments_pb2_grpc.SegmentServiceAsyncStub,
        experiments: experiments_pb2_grpc.ExperimentServiceAsyncStub,
    ) -> None:
        self._segments = segments
        self._experiments = experiments

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def segments(
        self,
        profile: profiles_pb2.Profile,
        channel: common_pb2.Channel.ValueType,
        context: struct_pb2.Struct,
        timeout: float,
    ) -> list[str]:
        request = segments_pb2.EvaluateSegmentsRequest(
            profile=profile, channel=channel, context=context
        )
        try:
            reply = await self._segments.EvaluateSegments(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "segments") from error
        return list(reply.segment_keys)

    async def assign(
        self,
        profile_id: str,
        segment_keys: Sequence[str],
        channel: common_pb2.Channel.ValueType,
        experiment_keys: Sequence[str],
        timeout: float,
    ) -> dict[str, str]:
        request = experiments_pb2.AssignRequest(
            profile_id=profile_id,
            segment_keys=segment_keys,
            channel=channel,
            experiment_keys=experiment_keys,
        )
        try:
            reply = await self._experiments.Assign(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "experiments") from error
        return {a.experiment_key: a.variant_key for a in reply.assignments if not a.in_holdout}


class InProcessEvaluator:
    """Keeps segment and experiment definitions from the watch streams, evaluates here."""

    def __init__(
        self,
        segments: segments_pb2_grpc.SegmentServiceAsyncStub,
        experiments: experiments_pb2_grpc.ExperimentServiceAsyncStub,
    ) -> None:
        self._segment_stub = segments
        self._experiment_stub = experiments
        self._segment_defs: dict[str, SegmentDefinition] = {}
        self._compiled: CompiledSegments = compile_segments([])
        self._experiments: dict[str, ExperimentDef] = {}
        self._segments_loaded = asyncio.Event()
        self._experiments_loaded = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Open both watches; return once both snapshots are in.

        Until then the service is not serving (the runtime starts serving
        after `start`), so probes keep traffic away from a replica that
        would decide without its definitions.
        """
        self._tasks = [
            asyncio.create_task(
                self._follow("segments", self._watch_segments), name="watch-segments"
            ),
            asyncio.create_task(
                self._follow("experiments", self._watch_experiments), name="watch-experiments"
            ),
        ]
        while not (self._segments_loaded.is_set() and self._experiments_loaded.is_set()):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._segments_loaded.wait()
                    await self._experiments_loaded.wait()
            if not (self._segments_loaded.is_set() and self._experiments_loaded.is_set()):
                log.warning("waiting for segment and experiment definitions")

    async def stop(self) -> None:
        """Close the watches."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, peer: str, watch: Callable[[], Awaitable[None]]) -> None:
        """Run a watch forever, reconnecting with backoff when it breaks."""
        delay = RETRY_INITIAL_S
        while True:
            try:
                await watch()
                delay = RETRY_INITIAL_S
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "watch broke; reconnecting", extra={"peer": peer, "code": error.code().name}
                )
            except Exception:  # a bad message must not end the watch for good
                log.exception("watch failed; reconnecting", extra={"peer": peer})
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _watch_segments(self) -> None:
        async for change in self._segment_stub.WatchSegments(segments_pb2.WatchSegmentsRequest()):
            definitions = {} if change.snapshot else dict(self._segment_defs)
            for segment in change.segments:
                try:
                    definitions[segment.key] = segment_from_proto(segment)
                except TesseraError:  # e.g. a rule from a newer release: skip just that one
                    log.exception("cannot use segment", extra={"segment": segment.key})
                    definitions.pop(segment.key, None)
            for key in change.deleted_keys:
                definitions.pop(key, None)
            self._compiled, left_out = compile_available(definitions.values())
            if left_out:
                log.error("segments left out of evaluation", extra={"segments": left_out})
            self._segment_defs = definitions
            self._segments_loaded.set()

    async def _watch_experiments(self) -> None:
        async for change in self._experiment_stub.WatchExperiments(
            experiments_pb2.WatchExperimentsRequest()
        ):
            experiments = {} if change.snapshot else dict(self._experiments)
            for experiment in change.experiments:
                try:
                    experiments[experiment.key] = experiment_from_proto(experiment)
                except TesseraError:
                    log.exception("cannot use experiment", extra={"experiment": experiment.key})
                    experiments.pop(experiment.key, None)
            for key in change.deleted_keys:
                experiments.pop(key, None)
            self._experiments = experiments
            self._experiments_loaded.set()

    async def segments(
        self,
        profile: profiles_pb2.Profile,
        channel: common_pb2.Channel.ValueType,
        context: struct_pb2.Struct,
        timeout: float,
    ) -> list[str]:
        if not self._segments_loaded.is_set():
            raise Unavailable("segment definitions are not loaded yet")
        return self._compiled.evaluate(subject_from_profile(profile, channel, context))

    async def assign(
        self,
        profile_id: str,
        segment_keys: Sequence[str],
        channel: common_pb2.Channel.ValueType,
        experiment_keys: Sequence[str],
        timeout: float,
    ) -> dict[str, str]:
        if not self._experiments_loaded.is_set():
            raise Unavailable("experiment definitions are not loaded yet")
        known = [key for key in experiment_keys if key in self._experiments]
        if not known:
            return {}
        results = assign_all(
            self._experiments.values(),
            profile_id,
            segment_keys,
            dt.datetime.now(dt.UTC),
            only_keys=known,
        )
        return {r.experiment_key: r.variant_key for r in results if not r.in_holdout}
