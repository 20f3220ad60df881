"""A Decide's counters: read beside the profile call, charged once the choice is made.

The counters are keyed by the canonical profile id, which only Identify
knows. To read them while Identify runs, each replica remembers which
profile id the identities of earlier Decides resolved to (a bounded,
least recently used map) and reads with that guess. Without a guess (first
sight on this replica) or when Identify answers another id (a merge), the
choice is made on empty counters instead of reading after Identify.

Charging is one atomic step of the store (fold of merged ids, every limit
checked, every hold the choice relied on checked, counters raised, groups
claimed). When the counters the choice was made on were not the truth (a
concurrent Decide of the same person got there first, or the choice was
made on empty counters), the step is refused and the placement is chosen
again with the counters the store sent back: a wrong guess costs a round
trip, never a wrong decision.

A Decide with a request id is charged once however often it is retried:
the store remembers what the request charged (in the same atomic step),
the retry's read takes that charge out of the counters it chooses on (the
same answer, a cap filled by the first try included), and its charge
replaces the first one instead of adding to it (docs/decide.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from tessera import metrics
from tessera.common.v1 import common_pb2
from tessera.decision.domain.campaigns import CampaignDef, Choice, shown
from tessera.decision.domain.pressure import (
    Counters,
    CounterSpec,
    PressureRules,
    charge_plan,
    counter_spec,
    counters_from,
)
from tessera.decision.storage.counters import CounterStore, CountersUnavailable

log = logging.getLogger("tessera.decision")

IDENTITY_CACHE_SIZE = 100_000
"""Identities remembered per replica to guess the profile id before Identify answers."""
CHARGE_ATTEMPTS = 3
"""How often a decision is charged, chosen again after each refusal, before the
counted campaigns are left out of it (concurrent Decides of one person racing)."""


class ProfileGuess:
    """Identity to the canonical profile id it last resolved to, least recently used out."""

    def __init__(self, size: int = IDENTITY_CACHE_SIZE) -> None:
        self.size = size
        self._ids: OrderedDict[tuple[str, str], str] = OrderedDict()

    def guess(self, identities: Iterable[common_pb2.Identity]) -> str | None:
        """The profile id one of `identities` resolved to last time, if remembered."""
        for identity in identities:
            found = self._ids.get((identity.type, identity.value))
            if found is not None:
                self._ids.move_to_end((identity.type, identity.value))
                return found
        return None

    def learn(self, identities: Iterable[common_pb2.Identity], profile_id: str) -> None:
        """Remember that `identities` resolve to `profile_id`."""
        for identity in identities:
            key = (identity.type, identity.value)
            self._ids[key] = profile_id
            self._ids.move_to_end(key)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


class PressureGate:
    """Reads and charges a person's pressure, caps and conflict-group holds."""

    def __init__(
        self,
        store: CounterStore,
        rules: PressureRules,
        guesses: ProfileGuess | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.guesses = guesses or ProfileGuess()

    def spec(
        self, campaigns: Iterable[CampaignDef], now_s: int, request_id: str = ""
    ) -> CounterSpec:
        """The fields a Decide over these possible campaigns (and its request id) reads."""
        return counter_spec(campaigns, self.rules, now_s, request_id)

    async def read(self, person: str, spec: CounterSpec, now_s: int, timeout: float) -> Counters:
        """The person's counters named by `spec` (none when it names nothing).

        Within `timeout` (the Decide's deadline); a store that is away or late
        gives `Counters(unavailable=True)`: the campaigns that need counters
        are not shown, the others are (docs/decide.md).
        """
        if spec.empty or not person:
            return Counters()
        try:
            values = await asyncio.wait_for(self.store.read(person, spec.fields), timeout)
        except (CountersUnavailable, TimeoutError):
            metrics.PRESSURE_STORE_CALLS.labels("read", "unavailable").inc()
            log.warning("pressure counters unavailable; counted campaigns left out", exc_info=True)
            return Counters(unavailable=True)
        metrics.PRESSURE_STORE_CALLS.labels("read", "ok").inc()
        return counters_from(spec, values, now_s)

    async def charge(
        self,
        person: str,
        merged: Sequence[str],
        spec: CounterSpec,
        counters: Counters,
        choices: list[Choice],
        rechoose: Callable[[Counters], list[Choice]],
        now_s: int,
        timeout: float,
        request_id: str = "",
    ) -> list[Choice]:
        """Charge the campaigns shown, folding `merged` ids in first; the choices kept.

        Every campaign shown is charged, treatment and control alike
        (docs/decide.md). When the store refuses (a concurrent Decide of the
        person spent the budget, filled the cap or took the group), the
        choice is made again with the counters it sent back. A store that is
        away or late (beyond `timeout`) gets the choice made again without the
        campaigns that need counters, uncharged; the fold is left to the
        change feed's merge record. With a `request_id` the charge replaces
        what an earlier try of the same request charged.
        """
        if counters.unavailable:
            return choices  # nothing counted was chosen
        fields = spec.fields
        for _ in range(CHARGE_ATTEMPTS):
            plan = charge_plan(shown(choices), counters, self.rules, now_s, request_id)
            if plan.empty and not merged and not counters.recorded:
                return choices  # nothing to charge, nor an earlier try's charge to take back
            try:
                applied, values = await asyncio.wait_for(
                    self.store.charge(person, plan, merged, now_s, fields), timeout
                )
            except (CountersUnavailable, TimeoutError):
                metrics.PRESSURE_STORE_CALLS.labels("charge", "unavailable").inc()
                log.warning(
                    "pressure counters unavailable; counted campaigns left out", exc_info=True
                )
                return rechoose(Counters(unavailable=True))
            merged = ()  # folded, once
            metrics.PRESSURE_STORE_CALLS.labels("charge", "ok" if applied else "refused").inc()
            if applied:
                return choices
            counters = counters_from(spec, values, now_s)
            choices = rechoose(counters)
        # Still refused: shown uncharged, the counted campaigns could go over
        # their cap or the budget, so they are left out this once.
        log.warning("counters kept changing under one person's Decide", extra={"person": person})
        return rechoose(Counters(unavailable=True))
