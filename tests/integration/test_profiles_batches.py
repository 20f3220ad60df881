"""Batched writes of the profile service (`track_batch`), on PostgreSQL and Redis.

TrackStream writes what a stream has sent as one batch; these tests hand a
batch to the application directly, so that what is pinned is the answer of
each event of one and the same batch. What a client sees of it is tested
through the generated client in test_profiles_service.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterator

import psycopg
import pytest

from tessera import db, migrations
from tessera.errors import NotFound
from tessera.hot import RedisHotStore
from tessera.profiles.application import Stores, Tracked, identify, track_batch
from tessera.profiles.domain.model import EventData, IdentityKey
from tessera.profiles.server import ProfilesSettings
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)


Body = Callable[[Stores], Awaitable[None]]


@pytest.fixture
def run(postgres_url: str, redis_url: str, key_prefix: str) -> Iterator[Callable[[Body], None]]:
    """Run a test body in one event loop, on a profile store and a hot store of its own."""
    database = db.open_database(ProfilesSettings(database_url=postgres_url), "profiles")
    migrations.upgrade(database.engine, "profiles")

    async def within(body: Body) -> None:
        hot = RedisHotStore(redis_url, f"{key_prefix}batches-{uuid.uuid4().hex[:8]}:")
        try:
            await body(Stores(ProfileStore(database), SessionStore(hot)))
        finally:
            await hot.close()

    yield lambda body: asyncio.run(within(body))
    database.dispose()


def view(profile_id: str = "", *identities: IdentityKey, event_id: str = "") -> EventData:
    return EventData(
        event_id=event_id or uuid.uuid4().hex,
        type="product_view",
        timestamp=NOW,
        channel=1,
        profile_id=profile_id,
        identities=list(identities),
        properties={"category": "juicers", "product_id": "j-1"},
    )


async def new_profile(stores: Stores, *identities: IdentityKey) -> str:
    keys = list(identities) or [IdentityKey("cookie", uuid.uuid4().hex)]
    return (await identify(stores, keys)).profile.profile_id


async def session_events(stores: Stores, profile_id: str) -> int:
    session = await stores.sessions.get(profile_id, dt.datetime.now(dt.UTC))
    return session.events if session else 0


def applied(postgres_url: str, event_ids: list[str]) -> dict[str, bool]:
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(
            "SELECT event_id, applied FROM profiles_log WHERE event_id = ANY(%s)", (event_ids,)
        ).fetchall()
    return dict(rows)


def test_track_batch__unknown_profile_amid_others__it_alone_not_found(
    run: Callable[[Body], None], postgres_url: str
) -> None:
    async def body(stores: Stores) -> None:
        person = await new_profile(stores)
        batch = [view(person), view("no-such-profile"), view(person)]

        outcomes = await track_batch(stores, batch)

        assert outcomes[0] == Tracked(person, False)
        assert isinstance(outcomes[1], NotFound)
        assert (outcomes[1].field, outcomes[1].message) == (
            "event.profile_id",
            "no profile 'no-such-profile'",
        )
        assert outcomes[2] == Tracked(person, False)
        assert applied(postgres_url, [e.event_id for e in batch]) == {
            batch[0].event_id: True,
            batch[2].event_id: True,
        }
        assert await session_events(stores, person) == 2

    run(body)


def test_track_batch__same_event_id_twice_and_then_the_batch_again__each_counted_once(
    run: Callable[[Body], None],
) -> None:
    async def body(stores: Stores) -> None:
        person, other = await new_profile(stores), await new_profile(stores)
        twice = view(person)
        batch = [twice, view(other), twice, view(person)]

        first = await track_batch(stores, batch)
        retried = await track_batch(stores, batch)

        assert first == [
            Tracked(person, False),
            Tracked(other, False),
            Tracked(person, True),
            Tracked(person, False),
        ]
        assert retried == [
            Tracked(person, True),
            Tracked(other, True),
            Tracked(person, True),
            Tracked(person, True),
        ]
        assert (await session_events(stores, person), await session_events(stores, other)) == (
            2,
            1,
        )
        history = stores.profiles.get(person).event_history
        assert history.series[("product_view", "", "")].counts == (2,)

    run(body)


def test_track_batch__event_id_first_for_unknown_profile__later_copy_stored(
    run: Callable[[Body], None],
) -> None:
    # As one Track after the other: the first is refused, so the second,
    # with the same id for a profile that exists, is new.
    async def body(stores: Stores) -> None:
        person = await new_profile(stores)
        event_id = uuid.uuid4().hex
        batch = [view("no-such-profile", event_id=event_id), view(person, event_id=event_id)]

        outcomes = await track_batch(stores, batch)

        assert isinstance(outcomes[0], NotFound)
        assert outcomes[1] == Tracked(person, False)

    run(body)


def test_track_batch__identities_known_new_and_merged__each_event_on_its_profile(
    run: Callable[[Body], None],
) -> None:
    async def body(stores: Stores) -> None:
        known = IdentityKey("cookie", uuid.uuid4().hex)
        person = await new_profile(stores, known)
        fresh = IdentityKey("cookie", uuid.uuid4().hex)
        device = IdentityKey("device", uuid.uuid4().hex)
        other = await new_profile(stores, device)
        batch = [
            view("", known),
            view("", fresh),  # creates a profile
            view("", fresh),  # finds the profile the one before created
            view("", known, device),  # merges the two known people into the older one
            view(other),  # sent to the merged id
        ]

        outcomes = await track_batch(stores, batch)

        created = outcomes[1]
        assert isinstance(created, Tracked) and created.profile_id not in (person, other)
        assert outcomes == [
            Tracked(person, False),
            created,
            Tracked(created.profile_id, False),
            Tracked(person, False),
            Tracked(person, False),
        ]
        assert await session_events(stores, person) == 3
        assert await session_events(stores, created.profile_id) == 2

    run(body)
