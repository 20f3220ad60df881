"""What an unchanged profile's reads reuse: decoded records, built profiles, bounds in time."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session

from tessera.errors import NotFound
from tessera.hot import MemoryHotStore
from tessera.profiles import application
from tessera.profiles.application import Stores
from tessera.profiles.domain.event_history import (
    MAX_SERIES,
    EventHistory,
    Series,
    bounded,
    bounded_until,
)
from tessera.profiles.domain.model import EventData, IdentityKey
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileRow, ProfileStore

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
COOKIE = IdentityKey("cookie", "c-anna")


@given(
    first_days=st.lists(st.integers(20_000, 20_500), min_size=1, max_size=4),
    offset_s=st.integers(-3 * 86_400, 3 * 86_400),
)
def test_bounded_until__any_history__before_it_bounded_is_the_history_itself(
    first_days: list[int], offset_s: int
) -> None:
    history = EventHistory(
        {(f"t{i}", "", ""): Series((d,), (1,), {}) for i, d in enumerate(first_days)}
    )
    until = bounded_until(history)
    assert until is not None
    for moment in (until - dt.timedelta(microseconds=1), until + dt.timedelta(seconds=offset_s)):
        assert (bounded(history, moment) is history) == (moment < until)


def test_bounded_until__too_many_series__none() -> None:
    history = EventHistory(
        {(f"t{i}", "", ""): Series((20_000,), (1,), {}) for i in range(MAX_SERIES + 1)}
    )

    assert bounded_until(history) is None


def test_resolve_known__read_twice_unchanged__same_record_then_changed_record_after_a_write(
    store: ProfileStore,
) -> None:
    created = store.identify([COOKIE]).profile

    first = store.get_by_identity(COOKIE)
    again = store.get_by_identity(COOKIE)
    store.update_traits(created.profile_id, {"tier": "gold"})
    after = store.get_by_identity(COOKIE)

    assert again is first
    assert after is not first
    assert after.traits == {"tier": "gold"}
    assert first.traits == {}


def test_resolve_known__identity_of_another_profile_with_a_kept_one__not_known(
    store: ProfileStore,
) -> None:
    store.identify([COOKIE])
    store.identify([IdentityKey("cookie", "c-bob")])
    store.get_by_identity(COOKIE)  # kept decoded

    assert store.identify([COOKIE, IdentityKey("cookie", "c-bob")]).merged_ids


def test_profile__unchanged_and_timeless__same_profile_until_a_tracked_event(
    store: ProfileStore,
) -> None:
    stores = Stores(store, SessionStore(MemoryHotStore()))

    async def body() -> None:
        await application.identify(stores, [COOKIE])  # created: read on the write path
        first = (await application.identify(stores, [COOKIE])).profile
        again = (await application.identify(stores, [COOKIE])).profile
        await application.track(
            stores,
            EventData("e-1", "page_view", dt.datetime.now(dt.UTC), 1, identities=[COOKIE]),
        )
        after = (await application.identify(stores, [COOKIE])).profile
        assert again is first
        assert after is not first
        assert after.session is not None and after.session.page_views == 1
        assert first.session is None

    asyncio.run(body())


def test_get__by_id_and_by_merged_id__the_record_the_orm_reads(store: ProfileStore) -> None:
    anna = store.identify([COOKIE, IdentityKey("crm_id", "42")]).profile
    bob = store.identify([IdentityKey("cookie", "c-bob")]).profile
    merged = store.identify([COOKIE, IdentityKey("cookie", "c-bob")])
    store.update_traits(anna.profile_id, {"tier": "gold"})

    with Session(store.engine) as session:
        row = session.get(ProfileRow, anna.profile_id)
        assert row is not None
        orm = store._record(session, row)
    by_id = store.get(anna.profile_id)
    by_merged_id = store.get(bob.profile_id)

    assert merged.merged_ids == [bob.profile_id]
    assert by_id == orm
    assert by_merged_id == orm
    assert store.get(anna.profile_id) is by_merged_id  # the same rows: decoded once


def test_get__unknown_id__not_found(store: ProfileStore) -> None:
    with pytest.raises(NotFound):
        store.get("nobody")
