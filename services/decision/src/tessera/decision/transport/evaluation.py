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
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import grpc
from google.protobuf import struct_pb2

from tessera import metrics
from tessera.clients import peer_error
from tessera.common.v1 import common_pb2
from tessera.decision.domain.campaigns import Assignments
from tessera.definitions import Backoff, Batch, WatchedSet, Watcher
from tessera.experiments.domain import assign_all
from tessera.experiments.transport.convert import experiment_from_proto
from tessera.experiments.v1 import experiments_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.domain import (
    CompiledSegments,
    SegmentDefinition,
    compile_available,
    compile_segments,
)
from tessera.segments.transport.convert import segment_from_proto, subject_from_profile
from tessera.segments.v1 import segments_pb2
from tessera.sticky import Kept

if TYPE_CHECKING:
    # Type-only: the generated stubs' async flavour exists only in the .pyi.
    from tessera.experiments.v1.experiments_pb2_grpc import ExperimentServiceAsyncStub
    from tessera.segments.v1.segments_pb2_grpc import SegmentServiceAsyncStub

log = logging.getLogger("tessera.decision.evaluation")

RECONNECT = Backoff(initial_s=0.05, max_s=0.25)
"""Backoff between attempts to reopen a watch on a peer.

While the peer is away an attempt fails at once (its channel is
reconnecting), so trying four times a second costs little. With the
channel's own reconnect backoff (at most 0.5 s, `tessera.clients`), a watch
is open again within 0.75 s of the peer's return: definitions flow within a
second.
"""

NO_STICKY: Mapping[str, Kept] = MappingProxyType({})
"""A person with no sticky variant (never exposed)."""

START_WAIT_S = 3.0
"""How long `start` waits for the snapshots before serving with what it has."""


class Evaluator(Protocol):
    """Segments and assignments for one Decide."""

    async def start(self) -> None:
        """Connect; return once the evaluator can answer."""

    async def stop(self) -> None:
        """Disconnect."""

    def missing_segments(self, keys: Collection[str]) -> frozenset[str]:
        """Those of `keys` this evaluator cannot evaluate (not loaded here); may be empty."""

    def missing_experiments(self, keys: Collection[str]) -> frozenset[str]:
        """Those of `keys` this evaluator cannot assign (not loaded here); may be empty."""

    async def segments(
        self,
        profile: profiles_pb2.Profile,
        channel: int,
        context: struct_pb2.Struct,
        timeout: float,
    ) -> list[str]:
        """Sorted keys of the segments the profile is in."""

    async def assign(
        self,
        profile_id: str,
        segment_keys: Sequence[str],
        channel: int,
        experiment_keys: Sequence[str],
        timeout: float,
        sticky: Mapping[str, Kept] = NO_STICKY,
    ) -> Assignments:
        """The profile's variants, and the experiments holding it out.

        `sticky` is the person's first exposure per experiment, as the
        profile's `_variant:` traits carry it.
        """


class RpcEvaluator:
    """Asks SegmentService and ExperimentService on every Decide."""

    def __init__(
        self, segments: SegmentServiceAsyncStub, experiments: ExperimentServiceAsyncStub
    ) -> None:
        self._segments = segments
        self._experiments = experiments

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    def missing_segments(self, keys: Collection[str]) -> frozenset[str]:
        """None: the segment service knows its segments (or the call fails as a whole)."""
        return frozenset()

    def missing_experiments(self, keys: Collection[str]) -> frozenset[str]:
        """None: the experiment service knows its experiments (or the call fails as a whole)."""
        return frozenset()

    async def segments(
        self,
        profile: profiles_pb2.Profile,
        channel: int,
        context: struct_pb2.Struct,
        timeout: float,
    ) -> list[str]:
        """Sorted keys of the profile's segments, from SegmentService.EvaluateSegments."""
        request = segments_pb2.EvaluateSegmentsRequest(
            profile=profile, channel=common_pb2.Channel.ValueType(channel), context=context
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
        channel: int,
        experiment_keys: Sequence[str],
        timeout: float,
        sticky: Mapping[str, Kept] = NO_STICKY,
    ) -> Assignments:
        """Variants and holdouts from ExperimentService.Assign (it reads its own sticky table)."""
        request = experiments_pb2.AssignRequest(
            profile_id=profile_id,
            segment_keys=segment_keys,
            channel=common_pb2.Channel.ValueType(channel),
            experiment_keys=experiment_keys,
        )
        try:
            reply = await self._experiments.Assign(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "experiments") from error
        return Assignments(
            {a.experiment_key: a.variant_key for a in reply.assignments if not a.in_holdout},
            frozenset(a.experiment_key for a in reply.assignments if a.in_holdout),
        )


def _segments_batch(reply: segments_pb2.WatchSegmentsResponse) -> Batch[segments_pb2.Segment]:
    return Batch(reply.snapshot, reply.segments, reply.deleted_keys)


