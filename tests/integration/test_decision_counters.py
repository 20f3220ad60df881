"""Both counter stores keep one contract: in process and on the real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tessera.decision.domain.pressure import (
    ChargePlan,
    HoldCheck,
    HoldClaim,
    Increment,
    RequestStamp,
    hold_value,
)
from tessera.decision.storage.counters import (
    CounterStore,
    CountersUnavailable,
    MemoryCounterStore,
    RedisCounterStore,
)
from tessera.suite import free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
NOW_S = int(time.time()) + 86_400
"""The scenarios' "now": a day ahead of the clock, because Redis expires a
record at its latest field's expiry by the real clock; a full run may reach
these tests minutes after this module is imported, when a "now + 60" taken
then would already be past and the record gone."""
END = NOW_S + 3600
SPENT = f"p:{END}"
CAP = f"c:promo:{END}"


@pytest.fixture(params=["memory", "redis"])
def store(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str
) -> Iterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounterStore()
    else:
        yield RedisCounterStore(redis_url, f"{key_prefix}counters-{uuid.uuid4().hex[:6]}:")


def run(store: CounterStore, coroutine: Awaitable[T]) -> T:
    async def go() -> T:
        try:
            return await coroutine
        finally:
            await store.close()

    return asyncio.run(go())


def spend(amount: int, limit: int = 10) -> ChargePlan:
    return ChargePlan((Increment(SPENT, amount, limit), Increment(CAP, 1, 0)))


def test_charge__within_limits__counters_raised_and_read_back(store: CounterStore) -> None:
    async def scenario() -> tuple[object, ...]:
        first = await store.charge("ann", spend(3), (), NOW_S, [SPENT, CAP])
        second = await store.charge("ann", spend(4), (), NOW_S, [SPENT, CAP])
        return first, second, await store.read("ann", [SPENT, CAP, "h:none"])

    assert run(store, scenario()) == (
        (True, ["3", "1"]),
        (True, ["7", "2"]),
        ["7", "2", None],
    )


def test_charge__limit_would_be_exceeded__nothing_charged_values_returned(
    store: CounterStore,
) -> None:
    async def scenario() -> tuple[object, ...]:
        await store.charge("bob", spend(8), (), NOW_S, [])
        refused = await store.charge("bob", spend(3), (), NOW_S, [SPENT, CAP])
        return refused, await store.read("bob", [SPENT, CAP])

    assert run(store, scenario()) == ((False, ["8", "1"]), ["8", "1"])


def test_charge__concurrent_decisions__never_over_the_limit(store: CounterStore) -> None:
    async def scenario() -> tuple[int, list[str | None]]:
        results = await asyncio.gather(
            *(store.charge("cy", spend(1, limit=5), (), NOW_S, []) for _ in range(20))
        )
        return sum(applied for applied, _ in results), await store.read("cy", [SPENT])

    assert run(store, scenario()) == (5, ["5"])


def test_charge__hold_claimed_once__second_claim_for_free_group_refused(
    store: CounterStore,
) -> None:
    mine = hold_value("mine", NOW_S + 60)
    theirs = hold_value("theirs", NOW_S + 60)

    async def scenario() -> tuple[object, ...]:
        first = await store.charge(
            "dee", ChargePlan(holds=(HoldClaim("h:g", mine, ""),)), (), NOW_S, ["h:g"]
        )
        second = await store.charge(
            "dee", ChargePlan(holds=(HoldClaim("h:g", theirs, ""),)), (), NOW_S, ["h:g"]
        )
        return first, second

    assert run(store, scenario()) == ((True, [mine]), (False, [mine]))


def test_charge__merged_people__folded_into_survivor_once(store: CounterStore) -> None:
    held = hold_value("theirs", NOW_S + 60)

    async def scenario() -> tuple[object, ...]:
        await store.charge("web-cookie", spend(3), (), NOW_S, [])
        await store.charge(
            "email",
            ChargePlan((Increment(SPENT, 2, 10),), (HoldClaim("h:g", held, ""),)),
            (),
            NOW_S,
            [],
        )
        folded = await store.charge("email", ChargePlan(), ["web-cookie"], NOW_S, [SPENT, CAP])
        again = await store.charge("email", ChargePlan(), ["web-cookie"], NOW_S, [SPENT, CAP])
        return (
            folded,
            again,
            await store.read("email", [SPENT, CAP, "h:g"]),
            await store.read("web-cookie", [SPENT]),
        )

    assert run(store, scenario()) == (
        (True, ["5", "1"]),
        (True, ["5", "1"]),
        ["5", "1", held],
        [None],
    )


def test_charge__ended_window__not_counted_and_dropped(store: CounterStore) -> None:
    ended = f"p:{NOW_S}"

    async def scenario() -> tuple[bool, list[str | None]]:
        await store.charge("eve", ChargePlan((Increment(ended, 9, 10),)), (), NOW_S - 10, [])
        return await store.charge("eve", spend(9), (), NOW_S, [ended, SPENT])

    assert run(store, scenario()) == (True, [None, "9"])


def test_redis_charge__record_expires_with_its_latest_field(
    redis_url: str, key_prefix: str
) -> None:
    prefix = f"{key_prefix}counters-{uuid.uuid4().hex[:6]}:"
    store = RedisCounterStore(redis_url, prefix)
    hold_until = NOW_S + 7200
    plan = ChargePlan(
        (Increment(SPENT, 1, 10),), (HoldClaim("h:g", hold_value("c", hold_until), ""),)
    )

    run(store, store.charge("fay", plan, (), NOW_S, []))

    client = redis.Redis.from_url(redis_url)
    try:
        expires_at = client.expiretime(f"{prefix}fay")
    finally:
        client.close()
    assert expires_at == hold_until


def test_redis__server_away__counters_unavailable_not_a_connection_error() -> None:
    store = RedisCounterStore(f"redis://127.0.0.1:{free_port()}/0", "nowhere:")

    async def scenario() -> list[str]:
        failures = []
        for attempt in (
            store.read("gus", [SPENT]),
            store.charge("gus", spend(1), (), NOW_S, []),
            store.forget(["gus"]),
        ):
            try:
                await attempt
            except CountersUnavailable:
                failures.append("unavailable")
        return failures

    assert run(store, scenario()) == ["unavailable"] * 3


def test_charge__hold_relied_on_changed__refused_then_accepted_with_the_truth(
    store: CounterStore,
) -> None:
    theirs = hold_value("theirs", NOW_S + 60)

    async def scenario() -> tuple[object, ...]:
        await store.charge("hal", ChargePlan(holds=(HoldClaim("h:g", theirs, ""),)), (), NOW_S, [])
        stale = ChargePlan((Increment(SPENT, 1, 10),), checks=(HoldCheck("h:g", ""),))
        fresh = ChargePlan((Increment(SPENT, 1, 10),), checks=(HoldCheck("h:g", theirs),))
        return (
            await store.charge("hal", stale, (), NOW_S, ["h:g", SPENT]),
            await store.charge("hal", fresh, (), NOW_S, ["h:g", SPENT]),
        )

    assert run(store, scenario()) == ((False, [theirs, None]), (True, [theirs, "1"]))


def test_charge__survivor_hold_ended__merged_persons_live_hold_taken_over(
    store: CounterStore,
) -> None:
    # The survivor held the group until NOW_S + 10; the merged person holds it
    # for an hour. Folded at NOW_S + 20, the survivor's hold no longer counts,
    # so the merged person's hold is the person's hold (docs/decide.md).
    ended = hold_value("old", NOW_S + 10)
    live = hold_value("theirs", NOW_S + 3600)

    async def scenario() -> tuple[object, ...]:
        await store.charge(
            "ivy",
            ChargePlan((Increment(SPENT, 1, 10),), (HoldClaim("h:g", ended, ""),)),
            (),
            NOW_S,
            [],
        )
        await store.charge("jo", ChargePlan(holds=(HoldClaim("h:g", live, ""),)), (), NOW_S, [])
        folded = await store.charge("ivy", ChargePlan(), ["jo"], NOW_S + 20, ["h:g", SPENT])
        return folded, await store.read("ivy", ["h:g"])

    assert run(store, scenario()) == ((True, [live, "1"]), [live])


def stamped(request_id: str, amount: int = 2, window_s: int = 600) -> ChargePlan:
    return ChargePlan(
        (Increment(SPENT, amount, 10), Increment(CAP, 1, 1)),
        request=RequestStamp(f"r:{request_id}", NOW_S + window_s),
    )


def test_charge__twice_with_one_request_id__counted_once(store: CounterStore) -> None:
    async def scenario() -> tuple[object, ...]:
        first = await store.charge("kim", stamped("r1"), (), NOW_S, [SPENT, CAP])
        retry = await store.charge("kim", stamped("r1"), (), NOW_S + 5, [SPENT, CAP])
        return first, retry, await store.read("kim", [SPENT, CAP, "r:r1"])

    assert run(store, scenario()) == (
        (True, ["2", "1"]),
        (True, ["2", "1"]),  # a cap of 1 filled by the first try lets its retry through
        ["2", "1", f"{NOW_S + 600}|{SPENT}|2|{CAP}|1"],
    )


def test_charge__another_request_id__counted_again(store: CounterStore) -> None:
    async def scenario() -> tuple[object, ...]:
        await store.charge("lea", stamped("r1"), (), NOW_S, [])
        capped = await store.charge("lea", stamped("r2"), (), NOW_S, [SPENT, CAP])
        uncapped = ChargePlan((Increment(SPENT, 2, 10),), request=RequestStamp("r:r3", NOW_S + 60))
        spent = await store.charge("lea", uncapped, (), NOW_S, [SPENT, CAP])
        return capped, spent

    assert run(store, scenario()) == ((False, ["2", "1"]), (True, ["4", "1"]))


def test_charge__retry_window_over__request_forgotten_and_counted_again(
    store: CounterStore,
) -> None:
    plan = ChargePlan((Increment(SPENT, 2, 10),), request=RequestStamp("r:r1", NOW_S + 60))

    async def scenario() -> tuple[object, ...]:
        await store.charge("max", plan, (), NOW_S, [])
        within = await store.charge("max", plan, (), NOW_S + 59, [SPENT, "r:r1"])
        after = await store.charge("max", plan, (), NOW_S + 60, [SPENT])
        return within, after

    assert run(store, scenario()) == (
        (True, ["2", f"{NOW_S + 60}|{SPENT}|2"]),
        (True, ["4"]),
    )


def test_charge__merged_person_had_the_request__retry_on_survivor_counted_once(
    store: CounterStore,
) -> None:
    async def scenario() -> tuple[bool, list[str | None]]:
        await store.charge("web-cookie-2", stamped("r1"), (), NOW_S, [])
        return await store.charge("email-2", stamped("r1"), ["web-cookie-2"], NOW_S, [SPENT, CAP])

    assert run(store, scenario()) == (True, ["2", "1"])


BASE = int(time.time()) + 10_000
"""Ahead of the wall clock, so neither store expires a record by the real time mid-test."""
PEOPLE = ("ann", "bob", "cy")
COUNTER_FIELDS = (f"p:{BASE + 100}", f"p:{BASE + 200}", f"c:x:{BASE + 150}")
HOLD_FIELDS = ("h:g", "h:k")
REQUEST_FIELDS = ("r:a", "r:b")
HOLD_VALUES = tuple(f"{key}@{BASE + until}" for key in ("x", "y") for until in (60, 250, 400))
EVERY_FIELD = [*COUNTER_FIELDS, *HOLD_FIELDS, *REQUEST_FIELDS]

increments = st.builds(
    Increment,
    st.sampled_from(COUNTER_FIELDS),
    st.integers(1, 5),
    st.integers(0, 10),
)
claims = st.builds(
    HoldClaim,
    st.sampled_from(HOLD_FIELDS),
    st.sampled_from(HOLD_VALUES),
    st.sampled_from(("", *HOLD_VALUES)),
)
checks = st.builds(HoldCheck, st.sampled_from(HOLD_FIELDS), st.sampled_from(("", *HOLD_VALUES)))
stamps = st.none() | st.builds(
    RequestStamp, st.sampled_from(REQUEST_FIELDS), st.integers(BASE + 10, BASE + 3000)
)
plans = st.builds(
    ChargePlan,
    st.lists(increments, max_size=3, unique_by=lambda i: i.field).map(tuple),
    st.lists(claims, max_size=2, unique_by=lambda c: c.field).map(tuple),
    st.lists(checks, max_size=1).map(tuple),
    stamps,
)
retries = st.builds(
    ChargePlan,
    st.lists(increments, max_size=3, unique_by=lambda i: i.field).map(tuple),
    request=st.builds(
        RequestStamp, st.sampled_from(REQUEST_FIELDS), st.integers(BASE + 10, BASE + 3000)
    ),
)
"""Plans without holds, each with a request id: mostly applied, so retries meet their record."""
STAMP = RequestStamp(REQUEST_FIELDS[0], BASE + 200)
LATER = RequestStamp(REQUEST_FIELDS[0], BASE + 205)
"""The same request retried: a later until, which must not move the first try's."""
OTHER = RequestStamp(REQUEST_FIELDS[1], BASE + 200)
steps = st.lists(
    st.tuples(
        st.sampled_from(PEOPLE),
        plans | retries,
        st.lists(st.sampled_from(PEOPLE), max_size=2, unique=True),
        st.integers(0, 60),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
@example(
    [  # the survivor's hold has ended when the merged person's live one is folded in
        ("ann", ChargePlan(holds=(HoldClaim("h:g", HOLD_VALUES[0], ""),)), [], 0),
        ("bob", ChargePlan(holds=(HoldClaim("h:g", HOLD_VALUES[5], ""),)), [], 0),
        ("ann", ChargePlan(), ["bob"], 20),
    ]
)
@example(
    [  # a retry of a request takes its first charge back, another request is refused
        ("ann", ChargePlan((Increment(COUNTER_FIELDS[2], 1, 1),), (), (), STAMP), [], 0),
        ("ann", ChargePlan((Increment(COUNTER_FIELDS[2], 1, 1),), (), (), LATER), [], 1),
        ("ann", ChargePlan((Increment(COUNTER_FIELDS[0], 2, 0),), (), (), STAMP), [], 1),
        ("bob", ChargePlan((Increment(COUNTER_FIELDS[2], 1, 1),), (), (), OTHER), [], 0),
        ("bob", ChargePlan(), ["ann"], 1),
    ]
)
def test_charge__any_plans_merges_and_times__memory_store_answers_as_the_lua_script(
    redis_url: str, key_prefix: str, ops: list[tuple[str, ChargePlan, list[str], int]]
) -> None:
    # The same charges, folds and clock on both stores: every answer and the
    # records left must agree (the in-process store is the embedded default,
    # the Lua script production's).
    memory = MemoryCounterStore()
    lua = RedisCounterStore(redis_url, f"{key_prefix}equal-{uuid.uuid4().hex[:8]}:")

    async def play(store: CounterStore) -> list[object]:
        seen: list[object] = []
        now = BASE
        for person, plan, merged, wait in ops:
            now += wait * 5
            seen.append(await store.charge(person, plan, merged, now, EVERY_FIELD))
        for person in PEOPLE:
            seen.append(await store.read(person, EVERY_FIELD))
        return seen

    assert run(memory, play(memory)) == run(lua, play(lua))
