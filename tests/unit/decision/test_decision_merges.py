"""Merges and erasures from the change feed reach the pressure counters."""

from __future__ import annotations

import asyncio

from tessera.decision.application.merges import MergeFollower
from tessera.decision.domain.pressure import ChargePlan, Increment
from tessera.decision.storage.counters import MemoryCounterStore
from tessera.profiles.v1 import profiles_pb2

NOW_S = 1_800_000_000
SPENT = f"p:{NOW_S + 3600}"


def merge(survivor: str, merged: str, sequence: int) -> profiles_pb2.StreamEventsResponse:
    return profiles_pb2.StreamEventsResponse(
        sequence=sequence,
        merge=profiles_pb2.ProfileMerge(survivor_profile_id=survivor, merged_profile_id=merged),
    )


def test_handle__merge_delivered_twice__counters_folded_once() -> None:
    store = MemoryCounterStore(clock=lambda: NOW_S)
    follower = MergeFollower(store, None, lambda after: None, clock=lambda: NOW_S)  # type: ignore[arg-type]

    async def scenario() -> list[str | None]:
        for person, spent in (("survivor", 3), ("alias", 4)):
            plan = ChargePlan((Increment(SPENT, spent, 0),))
            await store.charge(person, plan, (), NOW_S, [])
        await follower.handle([merge("survivor", "alias", 7)])
        await follower.handle([merge("survivor", "alias", 7)])  # at least once: again
        return [*await store.read("survivor", [SPENT]), *await store.read("alias", [SPENT])]

    assert asyncio.run(scenario()) == ["7", None]


def test_handle__deletion__person_and_aliases_forgotten() -> None:
    store = MemoryCounterStore(clock=lambda: NOW_S)
    follower = MergeFollower(store, None, lambda after: None, clock=lambda: NOW_S)  # type: ignore[arg-type]
    erased = profiles_pb2.StreamEventsResponse(
        sequence=9,
        deletion=profiles_pb2.ProfileDeletion(profile_id="gone", merged_profile_ids=["old"]),
    )

    async def scenario() -> list[str | None]:
        for person in ("gone", "old", "kept"):
            await store.charge(person, ChargePlan((Increment(SPENT, 1, 0),)), (), NOW_S, [])
        await follower.handle([erased])
        return [(await store.read(p, [SPENT]))[0] for p in ("gone", "old", "kept")]

    assert asyncio.run(scenario()) == [None, None, "1"]
