"""ProfileService over gRPC: convert the request, call the application, convert back."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tessera import guard, metrics, tracing
from tessera.common.v1 import common_pb2
from tessera.convert import check_channel, struct_to_dict
from tessera.errors import InvalidArgument, ResourceExhausted, TesseraError
from tessera.profiles import application
from tessera.profiles.application import Scoring, Stores
from tessera.profiles.domain.model import EventData
from tessera.profiles.feed import Feed
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore
from tessera.profiles.transport import convert
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.server import error_status

IDENTIFY = "/tessera.profiles.v1.ProfileService/Identify"
"""Each IdentifyStream message is counted under the unary method it stands for."""
IDENTIFY_STREAM = "/tessera.profiles.v1.ProfileService/IdentifyStream"
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

Context = grpc.aio.ServicerContext[Any, Any]


def _code_of(answer: profiles_pb2.IdentifyStreamResponse) -> str:
    """The status name a unary Identify would have ended with."""
    return _CODE_NAMES.get(answer.error.code, "UNKNOWN") if answer.HasField("error") else "OK"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _events_in(request: profiles_pb2.TrackStreamRequest | guard.Refused) -> int:
    """How many events one stream message carries (a refused one: as decoded, or 1)."""
    if isinstance(request, guard.Refused):
        if not isinstance(request.message, profiles_pb2.TrackStreamRequest):
            return 1
        request = request.message
    return max(1, len(request.events) + request.HasField("event"))


def _events_of(
    request: profiles_pb2.TrackStreamRequest | guard.Refused,
) -> list[EventData | InvalidArgument | ResourceExhausted]:
    """The events of one stream message, each bad one as its error.

    `event` comes first, then `events` in order. A message the edge refused
    is refused as a whole: each of its events counts as rejected.
    """
    if isinstance(request, guard.Refused):
        return [request.error] * _events_in(request)
    now = _now()
    out: list[EventData | InvalidArgument | ResourceExhausted] = []
    for event in [request.event] if request.HasField("event") else []:
        out.append(_event_or_error(event, now))
    for event in request.events:
        out.append(_event_or_error(event, now))
    if not out:  # neither set: refused as an empty event is
        out.append(_event_or_error(request.event, now))
    return out


def _event_or_error(
    event: common_pb2.Event, now: dt.datetime
) -> EventData | InvalidArgument | ResourceExhausted:
    try:
        return convert.event_from_proto(event, now)
    except (InvalidArgument, ResourceExhausted) as error:
        return error


def _stream_error(
    request_id: int, code: grpc.StatusCode, message: str, field: str
) -> profiles_pb2.IdentifyStreamResponse:
    """An IdentifyStream answer carrying the status a unary Identify would end with."""
    return profiles_pb2.IdentifyStreamResponse(
        request_id=request_id,
        error=profiles_pb2.IdentifyStreamError(code=code.value[0], message=message, field=field),
    )


class ProfileServicer(profiles_pb2_grpc.ProfileServiceServicer):
    """Implements tessera.profiles.v1.ProfileService."""

    def __init__(
        self,
        store: ProfileStore,
        sessions: SessionStore,
        scoring: Scoring | None = None,
        feed: Feed | None = None,
        max_export_page_size: int = 1000,
    ) -> None:
        self.stores = Stores(store, sessions, scoring=scoring or Scoring(), feed=feed)
        self.max_export_page_size = max_export_page_size
        self.draining = asyncio.Event()
        """Set when the server drains: IdentifyStream streams answer what they read and end."""

    def drain(self) -> None:
        """End every IdentifyStream (UNAVAILABLE after its pending answers)."""
        self.draining.set()

    async def Identify(
        self, request: profiles_pb2.IdentifyRequest, context: Context
    ) -> profiles_pb2.IdentifyResponse:
        return await self._identify(request)

    async def _identify(
        self, request: profiles_pb2.IdentifyRequest
    ) -> profiles_pb2.IdentifyResponse:
        """Identify, for the unary call and for each message of IdentifyStream alike."""
        keys = convert.identity_keys(request.identities, "identities")
        check_channel(request.channel, "channel")
        return convert.identify_response(await application.identify(self.stores, keys))

    async def IdentifyStream(
        self,
        request_iterator: AsyncIterator[profiles_pb2.IdentifyStreamRequest | guard.Refused],
        context: Context,
    ) -> AsyncIterator[profiles_pb2.IdentifyStreamResponse]:
        answers = application.answer_each(request_iterator, self._identify_timed, self.draining)
        metrics.IDENTIFY_STREAMS.inc()
        try:
            async for answer in answers:
                yield answer
        finally:
            metrics.IDENTIFY_STREAMS.dec()

    async def _identify_timed(
        self, message: profiles_pb2.IdentifyStreamRequest | guard.Refused
    ) -> profiles_pb2.IdentifyStreamResponse:
        """One message, counted and timed as an Identify (the dashboards' Identify rate),
        and traced as one while tracing is on: a server span, child of the caller's."""
        started = time.perf_counter()
        if not tracing.enabled():
            answer = await self._identify_one(message)
            code = _code_of(answer)
        else:
            sent = message.message if isinstance(message, guard.Refused) else message
            traceparent = (
                sent.traceparent if isinstance(sent, profiles_pb2.IdentifyStreamRequest) else ""
            )
            with tracing.message_span(IDENTIFY, traceparent):
                answer = await self._identify_one(message)
                code = _code_of(answer)
                tracing.mark_failed(code)
        metrics.record_rpc(IDENTIFY, code, time.perf_counter() - started)
        return answer

    async def _identify_one(
        self, message: profiles_pb2.IdentifyStreamRequest | guard.Refused
    ) -> profiles_pb2.IdentifyStreamResponse:
        """One request of an IdentifyStream, answered as Identify would answer it."""
        if isinstance(message, guard.Refused):
            request = message.message
            assert isinstance(request, profiles_pb2.IdentifyStreamRequest)
            # Named as the unary Identify names it, inside its request.
            field = message.error.field.removeprefix("request.")
            code, _ = error_status(message.error, IDENTIFY_STREAM)
            text = f"{field}: {message.error.message}" if field else message.error.message
            return _stream_error(request.request_id, code, text, field)
        try:
            return profiles_pb2.IdentifyStreamResponse(
                request_id=message.request_id,
                response=await self._identify(message.request),
            )
        except Exception as error:
            code, text = error_status(error, IDENTIFY_STREAM)
            field = error.field if isinstance(error, TesseraError) else ""
            return _stream_error(message.request_id, code, text, field)

    async def GetProfile(
        self, request: profiles_pb2.GetProfileRequest, context: Context
    ) -> profiles_pb2.GetProfileResponse:
        lookup = request.WhichOneof("lookup")
        if lookup == "profile_id":
            profile = await application.get_profile(self.stores, request.profile_id)
        elif lookup == "identity":
            key = convert.identity_key(request.identity, "identity")
            profile = await application.get_profile_by_identity(self.stores, key)
        else:
            raise InvalidArgument("set profile_id or identity", field="lookup")
        return convert.get_profile_response(profile)

    async def UpdateTraits(
        self, request: profiles_pb2.UpdateTraitsRequest, context: Context
    ) -> profiles_pb2.UpdateTraitsResponse:
        patch = struct_to_dict(request.traits)
        profile = await application.update_traits(self.stores, request.profile_id, patch)
        return profiles_pb2.UpdateTraitsResponse(profile=convert.profile_message(profile))

    async def Track(
        self, request: profiles_pb2.TrackRequest, context: Context
    ) -> profiles_pb2.TrackResponse:
        event = convert.event_from_proto(request.event, _now())
        tracked = await application.track(self.stores, event)
        return profiles_pb2.TrackResponse(
            profile_id=tracked.profile_id, duplicate=tracked.duplicate
        )

    async def TrackStream(
        self, request_iterator: AsyncIterator[profiles_pb2.TrackStreamRequest], context: Context
    ) -> profiles_pb2.TrackStreamResponse:
        counts = await application.track_stream(
            self.stores, request_iterator, _events_of, _events_in
        )
        return convert.track_stream_response(counts)

    async def StreamEvents(
        self, request: profiles_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[profiles_pb2.StreamEventsResponse]:
        records = application.stream_events(
            self.stores,
            request.after,
            list(request.types),
            request.include_profiles,
            events=not request.exclude_events,
        )
        async for record in records:
            yield convert.feed_message(record)

    async def DeleteProfile(
        self, request: profiles_pb2.DeleteProfileRequest, context: Context
    ) -> profiles_pb2.DeleteProfileResponse:
        deleted = await application.delete_profile(self.stores, request.profile_id)
        return profiles_pb2.DeleteProfileResponse(deleted_events=deleted)

    async def ExportProfile(
        self, request: profiles_pb2.ExportProfileRequest, context: Context
    ) -> profiles_pb2.ExportProfileResponse:
        export = await application.export_profile(
            self.stores,
            request.profile_id,
            request.page_size,
            request.page_token,
            self.max_export_page_size,
        )
        return convert.export_response(export)
