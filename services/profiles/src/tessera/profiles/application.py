"""What the profile service does, over its stores: identify, track, read, erase.

Plain async functions, free of gRPC and protobuf: the servicer converts a
request, calls one of these, and converts the answer back. Validation of what
a client sent happens before (at the edge); these take domain values.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tessera.errors import InvalidArgument, ResourceExhausted, TesseraError, require
from tessera.profiles.domain.conversion import PRIOR, ConversionModel
from tessera.profiles.domain.event_history import bounded
from tessera.profiles.domain.features import (
    DEFAULT_INTEREST_RULES,
    InterestRules,
    compute_features,
)
from tessera.profiles.domain.history import History
from tessera.profiles.domain.identity import Refusal
from tessera.profiles.domain.model import EVENT_TYPE, EventData, IdentityKey
from tessera.profiles.domain.profile import Profile
from tessera.profiles.feed import Feed
from tessera.profiles.storage.feed import FeedRecord
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import IdentifyResult, ProfileRecord, ProfileStore

T = TypeVar("T")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Scoring:
    """What features are computed with: the interest rules, the conversion model in use.

    `model` is replaced whole when a newer trained model is found (see
    `refresh_model`); a read takes whichever model is there when it starts.
    """

    interests: InterestRules = DEFAULT_INTEREST_RULES
    model: ConversionModel = PRIOR


@dataclass(frozen=True)
class Stores:
    """Where the profile service keeps people: durable profiles and hot sessions."""

    profiles: ProfileStore
    sessions: SessionStore
    scoring: Scoring = field(default_factory=Scoring)
    feed: Feed | None = None
    """The change feed; told after each write commits so it numbers the record soon."""


def _written(stores: Stores) -> None:
    """A log record committed: have the sequencer number it (never waits)."""
    if stores.feed is not None:
        stores.feed.kick()


@dataclass(frozen=True)
class Identified:
    """The profile identities resolved to, and what resolving did."""

    profile: Profile
    created: bool
    merged_profile_ids: list[str]
    refused: list[Refusal] = field(default_factory=list)
    """Identities the identity rules kept out, with the reason."""


@dataclass(frozen=True)
class Tracked:
    """Where an event landed: the canonical profile, and whether it was a repeat."""

    profile_id: str
    duplicate: bool


@dataclass(frozen=True)
class StreamCounts:
    """Outcome of a stream of events."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


async def _profile(stores: Stores, record: ProfileRecord) -> Profile:
    now = _now()
    session = await stores.sessions.get(record.profile_id, now)
    return Profile(
        profile_id=record.profile_id,
        identities=tuple(record.identities),
        traits=record.traits,
        session=session,
        features=compute_features(
            session, record.history, now, stores.scoring.interests, stores.scoring.model
        ),
        created_at=record.created_at,
        updated_at=record.updated_at,
        # Days that aged out since the last write are not shown.
        event_history=bounded(record.event_history, now),
    )


async def _resolve(stores: Stores, keys: list[IdentityKey]) -> IdentifyResult:
    result = await stores.profiles.database.run(stores.profiles.identify, keys)
    if result.wrote:
        _written(stores)
    if result.merged_ids:
        # The durable merge is committed; the merged profiles' live
        # sessions follow it into the survivor's.
        await stores.sessions.merge(result.profile.profile_id, result.merged_ids)
    return result


async def identify(stores: Stores, keys: list[IdentityKey]) -> Identified:
    """Resolve identities to one profile, creating or merging profiles as needed.

    Under the identity rules (limits and priority per identity type): an
    identity whose merge or attachment would break a limit is refused and
    reported, and stays where it was.
    """
    result = await _resolve(stores, keys)
    profile = await _profile(stores, result.profile)
    return Identified(profile, result.created, result.merged_ids, result.refused)


async def get_profile(stores: Stores, profile_id: str) -> Profile:
    """The profile behind a profile id or a merged id; NOT_FOUND otherwise."""
    record = await stores.profiles.database.run(stores.profiles.get, profile_id)
    return await _profile(stores, record)


async def get_profile_by_identity(stores: Stores, key: IdentityKey) -> Profile:
    """The profile an identity is attached to; NOT_FOUND otherwise."""
    record = await stores.profiles.database.run(stores.profiles.get_by_identity, key)
    return await _profile(stores, record)


async def update_traits(stores: Stores, profile_id: str, patch: Mapping[str, Any]) -> Profile:
    """Set traits (a None value removes one) and return the profile after."""
    require(bool(profile_id), "profile_id", "is required")
    require(bool(patch), "traits", "name at least one trait")
    record = await stores.profiles.database.run(
        stores.profiles.update_traits, profile_id, dict(patch)
    )
    _written(stores)
    return await _profile(stores, record)


