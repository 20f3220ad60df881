"""What the profile service does, over its stores: identify, track, read, erase.

Plain async functions, free of gRPC and protobuf: the servicer converts a
request, calls one of these, and converts the answer back. Validation of what
a client sent happens before (at the edge); these take domain values.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import datetime as dt
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tessera.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TesseraError,
    Unavailable,
    require,
)
from tessera.profiles.domain.conversion import PRIOR, ConversionModel
from tessera.profiles.domain.event_history import bounded, bounded_until
from tessera.profiles.domain.features import (
    DEFAULT_INTEREST_RULES,
    InterestRules,
    compute_features,
    timeless,
)
from tessera.profiles.domain.history import History
from tessera.profiles.domain.identity import Refusal
from tessera.profiles.domain.model import EVENT_TYPE, EventData, IdentityKey
from tessera.profiles.domain.profile import Profile
from tessera.profiles.domain.session import Session
from tessera.profiles.feed import Feed
from tessera.profiles.storage.feed import FeedRecord
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import IdentifyResult, ProfileRecord, ProfileStore, Recorded

T = TypeVar("T")
R = TypeVar("R")


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
    built: dict[str, Built] = field(default_factory=dict)
    """Profiles kept built, by id, at most PROFILES_KEPT (`_profile`)."""


PROFILES_KEPT = 2048
"""Profiles kept built for their stored record and session (`_profile`)."""

Built = tuple[ProfileRecord, Session | None, InterestRules, ConversionModel, dt.datetime, Profile]
"""A profile built, with the record, session and scoring it was built from, and
until when its event history stays within bounds as it is (`bounded_until`)."""


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
    """The profile of a stored record with its live session and features, as of now.

    A profile read again with nothing changed (the same record and session
    objects, which the stores hand out again for unchanged data, the same
    scoring) whose features do not move with the clock (`timeless`) and
    whose event history is still within its bounds is the one built last time:
    every part of it is what building it again gives. The very object, so
    the transport's message built from it is reused too.
    """
    now = _now()
    session = await stores.sessions.get(record.profile_id, now)
    interests, model = stores.scoring.interests, stores.scoring.model
    kept = stores.built
    built = kept.get(record.profile_id)
    if (
        built is not None
        and built[0] is record
        and built[1] is session
        and built[2] is interests
        and built[3] is model
        and now < built[4]
    ):
        return built[5]
    profile = _build_profile(record, session, now, interests, model)
    until = bounded_until(record.event_history)
    if timeless(record.history) and until is not None and now < until:
        kept.pop(record.profile_id, None)
        if len(kept) >= PROFILES_KEPT:
            del kept[next(iter(kept))]  # the least recently built
        kept[record.profile_id] = (record, session, interests, model, until, profile)
    return profile


def _build_profile(
    record: ProfileRecord,
    session: Session | None,
    now: dt.datetime,
    interests: InterestRules,
    model: ConversionModel,
) -> Profile:
    return Profile(
        profile_id=record.profile_id,
        identities=tuple(record.identities),
        traits=record.traits,
        session=session,
        features=compute_features(session, record.history, now, interests, model),
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


STREAM_IN_FLIGHT = 64
"""Requests of one stream handled at once; reading waits while this many are."""

_READ_ALL = object()


async def answer_each(
    items: AsyncIterable[T],
    answer: Callable[[T], Awaitable[R]],
    stop: asyncio.Event,
    limit: int = STREAM_IN_FLIGHT,
) -> AsyncGenerator[R, None]:
    """Answer every item of a stream concurrently, yielding answers as they finish.

    Each item gets its own task (at most `limit` at once, so a fast sender
    waits rather than piling up work); answers come out in the order they
    finish, for one writer to send. `answer` answers errors too (IdentifyStream
    turns them into that request's error): it should not raise.

    When the sender is done, what is under way is answered and the stream
    ends. When `stop` is set (the server drains), reading stops at once, what
    was read is answered, and `Unavailable` ends the stream so the client
    opens another on a replica that stays.
    """
    finished: asyncio.Queue[Any] = asyncio.Queue()
    slots = asyncio.Semaphore(limit)
    working: set[asyncio.Task[None]] = set()

    async def run(item: T) -> None:
        try:
            finished.put_nowait(await answer(item))
        finally:
            slots.release()

    async def read() -> None:
        async for item in items:
            await slots.acquire()
            task = asyncio.create_task(run(item))
            working.add(task)
            task.add_done_callback(working.discard)

    reader = asyncio.create_task(read())
    stopper = asyncio.create_task(stop.wait())
    stopper.add_done_callback(lambda _: reader.cancel())
    reader.add_done_callback(lambda _: finished.put_nowait(_READ_ALL))
    try:
        while (item := await finished.get()) is not _READ_ALL:
            yield item
        while working:
            await asyncio.wait(set(working))
        while not finished.empty():
            yield finished.get_nowait()
        if not reader.cancelled():
            # What ended the reading (a message that did not decode) ends the stream.
            reader.result()
        if stop.is_set():
            raise Unavailable("the server is shutting down; open a stream to another replica")
    finally:
        stopper.cancel()
        reader.cancel()
        for task in working:
            task.cancel()


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

    `track_batch` of one event; its error (NOT_FOUND for a profile that
    does not exist) is raised.
    """
    (outcome,) = await track_batch(stores, [event])
    if isinstance(outcome, TesseraError):
        raise outcome
    return outcome


async def _profile_ids(
    stores: Stores, events: Sequence[EventData]
) -> list[str | InvalidArgument | ResourceExhausted | NotFound]:
    """The profile each event is for: its profile_id, else the one its identities resolve to.

    Identities seen before on one profile are looked up in one query for the
    whole batch; the others are resolved one event at a time, in order, as
    `Identify` would (creating or merging profiles), so a later event finds
    what an earlier one created.
    """
    wanted = {key for e in events if not e.profile_id for key in e.identities}
    owners = await stores.profiles.database.run(stores.profiles.owners, wanted) if wanted else {}
    found: list[str | InvalidArgument | ResourceExhausted | NotFound] = []
    for event in events:
        if event.profile_id:
            found.append(event.profile_id)
            continue
        known = {owners.get(key) for key in event.identities}
        if len(known) == 1 and None not in known:
            found.append(str(known.pop()))
            continue
        try:
            found.append((await _resolve(stores, event.identities)).profile.profile_id)
        except (InvalidArgument, ResourceExhausted, NotFound) as error:
            found.append(error)
    return found


async def track_batch(
    stores: Stores, events: Sequence[EventData]
) -> list[Tracked | InvalidArgument | ResourceExhausted | NotFound]:
    """Record validated events, each exactly once, with one write per store for the batch.

    As `track` of each event in turn (docs/profile-writes.md, "Speed"): one
    SQL transaction stores the new events in the log, not yet applied, and
    folds them into the histories; one atomic step folds them into the hot
    sessions; one statement marks them applied. A retry of an event finds
    its row as `track` would. The outcome of each event, in order: where it
    landed, or the error that kept it out (an unknown profile: NOT_FOUND),
    which leaves the other events of the batch as they are.
    """
    outcomes: list[Tracked | InvalidArgument | ResourceExhausted | NotFound] = []
    resolved = await _profile_ids(stores, events)
    kept = [i for i, found in enumerate(resolved) if isinstance(found, str)]
    database = stores.profiles.database
    recorded = await database.run(
        stores.profiles.record_events,
        [events[i] for i in kept],
        [str(resolved[i]) for i in kept],
    )
    if any(isinstance(r, Recorded) and not r.duplicate for r in recorded):
        _written(stores)
    pending: dict[str, list[EventData]] = {}
    for result in recorded:
        if isinstance(result, Recorded) and result.pending is not None:
            pending.setdefault(result.profile_id, []).append(result.pending)
    if pending:
        await stores.sessions.apply_many(pending)
        applied = [event.event_id for taken in pending.values() for event in taken]
        await database.run(stores.profiles.mark_applied, applied)
    results = iter(recorded)
    for found in resolved:
        if not isinstance(found, str):
            outcomes.append(found)
            continue
        result = next(results)
        outcomes.append(
            result if isinstance(result, NotFound) else Tracked(result.profile_id, result.duplicate)
        )
    return outcomes


TRACK_BATCH = 250
"""Most events of a stream written together (one transaction, one hot-store step)."""
BATCH_IDLE_S = 0.025
"""A stream's batch is written once its next message has not come for this long ..."""
BATCH_IDLE_SPINS = 8
"""... nor within this many turns of the event loop before and after that."""


async def _arrives(ready: Callable[[], bool], arrived: asyncio.Event) -> bool:
    """Whether the next message of a stream is there, or comes without a pause.

    Time alone does not tell: while other calls keep the event loop busy
    (a SQLite write runs on it), a message that had arrived long ago is
    handed over only some turns of the loop later. So a pause is
    BATCH_IDLE_SPINS turns of the loop without the message, then
    BATCH_IDLE_S of waiting, then as many turns again. A message already
    received comes within the first turns, without a timer.
    """
    for attempt in range(2):
        for _ in range(BATCH_IDLE_SPINS):
            if ready():
                return True
            await asyncio.sleep(0)
        if attempt == 0 and not ready():
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), BATCH_IDLE_S)
    return ready()