def _experiments_batch(
    reply: experiments_pb2.WatchExperimentsResponse,
) -> Batch[experiments_pb2.Experiment]:
    return Batch(reply.snapshot, reply.experiments, reply.deleted_keys)


def _segment_key(segment: segments_pb2.Segment) -> str:
    return segment.key


def _experiment_key(experiment: experiments_pb2.Experiment) -> str:
    return experiment.key


class InProcessEvaluator:
    """Keeps segment and experiment definitions from the watch streams, evaluates here."""

    def __init__(
        self,
        segments: SegmentServiceAsyncStub,
        experiments: ExperimentServiceAsyncStub,
        start_wait_s: float = START_WAIT_S,
    ) -> None:
        self.start_wait_s = start_wait_s
        self._compiled: CompiledSegments = compile_segments([])
        self._missing: tuple[object, object, frozenset[str]] = (None, None, frozenset())
        self._segments = Watcher(
            "segments",
            lambda: segments.WatchSegments(segments_pb2.WatchSegmentsRequest()),
            _segments_batch,
            WatchedSet("segment", segment_from_proto, _segment_key, self._recompile),
            RECONNECT,
        )
        self._experiments = Watcher(
            "experiments",
            lambda: experiments.WatchExperiments(experiments_pb2.WatchExperimentsRequest()),
            _experiments_batch,
            WatchedSet("experiment", experiment_from_proto, _experiment_key),
            RECONNECT,
        )

    def _recompile(self, definitions: dict[str, SegmentDefinition]) -> None:
        # Every segment whose references resolve; one that cannot compile is
        # left out rather than freezing the whole set at an old state.
        self._compiled, left_out = compile_available(definitions.values())
        if left_out:
            log.error("segments left out of evaluation", extra={"segments": left_out})

    async def start(self) -> None:
        """Open both watches; return once both snapshots are in, or after `start_wait_s`.

        A replica that waited for a peer that is away would serve nothing for
        the whole outage; instead it serves with what it has, and Decide skips
        (with a reason) every campaign whose audience segment or experiment is
        not loaded yet. The watches go on trying and fill in when the peers
        answer.
        """
        self._segments.start()
        self._experiments.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.start_wait_s):
                await self._segments.wait_loaded()
                await self._experiments.wait_loaded()
        waiting = [w.name for w in (self._segments, self._experiments) if not w.loaded]
        if waiting:
            log.warning(
                "serving without some definitions; campaigns that need them are skipped",
                extra={"waiting_for": waiting},
            )

    def missing_segments(self, keys: Collection[str]) -> frozenset[str]:
        """Those of `keys` not compiled here: not received yet, or unusable.

        Decide asks every time with the same collection (every audience
        segment of the campaigns) until the campaigns change, so the answer
        is kept until either side changes rather than recomputed per call.
        """
        if not self._segments.loaded:
            return frozenset(keys)
        compiled = self._compiled
        asked, against, missing = self._missing
        if asked is not keys or against is not compiled:
            missing = frozenset(key for key in keys if key not in compiled)
            self._missing = (keys, compiled, missing)
        return missing

    def missing_experiments(self, keys: Collection[str]) -> frozenset[str]:
        """Those of `keys` not received here yet."""
        if not self._experiments.loaded:
            return frozenset(keys)
        held = self._experiments.items
        return frozenset(key for key in keys if key not in held)

    async def stop(self) -> None:
        """Close the watches."""
        await self._segments.stop()
        await self._experiments.stop()

    async def segments(
        self,
        profile: profiles_pb2.Profile,
        channel: int,
        context: struct_pb2.Struct,
        timeout: float,
    ) -> list[str]:
        """Sorted keys of the profile's segments, from the watched definitions.

        Before the snapshot is in, none (`missing_segments` names every key,
        so Decide skips the campaigns that need one).
        """
        return self._compiled.evaluate(subject_from_profile(profile, channel, context))

    async def assign(
        self,
        profile_id: str,
        segment_keys: Sequence[str],
        channel: int,
        experiment_keys: Sequence[str],
        timeout: float,
        sticky: Mapping[str, Kept] = NO_STICKY,
    ) -> Assignments:
        """Variants and holdouts by the experiments service's own assignment, here.

        An experiment not held here gets no variant (`missing_experiments`
        names it, so Decide skips its campaign with the reason).
        """
        experiments = self._experiments.items
        known = [key for key in experiment_keys if key in experiments]
        metrics.count_lookups("experiment", len(known), len(experiment_keys) - len(known))
        if not known:
            return Assignments()
        results = assign_all(
            experiments.values(),
            profile_id,
            segment_keys,
            dt.datetime.now(dt.UTC),
            only_keys=known,
            sticky={key: s.variant_key for key, s in sticky.items()},
            sticky_holdout=frozenset(key for key, s in sticky.items() if s.in_holdout),
        )
        return Assignments(
            {r.experiment_key: r.variant_key for r in results if not r.in_holdout},
            frozenset(r.experiment_key for r in results if r.in_holdout),
        )