async def track(stores: Stores, event: EventData) -> Tracked:
    """Record a validated event exactly once: log and history, then the hot session.

    The log row is stored not yet applied; once the session has taken the
    event the row is marked applied. A retry finding the row applied is a
    duplicate and changes nothing, however late it comes; a retry finding
    it not applied (the first try failed between the two writes) completes
    the stored event. Two tries racing through that window are kept to one
    count by the session's memory of recent event ids.
    """
    profile_id = event.profile_id
    if not profile_id:
        profile_id = (await _resolve(stores, event.identities)).profile.profile_id
    database = stores.profiles.database
    recorded = await database.run(stores.profiles.record_event, event, profile_id)
    if not recorded.duplicate:
        _written(stores)
    if recorded.pending is not None:
        await stores.sessions.apply(recorded.profile_id, recorded.pending)
        await database.run(stores.profiles.mark_applied, event.event_id)
    return Tracked(recorded.profile_id, recorded.duplicate)


async def track_stream(
    stores: Stores, items: AsyncIterable[T], event_of: Callable[[T], EventData]
) -> StreamCounts:
    """Track every event of a stream; one bad event is counted, not fatal.

    `event_of` turns an item into a validated event (raising InvalidArgument,
    or ResourceExhausted for a message over a size limit, when it cannot), so
    a malformed item is counted as rejected like an event for a profile that
    does not exist; any other error ends the stream.
    """
    accepted = duplicates = rejected = 0
    async for item in items:
        try:
            tracked = await track(stores, event_of(item))
        except (InvalidArgument, ResourceExhausted):
            rejected += 1
            continue
        except TesseraError as error:
            if error.code_name == "NOT_FOUND":
                rejected += 1
                continue
            raise
        if tracked.duplicate:
            duplicates += 1
        else:
            accepted += 1
    return StreamCounts(accepted, duplicates, rejected)


async def refresh_model(stores: Stores, goal: str) -> bool:
    """Use the newest trained conversion model for `goal`; True when it changed.

    One small query, run by the service's poller every few seconds, never per
    request: reads take `stores.scoring.model` as it is. Without a trained
    model the prior stays in use.
    """
    latest = await stores.profiles.database.run(stores.profiles.latest_model, goal)
    model = latest or PRIOR
    if model == stores.scoring.model:
        return False
    stores.scoring.model = model
    return True


async def delete_profile(stores: Stores, profile_id: str) -> int:
    """Erase a person: profile, identities, events and hot session; events erased."""
    require(bool(profile_id), "profile_id", "is required")
    database = stores.profiles.database
    canonical = await database.run(stores.profiles.canonical_id, profile_id)
    erased = await database.run(stores.profiles.delete_profile, canonical)
    _written(stores)
    await stores.sessions.delete(erased.profile_id, erased.aliases)
    return erased.events


def stream_events(
    stores: Stores, after: int, types: Sequence[str], profiles: bool = False
) -> AsyncIterator[FeedRecord]:
    """The change feed after `after`, live: events (of `types` if any), merges, erasures.

    With `profiles`, also every profile's traits and identity types after each change.
    """
    require(after >= 0, "after", "must not be negative")
    for index, event_type in enumerate(types):
        require(
            bool(EVENT_TYPE.match(event_type)),
            f"types[{index}]",
            "must be an event type: lowercase letters, digits and '_', starting with a letter",
        )
    if stores.feed is None:
        raise TesseraError("the change feed is not running")
    return stores.feed.follow(after, list(dict.fromkeys(types)), profiles)


DEFAULT_EXPORT_PAGE_SIZE = 100
EXPORT_PAGE_BYTES = 2 * 1024 * 1024
"""About how much event data one export page carries: under gRPC's 4 MiB default."""


@dataclass(frozen=True)
class Export:
    """One page of what the service holds about a person.

    The first page carries the profile (traits, identities, session,
    features), its aliases and history; every page carries events, in the
    order they were stored, and the token of the next page ("" at the end).
    """

    profile: Profile | None
    aliases: list[str]
    history: History | None
    events: list[EventData]
    next_page_token: str


def _page_token(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"events-after:{row_id}".encode()).decode()


def _after_row(token: str) -> int:
    if not token:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "events-after" and number.isdigit():
            return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise InvalidArgument("is not a token this service issued", field="page_token")


async def export_profile(
    stores: Stores, profile_id: str, page_size: int, page_token: str, max_page_size: int
) -> Export:
    """A page of everything held about a person; the events paged by `page_size`.

    `page_size` 0 means the default; above `max_page_size` it is lowered to
    it. A page also ends once its events hold about EXPORT_PAGE_BYTES.
    """
    require(bool(profile_id), "profile_id", "is required")
    require(page_size >= 0, "page_size", "must not be negative")
    after = _after_row(page_token)
    size = min(page_size or DEFAULT_EXPORT_PAGE_SIZE, max_page_size)
    database = stores.profiles.database
    canonical = await database.run(stores.profiles.canonical_id, profile_id)
    events, last = await database.run(
        stores.profiles.events_page, canonical, after, size, EXPORT_PAGE_BYTES
    )
    token = _page_token(last) if last is not None else ""
    if page_token:
        return Export(None, [], None, events, token)
    record = await database.run(stores.profiles.get, canonical)
    aliases = await database.run(stores.profiles.aliases_of, record.profile_id)
    return Export(await _profile(stores, record), aliases, record.history, events, token)