async def stream_batches(
    items: AsyncIterable[T], size: int = TRACK_BATCH, weight: Callable[[T], int] = lambda _: 1
) -> AsyncGenerator[list[T], None]:
    """The items of a stream in lists weighing at most `size`, in order.

    An item weighs `weight(item)` (a TrackStream message: its events); an
    item heavier than `size` makes a list of its own. A list ends early
    when the stream pauses (`_arrives`), so that the events of a slow
    stream are written, and seen by the next Decide, without waiting for
    more. One task reads the stream ahead (up to `size` in weight) while
    the consumer writes; a task per item cost more than the item's own
    conversion. An error of the stream is raised once the items before it
    are handed over, without the list it interrupted.
    """
    buffer: collections.deque[tuple[T, int]] = collections.deque()
    buffered = 0
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()
    ended = False

    async def read() -> None:
        nonlocal ended, buffered
        try:
            async for item in items:
                heft = max(1, weight(item))
                buffer.append((item, heft))
                buffered += heft
                arrived.set()
                if buffered >= size:
                    room.clear()
                    await room.wait()
        finally:
            ended = True
            arrived.set()

    def ready() -> bool:
        return bool(buffer) or ended

    reader = asyncio.create_task(read())
    try:
        batch: list[T] = []
        held = 0
        while True:
            if buffer and (not batch or held + buffer[0][1] <= size):
                item, heft = buffer.popleft()
                buffered -= heft
                batch.append(item)
                held += heft
                room.set()
                continue
            if not batch:
                if ended:
                    break
                arrived.clear()
                await arrived.wait()
                continue
            if held < size and not buffer and not ended and await _arrives(ready, arrived):
                continue
            if ended and not buffer and reader.done() and reader.exception() is not None:
                break  # the stream failed: its error, not this list
            yield batch
            batch = []
            held = 0
        await reader  # the stream's own error, if it ended with one
    finally:
        if not reader.done():
            reader.cancel()


