"""SegmentService over gRPC: definitions, watch, validation and evaluation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from tessera.clients import peer_error
from tessera.convert import check_channel, stored_message, to_json
from tessera.definitions import Definition, DefinitionCache, DefinitionFeed, DefinitionStore
from tessera.errors import FailedPrecondition, InvalidArgument, Unimplemented, require
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.segments.domain import (
    CompiledSegments,
    SegmentDefinition,
    compile_segments,
    validate,
    validate_segment_key,
)
from tessera.segments.transport.convert import segment_from_proto, subject_from_profile
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def stored_segment(definition: Definition) -> segments_pb2.Segment:
    """The segment message of a stored definition, with version and times."""
    return stored_message(definition, segments_pb2.Segment())


def load_segment(definition: Definition) -> SegmentDefinition:
    """The evaluator's view of a stored segment."""
    return segment_from_proto(stored_segment(definition))


class SegmentServicer(segments_pb2_grpc.SegmentServiceServicer):
    """Implements tessera.segments.v1.SegmentService."""

    def __init__(
        self,
        store: DefinitionStore,
        feed: DefinitionFeed,
        cache: DefinitionCache[SegmentDefinition],
        profiles: profiles_pb2_grpc.ProfileServiceStub,
        deadline_s: float,
    ) -> None:
        self.store = store
        self.database = store.database
        self.feed = feed
        self.cache = cache
        self.profiles = profiles
        self.deadline_s = deadline_s
        self.compiled: CompiledSegments = compile_segments([])
        cache.on_change = self._recompile

    def _recompile(self, items: dict[str, SegmentDefinition]) -> None:
        self.compiled = compile_segments(items.values())

    def _normalise(
        self, segment: segments_pb2.Segment
    ) -> tuple[segments_pb2.Segment, SegmentDefinition]:
        validate_segment_key(segment.key)
        require(bool(segment.name), "segment.name", "is required")
        message = segments_pb2.Segment(
            key=segment.key, name=segment.name, description=segment.description, rule=segment.rule
        )
        definition = segment_from_proto(message)
        # The new definition must fit with every other: known references, no cycle.
        compile_segments({**self.cache.items, segment.key: definition}.values())
        return message, definition

    async def CreateSegment(
        self, request: segments_pb2.CreateSegmentRequest, context: Context
    ) -> segments_pb2.CreateSegmentResponse:
        message, _ = self._normalise(request.segment)
        stored = await self.database.run(self.store.create, message.key, to_json(message))
        await self.feed.refresh()
        return segments_pb2.CreateSegmentResponse(segment=stored_segment(stored))

    async def GetSegment(
        self, request: segments_pb2.GetSegmentRequest, context: Context
    ) -> segments_pb2.GetSegmentResponse:
        require(bool(request.key), "key", "is required")
        stored = await self.database.run(self.store.get, request.key)
        return segments_pb2.GetSegmentResponse(segment=stored_segment(stored))

    async def ListSegments(
        self, request: segments_pb2.ListSegmentsRequest, context: Context
    ) -> segments_pb2.ListSegmentsResponse:
        rows, token = await self.database.run(
            self.store.list, request.page_size, request.page_token
        )
        return segments_pb2.ListSegmentsResponse(
            segments=[stored_segment(r) for r in rows], next_page_token=token
        )

    async def UpdateSegment(
        self, request: segments_pb2.UpdateSegmentRequest, context: Context
    ) -> segments_pb2.UpdateSegmentResponse:
        message, _ = self._normalise(request.segment)
        stored = await self.database.run(
            self.store.update, message.key, to_json(message), request.expected_version
        )
        await self.feed.refresh()
        return segments_pb2.UpdateSegmentResponse(segment=stored_segment(stored))

    async def DeleteSegment(
        self, request: segments_pb2.DeleteSegmentRequest, context: Context
    ) -> segments_pb2.DeleteSegmentResponse:
        require(bool(request.key), "key", "is required")
        users = (
            sorted(self.compiled.dependents(request.key)) if request.key in self.compiled else []
        )
        if users:
            raise FailedPrecondition(
                f"segments {', '.join(users)} use segment({request.key!r}); change them first",
                field="key",
            )
        await self.database.run(self.store.delete, request.key)
        await self.feed.refresh()
        return segments_pb2.DeleteSegmentResponse()

    async def WatchSegments(
        self, request: segments_pb2.WatchSegmentsRequest, context: Context
    ) -> AsyncIterator[segments_pb2.WatchSegmentsResponse]:
        async for change in self.feed.watch():
            yield segments_pb2.WatchSegmentsResponse(
                snapshot=change.snapshot,
                segments=[stored_segment(d) for d in change.upserted],
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
        raise Unimplemented(
            "EstimateSize is not built yet (the columnar projection has its own issue)"
        )
