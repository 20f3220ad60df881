"""The one mapping between the profile service's domain values and its protos.

Every field of a Session, Features or Profile message is filled here and
nowhere else, so a field added to the contract has exactly one place to go.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from tessera.common.v1 import common_pb2
from tessera.convert import (
    check_channel,
    datetime_to_timestamp,
    dict_to_struct,
    struct_to_dict,
    timestamp_to_datetime,
)
from tessera.profiles.application import Export, Identified, StreamCounts
from tessera.profiles.domain.event_history import EventHistory
from tessera.profiles.domain.features import Features
from tessera.profiles.domain.history import History
from tessera.profiles.domain.model import (
    EventData,
    IdentityKey,
    normalize_identities,
    normalize_identity,
    validate_event,
)
from tessera.profiles.domain.profile import Profile
from tessera.profiles.domain.session import Session
from tessera.profiles.storage.feed import FeedRecord
from tessera.profiles.v1 import profiles_pb2


def _pairs(identities: Iterable[common_pb2.Identity]) -> list[tuple[str, str]]:
    return [(i.type, i.value) for i in identities]


def identity_keys(identities: Iterable[common_pb2.Identity], field: str) -> list[IdentityKey]:
    """Identities of a request in stored form; INVALID_ARGUMENT naming `field`."""
    return normalize_identities(_pairs(identities), field)


def identity_key(identity: common_pb2.Identity, field: str) -> IdentityKey:
    """One identity of a request in stored form; INVALID_ARGUMENT naming `field`."""
    return normalize_identity(identity.type, identity.value, field)


def event_from_proto(event: common_pb2.Event, now: dt.datetime) -> EventData:
    """A validated domain event; INVALID_ARGUMENT naming the first bad field."""
    channel = check_channel(event.channel, "event.channel")
    return validate_event(
        event_id=event.event_id,
        event_type=event.type,
        profile_id=event.profile_id,
        identities=_pairs(event.identities),
        timestamp=timestamp_to_datetime(event.timestamp),
        channel=channel,
        properties=struct_to_dict(event.properties),
        now=now,
    )


def session_message(session: Session | None) -> profiles_pb2.Session:
    """The hot session as the contract shows it; empty when there is no live visit."""
    if session is None:
        return profiles_pb2.Session()
    return profiles_pb2.Session(
        started_at=datetime_to_timestamp(session.started_at),
        last_seen_at=datetime_to_timestamp(session.last_seen_at),
        channel=common_pb2.Channel.ValueType(session.channel),
        page_views=session.page_views,
        product_views=session.product_views,
        category_views=session.category_views,
        cart=[
            profiles_pb2.CartItem(
                product_id=item.product_id,
                category=item.category,
                quantity=item.quantity,
                price=item.price,
            )
            for item in session.cart
        ],
        favorites=session.favorites,
        searches=session.searches,
        time_spent_ms=session.time_spent_ms,
        events=session.events,
    )


def features_message(features: Features) -> profiles_pb2.Features:
    """Computed features as the contract shows them."""
    return profiles_pb2.Features(
        rfm=profiles_pb2.Rfm(
            # The contract's "never bought": -1 (segments read it as null).
            recency_days=(
                features.rfm.recency_days if features.rfm.recency_days is not None else -1.0
            ),
            frequency=features.rfm.frequency,
            monetary=features.rfm.monetary,
        ),
        lifetime_value=features.lifetime_value,
        interests=[
            profiles_pb2.Interest(category=i.category, score=i.score) for i in features.interests
        ],
        conversion_probability=features.conversion_probability,
        conversion_model_version=features.conversion_model_version,
    )


EVENT_HISTORY_MESSAGES = 1024
"""Event history messages kept built, for the history values they were built from."""
EVENT_HISTORY_MESSAGE_DAYS = 256
"""Most (series, day) entries of a history whose message is kept: with the count above,
a few tens of MB at most; a longer history's message is built at each read."""
_event_history_messages: dict[int, tuple[EventHistory, profiles_pb2.EventHistory]] = {}


