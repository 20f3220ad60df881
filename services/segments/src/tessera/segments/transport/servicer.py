"""SegmentService over gRPC: definitions, watch, validation and evaluation."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from tessera.catalog import Catalog
from tessera.clients import peer_error
from tessera.convert import check_channel
from tessera.errors import FailedPrecondition, InvalidArgument, require
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.domain import (
    CompiledSegments,
    SegmentDefinition,
    compile_available,
    compile_segments,
    dependencies,
    validate,
    validate_segment_key,
)
from tessera.segments.references import References, Users, refuse_if_used
from tessera.segments.sizing import ProjectionKeeper
from tessera.segments.transport.convert import (
    estimate_response,
    goal_window,
    rule_from_proto,
    segment_from_proto,
    subject_from_profile,
)
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

if TYPE_CHECKING:
    from tessera.profiles.v1.profiles_pb2_grpc import ProfileServiceAsyncStub

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger("tessera.segments")


def _fits_together(after: dict[str, segments_pb2.Segment]) -> None:
    """The segments a write leaves compile as one set: known references, no cycle.

    Run inside the write's transaction, so replicas writing at once cannot
    together leave a reference to a deleted segment.
    """
    compile_segments(segment_from_proto(segment) for segment in after.values())


class SegmentServicer(segments_pb2_grpc.SegmentServiceServicer):
    """Implements tessera.segments.v1.SegmentService."""

    def __init__(
        self,
        catalog: Catalog[segments_pb2.Segment],
        profiles: ProfileServiceAsyncStub,
        deadline_s: float,
        sizing: ProjectionKeeper | None = None,
        references: References | None = None,
    ) -> None:
        self.catalog = catalog
        self.cache = catalog.cache(segment_from_proto)
        self.cache.on_change = self._recompile
        self.profiles = profiles
        self.deadline_s = deadline_s
        self.sizing = sizing
        self.references = references
        """Campaigns and experiments using a segment; None checks segments only (unit tests)."""
        self.compiled: CompiledSegments = compile_segments([])

    def _recompile(self, items: dict[str, SegmentDefinition]) -> None:
        self.compiled, left_out = compile_available(items.values())
        if left_out:
            log.error("segments left out of evaluation", extra={"segments": left_out})

    def _normalise(self, segment: segments_pb2.Segment) -> segments_pb2.Segment:
        validate_segment_key(segment.key)
        require(bool(segment.name), "segment.name", "is required")
        message = segments_pb2.Segment(
            key=segment.key, name=segment.name, description=segment.description, rule=segment.rule
        )
        segment_from_proto(message)  # the rule compiles on its own
        return message

    async def CreateSegment(
        self, request: segments_pb2.CreateSegmentRequest, context: Context
    ) -> segments_pb2.CreateSegmentResponse:
        stored = await self.catalog.create(self._normalise(request.segment), _fits_together)
        return segments_pb2.CreateSegmentResponse(segment=stored)

    async def GetSegment(
        self, request: segments_pb2.GetSegmentRequest, context: Context
    ) -> segments_pb2.GetSegmentResponse:
        return segments_pb2.GetSegmentResponse(segment=await self.catalog.get(request.key))

    async def ListSegments(
        self, request: segments_pb2.ListSegmentsRequest, context: Context
    ) -> segments_pb2.ListSegmentsResponse:
        segments, token = await self.catalog.page(request.page_size, request.page_token)
        return segments_pb2.ListSegmentsResponse(segments=segments, next_page_token=token)

    async def UpdateSegment(
        self, request: segments_pb2.UpdateSegmentRequest, context: Context
    ) -> segments_pb2.UpdateSegmentResponse:
        message = self._normalise(request.segment)
        stored = await self.catalog.update(message, request.expected_version, _fits_together)
        return segments_pb2.UpdateSegmentResponse(segment=stored)

    async def DeleteSegment(
        self, request: segments_pb2.DeleteSegmentRequest, context: Context
    ) -> segments_pb2.DeleteSegmentResponse:
        await self.catalog.get(request.key)  # NOT_FOUND before asking other services
        users = await self.references.users(request.key) if self.references else Users()

        def unused(after: dict[str, segments_pb2.Segment]) -> None:
            segments = [
                key
                for key, segment in after.items()
                if request.key in dependencies(segment_from_proto(segment).rule)
            ]
            refuse_if_used(request.key, users, segments)

        await self.catalog.delete(request.key, unused)
        return segments_pb2.DeleteSegmentResponse()

    async def WatchSegments(
        self, request: segments_pb2.WatchSegmentsRequest, context: Context
    ) -> AsyncIterator[segments_pb2.WatchSegmentsResponse]:
        async for change in self.catalog.watch():
            yield segments_pb2.WatchSegmentsResponse(
                snapshot=change.snapshot,
                segments=change.upserted,
                deleted_keys=change.deleted_keys,
            )

    async def ValidateRule(
        self, request: segments_pb2.ValidateRuleRequest, context: Context
    ) -> segments_pb2.ValidateRuleResponse:
        notation = request.rule.WhichOneof("rule")
        if notation is None:
            raise InvalidArgument("set text or json_logic", field="rule")
        errors = validate(getattr(request.rule, notation), notation)
        return segments_pb2.ValidateRuleResponse(
            errors=[
                segments_pb2.RuleError(line=e.line, column=e.column, message=e.message)
                for e in errors
            ]
        )

    async def EvaluateSegments(
        self, request: segments_pb2.EvaluateSegmentsRequest, context: Context
    ) -> segments_pb2.EvaluateSegmentsResponse:
        channel = check_channel(request.channel, "channel")
        target = request.WhichOneof("target")
        if target == "profile":
            profile = request.profile
        elif target == "profile_id":
            try:
                reply = await self.profiles.GetProfile(
                    profiles_pb2.GetProfileRequest(profile_id=request.profile_id),
                    timeout=self.deadline_s,
                )
            except grpc.aio.AioRpcError as error:
                raise peer_error(error, "profiles") from error
            profile = reply.profile
        else:
            raise InvalidArgument("set profile_id or profile", field="target")
        subject = subject_from_profile(profile, channel, request.context)
        return segments_pb2.EvaluateSegmentsResponse(segment_keys=self.compiled.evaluate(subject))

    async def EstimateSize(
        self, request: segments_pb2.EstimateSizeRequest, context: Context
    ) -> segments_pb2.EstimateSizeResponse:
        if self.sizing is None:
            raise FailedPrecondition(
                "this segment service keeps no projection of profiles "
                "(TESSERA_PROJECTION=false); ask a replica that keeps one"
            )
        target = request.WhichOneof("target")
        segments = {key: d.rule for key, d in self.compiled.definitions.items()}
        if target == "segment_key":
            rule = (await self.catalog.get(request.segment_key)).rule
            condition = segment_from_proto(
                segments_pb2.Segment(key=request.segment_key, rule=rule)
            ).rule
        elif target == "rule":
            condition = rule_from_proto(request.rule, "rule")
            unknown = sorted(dependencies(condition) - segments.keys())
            if unknown:
                raise InvalidArgument(f"refers to unknown segment {unknown[0]!r}", field="rule")
        else:
            raise InvalidArgument("set segment_key or rule", field="target")
        goal, window = goal_window(request.goal_event_type, request.window_days)
        result = await self.sizing.estimate(condition, segments, goal, window)
        return estimate_response(result)