async def track_stream(
    stores: Stores,
    items: AsyncIterable[T],
    events_of: Callable[[T], Sequence[EventData | InvalidArgument | ResourceExhausted]],
    weight: Callable[[T], int] = lambda _: 1,
) -> StreamCounts:
    """Track every event of a stream in batches; one bad event is counted, not fatal.

    `events_of` turns an item (a message, `weight(item)` events) into its
    validated events, each bad one as the error that refuses it
    (InvalidArgument, or ResourceExhausted for one over a size limit), so
    a malformed event is counted as rejected like an event for a profile
    that does not exist; the other events of its batch are stored. Any
    other error ends the stream.
    """
    accepted = duplicates = rejected = 0
    async with contextlib.aclosing(stream_batches(items, weight=weight)) as batches:
        async for batch in batches:
            events: list[EventData] = []
            for item in batch:
                for event in events_of(item):
                    if isinstance(event, EventData):
                        events.append(event)
                    else:
                        rejected += 1
            for outcome in await track_batch(stores, events) if events else []:
                if not isinstance(outcome, Tracked):
                    rejected += 1
                elif outcome.duplicate:
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
    stores: Stores,
    after: int,
    types: Sequence[str],
    profiles: bool = False,
    events: bool = True,
) -> AsyncIterator[FeedRecord]:
    """The change feed after `after`, live: events (of `types` if any), merges, erasures.

    With `profiles`, also every profile's traits and identity types after
    each change; without `events`, no event records (types must then be empty).
    """
    require(after >= 0, "after", "must not be negative")
    require(
        events or not types,
        "types",
        "must be empty with exclude_events: no event of any type is served then",
    )
    for index, event_type in enumerate(types):
        require(
            bool(EVENT_TYPE.match(event_type)),
            f"types[{index}]",
            "must be an event type: lowercase letters, digits and '_', starting with a letter",
        )
    if stores.feed is None:
        raise TesseraError("the change feed is not running")
    return stores.feed.follow(after, list(dict.fromkeys(types)), profiles, events)


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
