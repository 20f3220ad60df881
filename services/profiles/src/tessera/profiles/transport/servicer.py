"""ProfileService over gRPC: proto in, domain and stores, proto out."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tessera.common.v1 import common_pb2
from tessera.convert import (
    check_channel,
    datetime_to_timestamp,
    dict_to_struct,
    struct_to_dict,
    timestamp_to_datetime,
)
from tessera.errors import InvalidArgument, TesseraError, Unimplemented
from tessera.profiles.domain.features import compute_features
from tessera.profiles.domain.model import (
    normalize_identities,
    normalize_identity,
    validate_event,
)
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileRecord, ProfileStore
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _session_message(state: dict[str, Any] | None) -> profiles_pb2.Session:
    if not state:
        return profiles_pb2.Session()
    return profiles_pb2.Session(
        started_at=datetime_to_timestamp(state["started_at"]),
        last_seen_at=datetime_to_timestamp(state["last_seen_at"]),
        channel=state["channel"],
        page_views=state["page_views"],
        product_views=state["product_views"],
        category_views=state["category_views"],
        cart=[
            profiles_pb2.CartItem(
                product_id=item["product_id"],
                category=item["category"],
                quantity=item["quantity"],
                price=item["price"],
            )
            for item in state["cart"]
        ],
        favorites=state["favorites"],
        searches=state["searches"],
        time_spent_ms=state["time_spent_ms"],
        events=state["events"],
    )


def _features_message(features: dict[str, Any]) -> profiles_pb2.Features:
    return profiles_pb2.Features(
        rfm=profiles_pb2.Rfm(**features["rfm"]),
        lifetime_value=features["lifetime_value"],
        interests=[profiles_pb2.Interest(category=c, score=s) for c, s in features["interests"]],
        conversion_probability=features["conversion_probability"],
    )


def _identity_pairs(identities: Any) -> list[tuple[str, str]]:
    return [(i.type, i.value) for i in identities]


class ProfileServicer(profiles_pb2_grpc.ProfileServiceServicer):
    """Implements tessera.profiles.v1.ProfileService."""

    def __init__(self, store: ProfileStore, sessions: SessionStore) -> None:
        self.store = store
        self.database = store.database
        self.sessions = sessions

    async def _profile(self, record: ProfileRecord) -> profiles_pb2.Profile:
        state = await self.sessions.get(record.profile_id, _now())
        return profiles_pb2.Profile(
            profile_id=record.profile_id,
            identities=[common_pb2.Identity(type=k.type, value=k.value) for k in record.identities],
            traits=dict_to_struct(record.traits),
            session=_session_message(state),
            features=_features_message(compute_features(state, record.history, _now())),
            created_at=datetime_to_timestamp(record.created_at),
            updated_at=datetime_to_timestamp(record.updated_at),
        )

    async def Identify(
        self, request: profiles_pb2.IdentifyRequest, context: Context
    ) -> profiles_pb2.IdentifyResponse:
        keys = normalize_identities(_identity_pairs(request.identities), "identities")
        check_channel(request.channel, "channel")
        result = await self.database.run(self.store.identify, keys)
        if result.merged_ids:
            await self.sessions.merge(result.profile.profile_id, result.merged_ids)
        return profiles_pb2.IdentifyResponse(
            profile=await self._profile(result.profile),
            created=result.created,
            merged_profile_ids=result.merged_ids,
        )

    async def GetProfile(
        self, request: profiles_pb2.GetProfileRequest, context: Context
    ) -> profiles_pb2.GetProfileResponse:
        lookup = request.WhichOneof("lookup")
        if lookup == "profile_id":
            record = await self.database.run(self.store.get, request.profile_id)
        elif lookup == "identity":
            key = normalize_identity(request.identity.type, request.identity.value, "identity")
            record = await self.database.run(self.store.get_by_identity, key)
        else:
            raise InvalidArgument("set profile_id or identity", field="lookup")
        return profiles_pb2.GetProfileResponse(profile=await self._profile(record))

    async def UpdateTraits(
        self, request: profiles_pb2.UpdateTraitsRequest, context: Context
    ) -> profiles_pb2.UpdateTraitsResponse:
        if not request.profile_id:
            raise InvalidArgument("is required", field="profile_id")
        patch = struct_to_dict(request.traits)
        if not patch:
            raise InvalidArgument("name at least one trait", field="traits")
        record = await self.database.run(self.store.update_traits, request.profile_id, patch)
        return profiles_pb2.UpdateTraitsResponse(profile=await self._profile(record))

    async def _track(self, event: common_pb2.Event) -> profiles_pb2.TrackResponse:
        data = validate_event(
            event_id=event.event_id,
            event_type=event.type,
            profile_id=event.profile_id,
            identities=_identity_pairs(event.identities),
            timestamp=timestamp_to_datetime(event.timestamp),
            channel=check_channel(event.channel, "event.channel"),
            properties=struct_to_dict(event.properties),
            now=_now(),
        )
        profile_id = data.profile_id
        if not profile_id:
            result = await self.database.run(self.store.identify, data.identities)
            profile_id = result.profile.profile_id
            if result.merged_ids:
                await self.sessions.merge(profile_id, result.merged_ids)
        canonical, duplicate, _ = await self.database.run(self.store.record_event, data, profile_id)
        # Also for a duplicate: if the first try stored the event but failed
        # before the hot session took it, the retry must still reach the
        # session. Applying is idempotent by event id.
        await self.sessions.apply(canonical, data)
        return profiles_pb2.TrackResponse(profile_id=canonical, duplicate=duplicate)

    async def Track(
        self, request: profiles_pb2.TrackRequest, context: Context
    ) -> profiles_pb2.TrackResponse:
        return await self._track(request.event)

    async def TrackStream(
        self, request_iterator: AsyncIterator[profiles_pb2.TrackStreamRequest], context: Context
    ) -> profiles_pb2.TrackStreamResponse:
        counts = profiles_pb2.TrackStreamResponse()
        async for request in request_iterator:
            try:
                response = await self._track(request.event)
            except InvalidArgument:
                counts.rejected += 1
                continue
            except TesseraError as error:
                if error.code_name == "NOT_FOUND":
                    counts.rejected += 1
                    continue
                raise
            if response.duplicate:
                counts.duplicates += 1
            else:
                counts.accepted += 1
        return counts

    async def StreamEvents(
        self, request: profiles_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[profiles_pb2.StreamEventsResponse]:
        raise Unimplemented("StreamEvents (the change feed) is not built yet")
        yield  # pragma: no cover - makes this an async generator

    async def DeleteProfile(
        self, request: profiles_pb2.DeleteProfileRequest, context: Context
    ) -> profiles_pb2.DeleteProfileResponse:
        if not request.profile_id:
            raise InvalidArgument("is required", field="profile_id")
        canonical = await self.database.run(self.store.canonical_id, request.profile_id)
        deleted = await self.database.run(self.store.delete_profile, canonical)
        await self.sessions.delete(canonical)
        return profiles_pb2.DeleteProfileResponse(deleted_events=deleted)

    async def ExportProfile(
        self, request: profiles_pb2.ExportProfileRequest, context: Context
    ) -> profiles_pb2.ExportProfileResponse:
        raise Unimplemented("ExportProfile is not built yet")
