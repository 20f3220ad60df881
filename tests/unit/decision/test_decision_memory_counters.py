"""The in-process counter store lets go of people whose counters have all ended."""

from __future__ import annotations

import asyncio

from tessera.decision.domain.pressure import ChargePlan, Increment
from tessera.decision.storage.counters import SWEEP_EVERY, MemoryCounterStore

NOW_S = 1_800_000_000
SPENT = f"p:{NOW_S + 3600}"


def test_memory_store__expired_records__swept_after_enough_charges() -> None:
    now = [float(NOW_S)]
    store = MemoryCounterStore(clock=lambda: now[0])
    short = f"p:{NOW_S + 10}"

    async def scenario() -> tuple[int, int]:
        for index in range(SWEEP_EVERY - 1):
            await store.charge(
                f"gone-{index}", ChargePlan((Increment(short, 1, 0),)), (), NOW_S, []
            )
        held = len(store)
        now[0] = NOW_S + 11  # every window has ended
        await store.charge("late", ChargePlan((Increment(SPENT, 1, 0),)), (), NOW_S + 11, [])
        return held, len(store)

    assert asyncio.run(scenario()) == (SWEEP_EVERY - 1, 1)