def event_history_message(history: EventHistory) -> profiles_pb2.EventHistory:
    """Daily event series as the contract shows them: columns aligned by day, days ascending.

    Built once per history value: the profile service reads the same
    (immutable) history for every read of an unchanged profile, and
    building the message cost more than copying it into a reply. The
    message returned is shared: copy it (a message field set from it is
    a copy), never change it.
    """
    known = _event_history_messages.get(id(history))
    if known is not None and known[0] is history:
        return known[1]
    message = _build_event_history_message(history)
    if sum(len(series.days) for series in history.series.values()) > EVENT_HISTORY_MESSAGE_DAYS:
        return message
    if len(_event_history_messages) >= EVENT_HISTORY_MESSAGES:
        del _event_history_messages[next(iter(_event_history_messages))]
    # The value holds the history, so its id is not reused while the entry lives.
    _event_history_messages[id(history)] = (history, message)
    return message


def _build_event_history_message(history: EventHistory) -> profiles_pb2.EventHistory:
    return profiles_pb2.EventHistory(
        series=[
            profiles_pb2.EventSeries(
                event_type=event_type,
                filter_property=prop,
                filter_value=value,
                days=series.days,
                counts=series.counts,
                sums=[
                    profiles_pb2.PropertySums(property=name, values=values)
                    for name, values in sorted(series.sums.items())
                ],
            )
            for (event_type, prop, value), series in sorted(history.series.items())
        ]
    )


PROFILE_MESSAGES = 1024
"""Profile messages kept built, for the profile values they were built from (and as
many of each plain answer, `_answer_of`)."""
_profile_messages: dict[int, tuple[Profile, profiles_pb2.Profile]] = {}


def _kept(profile: Profile) -> bool:
    """Whether the application may hand out this very profile value again: it keeps
    those whose features do not move with the clock, which no purchase ever
    had (`application._profile`). Only those are worth keeping a message for."""
    return profile.features.rfm.recency_days is None


def profile_message(profile: Profile) -> profiles_pb2.Profile:
    """A profile with its session and features.

    Built once per profile value the application hands out again
    (`application._profile` does for an unchanged profile whose features
    do not move with the clock): the value is immutable, so its message is
    too. The message returned is shared: copy it (a message field set from
    it is a copy), never change it.
    """
    known = _profile_messages.get(id(profile))
    if known is not None and known[0] is profile:
        return known[1]
    message = _build_profile_message(profile)
    if not _kept(profile):
        return message
    if len(_profile_messages) >= PROFILE_MESSAGES:
        del _profile_messages[next(iter(_profile_messages))]
    # The value holds the profile, so its id is not reused while the entry lives.
    _profile_messages[id(profile)] = (profile, message)
    return message


def _build_profile_message(profile: Profile) -> profiles_pb2.Profile:
    return profiles_pb2.Profile(
        profile_id=profile.profile_id,
        identities=[common_pb2.Identity(type=k.type, value=k.value) for k in profile.identities],
        traits=dict_to_struct(dict(profile.traits)),
        session=session_message(profile.session),
        features=features_message(profile.features),
        created_at=datetime_to_timestamp(profile.created_at),
        updated_at=datetime_to_timestamp(profile.updated_at),
        event_history=event_history_message(profile.event_history),
    )


_plain_answers: dict[int, tuple[profiles_pb2.Profile, profiles_pb2.IdentifyResponse]] = {}
_profile_answers: dict[int, tuple[profiles_pb2.Profile, profiles_pb2.GetProfileResponse]] = {}


def _answer_of(
    answers: dict[int, tuple[profiles_pb2.Profile, Any]], profile: Profile, kind: Any
) -> Any:
    """`kind(profile=profile_message(profile))`, once per profile message kept: shared."""
    message = profile_message(profile)
    known = answers.get(id(message))
    if known is not None and known[0] is message:
        return known[1]
    answer = kind(profile=message)
    if not _kept(profile):
        return answer
    if len(answers) >= PROFILE_MESSAGES:
        del answers[next(iter(answers))]
    # The value holds the message, so its id is not reused while the entry lives.
    answers[id(message)] = (message, answer)
    return answer


def get_profile_response(profile: Profile) -> profiles_pb2.GetProfileResponse:
    """The answer to GetProfile; shared like `profile_message`'s: never change it."""
    answer: profiles_pb2.GetProfileResponse = _answer_of(
        _profile_answers, profile, profiles_pb2.GetProfileResponse
    )
    return answer


def identify_response(identified: Identified) -> profiles_pb2.IdentifyResponse:
    """The answer to Identify.

    The common answer (a known person, nothing created, merged or refused)
    is shared like `profile_message`'s: never change it.
    """
    if not (identified.created or identified.merged_profile_ids or identified.refused):
        answer: profiles_pb2.IdentifyResponse = _answer_of(
            _plain_answers, identified.profile, profiles_pb2.IdentifyResponse
        )
        return answer
    return profiles_pb2.IdentifyResponse(
        profile=profile_message(identified.profile),
        created=identified.created,
        merged_profile_ids=identified.merged_profile_ids,
        refused_identities=[
            profiles_pb2.RefusedIdentity(
                identity=common_pb2.Identity(type=r.identity.type, value=r.identity.value),
                reason=r.reason,
                profile_id=r.profile_id,
            )
            for r in identified.refused
        ],
    )


def track_stream_response(counts: StreamCounts) -> profiles_pb2.TrackStreamResponse:
    """The answer to TrackStream."""
    return profiles_pb2.TrackStreamResponse(
        accepted=counts.accepted, duplicates=counts.duplicates, rejected=counts.rejected
    )


def event_message(event: EventData) -> common_pb2.Event:
    """A stored event as the contract shows it."""
    return common_pb2.Event(
        event_id=event.event_id,
        profile_id=event.profile_id,
        identities=[common_pb2.Identity(type=k.type, value=k.value) for k in event.identities],
        channel=common_pb2.Channel.ValueType(event.channel),
        type=event.type,
        timestamp=datetime_to_timestamp(event.timestamp),
        properties=dict_to_struct(dict(event.properties)),
    )


def feed_message(record: FeedRecord) -> profiles_pb2.StreamEventsResponse:
    """One record of the change feed."""
    if record.kind == "event" and record.event is not None:
        return profiles_pb2.StreamEventsResponse(
            sequence=record.sequence, event=event_message(record.event)
        )
    if record.kind == "profile":
        snapshot = profiles_pb2.ProfileSnapshot(
            profile_id=record.profile_id,
            traits=dict_to_struct(dict(record.traits)),
            identity_types=list(record.identity_types),
        )
        if record.created_at is not None:
            snapshot.created_at.FromDatetime(record.created_at)
        return profiles_pb2.StreamEventsResponse(sequence=record.sequence, profile=snapshot)
    if record.kind == "merge":
        return profiles_pb2.StreamEventsResponse(
            sequence=record.sequence,
            merge=profiles_pb2.ProfileMerge(
                survivor_profile_id=record.profile_id,
                merged_profile_id=record.merged_profile_ids[0] if record.merged_profile_ids else "",
            ),
        )
    return profiles_pb2.StreamEventsResponse(
        sequence=record.sequence,
        deletion=profiles_pb2.ProfileDeletion(
            profile_id=record.profile_id, merged_profile_ids=list(record.merged_profile_ids)
        ),
    )


HASH_METHODS = {"sha256:": "sha256 of the trimmed, lowercased value"}
"""Prefixes of stored identity values that are hashes, and how they were made."""


def exported_identity(key: IdentityKey) -> profiles_pb2.ExportedIdentity:
    """An identity as stored, saying whether the value is a hash."""
    method = next((m for prefix, m in HASH_METHODS.items() if key.value.startswith(prefix)), "")
    return profiles_pb2.ExportedIdentity(
        type=key.type, value=key.value, hashed=bool(method), hash_method=method
    )


def history_message(history: History) -> profiles_pb2.ExportedHistory:
    """The purchase history kept for a person."""
    message = profiles_pb2.ExportedHistory(
        orders=history.orders,
        revenue=history.revenue,
        category_purchases=dict(history.categories),
    )
    if history.last_purchase_at is not None:
        message.last_purchase_at.CopyFrom(datetime_to_timestamp(history.last_purchase_at))
    return message


def export_response(export: Export) -> profiles_pb2.ExportProfileResponse:
    """One page of an export."""
    response = profiles_pb2.ExportProfileResponse(
        alias_profile_ids=export.aliases,
        events=[event_message(e) for e in export.events],
        next_page_token=export.next_page_token,
    )
    if export.profile is not None:
        response.profile.CopyFrom(profile_message(export.profile))
        response.identities.extend(exported_identity(k) for k in export.profile.identities)
    if export.history is not None:
        response.history.CopyFrom(history_message(export.history))
    return response
