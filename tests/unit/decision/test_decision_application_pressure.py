"""Decide with the pressure gate: counters read beside Identify, charged after the choice.

The product's campaign cache on SQLite, its in-process counter store, a
clock the test moves; the profile service and evaluator are stand-ins.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from decision_fakes import FakeEvaluator, FakeProfiles, campaign, run_with_catalog
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from tessera.catalog import Catalog
from tessera.common.v1 import common_pb2
from tessera.decision.application.campaigns import normalised
from tessera.decision.application.decide import DecideQuery, Decider
from tessera.decision.application.pressure import PressureGate
from tessera.decision.domain.campaigns import CampaignDef
from tessera.decision.domain.pressure import (
    ChargePlan,
    Increment,
    PressureRules,
    RequestStamp,
    pressure_field,
    window_end,
)
from tessera.decision.storage.counters import CountersUnavailable, MemoryCounterStore
from tessera.decision.transport.convert import campaign_from_proto
from tessera.decision.v1 import decision_pb2
from tessera.definitions import DefinitionCache
from tessera.profiles.v1 import profiles_pb2

Catalogue = Catalog[decision_pb2.Campaign]
START = dt.datetime(2026, 12, 24, 12, 0, tzinfo=dt.UTC)
RUNNING = decision_pb2.CAMPAIGN_STATUS_RUNNING
T = TypeVar("T")


class Clock:
    """The time Decide and the counter store see; moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()


class CountingStore(MemoryCounterStore):
    """The in-process store, recording who was read and refusing charges on request."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock.seconds)
        self.reads: list[str] = []
        self.refuse_next: Callable[[], None] | None = None
        self.down = False
        self.always_refuse = False
        self.charges = 0
        self.preset: tuple[str, str] | None = None
        """(person, campaign): one decision of the campaign charged before the first Decide."""

    async def read(self, person: str, fields: Sequence[str]) -> list[str | None]:
        self.reads.append(person)
        if self.down:
            raise CountersUnavailable("connection refused")
        return await super().read(person, fields)

    async def charge(
        self,
        person: str,
        plan: ChargePlan,
        merged: Sequence[str],
        now_s: int,
        fields: Sequence[str],
    ) -> tuple[bool, list[str | None]]:
        self.charges += 1
        if self.always_refuse:
            return False, [None] * len(fields)
        if self.down:
            raise CountersUnavailable("connection refused")
        if self.preset is not None:
            (person_seen, key), self.preset = self.preset, None
            cap = f"c:{key}:{window_end(now_s, 60)}"
            await super().charge(person_seen, ChargePlan((Increment(cap, 1, 0),)), (), now_s, [])
        if self.refuse_next is not None:
            # Another Decide of the person lands first, between read and charge.
            concurrent, self.refuse_next = self.refuse_next, None
            await super().charge(person, plan, (), now_s, [])
            concurrent()
        return await super().charge(person, plan, merged, now_s, fields)


def query(value: str = "c1", explain: bool = False, request_id: str = "") -> DecideQuery:
    return DecideQuery(
        identities=[common_pb2.Identity(type="cookie", value=value)],
        channel=common_pb2.CHANNEL_WEB,
        placements=["home"],
        context=struct_pb2.Struct(),
        explain=explain,
        request_id=request_id,
    )


def running(key: str, **fields: object) -> decision_pb2.Campaign:
    return normalised(campaign(key, status=RUNNING, **fields))


def at(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def decide_many(
    tmp_path: Path,
    stored: list[decision_pb2.Campaign],
    steps: list[tuple[dt.timedelta, DecideQuery]],
    rules: PressureRules,
    store_hook: Callable[[CountingStore], None] | None = None,
    profiles: FakeProfiles | None = None,
) -> tuple[list[str], CountingStore]:
    """Run Decides at START + each offset; the campaign shown by each."""
    clock = Clock()
    store = CountingStore(clock)
    if store_hook is not None:
        store_hook(store)
    caches: list[DefinitionCache[CampaignDef]] = []
    variants = {f"campaign-{m.key}": "treatment" for m in stored}

    async def scenario(catalog: Catalogue) -> list[str]:
        for message in stored:
            await catalog.create(message)
        decider = Decider(
            caches[0],
            FakeEvaluator([], variants),
            (profiles or FakeProfiles(0.3)).stub(),
            0.5,
            now=clock,
            pressure=PressureGate(store, rules),
        )
        shown = []
        for offset, asked in steps:
            clock.now = START + offset
            (choice,) = (await decider.decide(asked)).choices
            shown.append(choice.campaign.key if choice.campaign else "")
        return shown

    shown = run_with_catalog(
        tmp_path, scenario, before_open=lambda c: caches.append(c.cache(campaign_from_proto))
    )
    return shown, store


def test_decide__conflict_hold__kept_for_the_hold_window_then_the_best_member_takes_it(
    tmp_path: Path,
) -> None:
    later = START + dt.timedelta(seconds=10)
    stored = [
        running("low", priority=1, conflict_group="promo"),
        running(
            "high",
            priority=9,
            conflict_group="promo",
            schedule=decision_pb2.Schedule(start_time=at(later)),
        ),
    ]
    steps = [(dt.timedelta(seconds=s), query()) for s in (0, 20, 59, 61)]

    shown, _ = decide_many(tmp_path, stored, steps, PressureRules(hold_s=60))

    assert shown == ["low", "low", "low", "high"]


def test_decide__identities_seen_before__counters_read_under_the_guess_only(
    tmp_path: Path,
) -> None:
    stored = [running("capped", frequency_cap={"max_decisions": 5, "period": {"seconds": 60}})]
    steps = [(dt.timedelta(0), query("c1")), (dt.timedelta(seconds=1), query("c1"))]

    shown, store = decide_many(tmp_path, stored, steps, PressureRules())

    # First sight: nothing read (chosen on empty counters, the charge checks).
    # Then: read with the guess, beside Identify, once.
    assert shown == ["capped", "capped"]
    assert store.reads == ["p-c1"]
    assert store.charges == 2


def test_decide__first_sight_on_this_replica_but_capped_elsewhere__charge_refused_next_campaign(
    tmp_path: Path,
) -> None:
    stored = [
        running(
            "capped", priority=9, frequency_cap={"max_decisions": 1, "period": {"seconds": 60}}
        ),
        running("fallback", priority=1),
    ]

    def capped_on_another_replica(store: CountingStore) -> None:
        store.preset = ("p-c1", "capped")

    shown, store = decide_many(
        tmp_path,
        stored,
        [(dt.timedelta(0), query())],
        PressureRules(),
        store_hook=capped_on_another_replica,
    )

    assert shown == ["fallback"]
    assert (store.reads, store.charges) == ([], 1)  # refused; the fallback costs nothing


def test_decide__nothing_counted__store_never_read(tmp_path: Path) -> None:
    steps = [(dt.timedelta(0), query("c1"))]

    shown, store = decide_many(tmp_path, [running("plain")], steps, PressureRules(budget=10))

    assert (shown, store.reads) == (["plain"], [])


def test_decide__concurrent_decide_filled_the_cap__chosen_again_with_the_next_campaign(
    tmp_path: Path,
) -> None:
    stored = [
        running(
            "capped", priority=9, frequency_cap={"max_decisions": 1, "period": {"seconds": 60}}
        ),
        running("fallback", priority=1),
    ]
    refused: list[bool] = []

    def hook(store: CountingStore) -> None:
        store.refuse_next = lambda: refused.append(True)

    def refusals() -> float:
        labels = {"operation": "charge", "result": "refused"}
        return REGISTRY.get_sample_value("tessera_pressure_store_calls_total", labels) or 0.0

    before = refusals()
    shown, _ = decide_many(
        tmp_path, stored, [(dt.timedelta(0), query())], PressureRules(), store_hook=hook
    )

    assert refused == [True]
    assert shown == ["fallback"]
    assert refusals() - before == 1


def test_decide__counter_store_down__counted_campaigns_left_out_the_others_shown(
    tmp_path: Path,
) -> None:
    stored = [
        running(
            "capped", priority=9, frequency_cap={"max_decisions": 3, "period": {"seconds": 60}}
        ),
        running("grouped", priority=5, conflict_group="promo"),
        running("plain", priority=1),
    ]

    def down(store: CountingStore) -> None:
        store.down = True

    steps = [(dt.timedelta(0), query()), (dt.timedelta(seconds=1), query())]

    shown, store = decide_many(tmp_path, stored, steps, PressureRules(), store_hook=down)

    # First sight: the charge fails; then the read beside Identify fails.
    assert shown == ["plain", "plain"]
    assert (store.reads, store.charges) == (["p-c1"], 1)


def test_decide__charge_refused_every_time__counted_campaigns_left_out_after_three(
    tmp_path: Path,
) -> None:
    stored = [
        running(
            "capped", priority=9, frequency_cap={"max_decisions": 3, "period": {"seconds": 60}}
        ),
        running("plain", priority=1),
    ]

    def racing(store: CountingStore) -> None:
        store.always_refuse = True

    shown, store = decide_many(
        tmp_path, stored, [(dt.timedelta(0), query())], PressureRules(), store_hook=racing
    )

    assert shown == ["plain"]
    assert store.charges == 3


class LoginMerges(FakeProfiles):
    """Identify as the profile service answers it: a call naming both the
    cookie and the e-mail merges their profiles into `survivor`, and the
    merged id resolves to the survivor from then on."""

    def __init__(self, survivor: str) -> None:
        super().__init__(0.3)
        self.survivor = survivor
        self.aliases: dict[str, str] = {}

    async def Identify(
        self, request: profiles_pb2.IdentifyRequest, timeout: float
    ) -> profiles_pb2.IdentifyResponse:
        answer = await super().Identify(request, timeout)
        ids = sorted({self.aliases.get(f"p-{i.value}", f"p-{i.value}") for i in request.identities})
        if len(ids) > 1:
            answer.merged_profile_ids.extend(i for i in ids if i != self.survivor)
            self.aliases.update((i, self.survivor) for i in ids if i != self.survivor)
        answer.profile.profile_id = self.aliases.get(ids[0], ids[0])
        return answer


def login(*values: str) -> DecideQuery:
    return DecideQuery(
        identities=[common_pb2.Identity(type="cookie", value=v) for v in values],
        channel=common_pb2.CHANNEL_APP,
        placements=["home"],
        context=struct_pb2.Struct(),
    )


@pytest.mark.parametrize("survivor", ["p-web", "p-mail"])
def test_decide__login_merge_either_profile_survives__one_budget_for_the_person(
    tmp_path: Path, survivor: str
) -> None:
    # 3 spent by cookie on the web, 6 by e-mail: 9 of 10 once merged. The
    # login Decide's guess (the cookie's profile) is the survivor for
    # "p-web" (counters read there, the e-mail's folded at charge) and not
    # for "p-mail" (chosen on empty counters): either way the charge folds,
    # refuses "omni" (9 + 3 over 10) and the free campaign is shown, on
    # the web afterwards too.
    stored = [running("omni", priority=5, pressure_cost=3), running("plain", priority=1)]
    steps = [
        (dt.timedelta(0), query("web")),
        (dt.timedelta(seconds=1), query("mail")),
        (dt.timedelta(seconds=2), query("mail")),
        (dt.timedelta(seconds=3), login("web", "mail")),
        (dt.timedelta(seconds=4), query("web")),
    ]

    shown, store = decide_many(
        tmp_path, stored, steps, PressureRules(budget=10), profiles=LoginMerges(survivor)
    )

    spent = pressure_field(int(START.timestamp()), 86_400)
    merged = "p-mail" if survivor == "p-web" else "p-web"
    assert shown == ["omni", "omni", "omni", "plain", "plain"]
    assert [(await_(store.read(p, [spent])))[0] for p in (survivor, merged)] == ["9", None]


def await_(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def on(channel: common_pb2.Channel.ValueType) -> DecideQuery:
    return DecideQuery(
        identities=[common_pb2.Identity(type="cookie", value="c1")],
        channel=channel,
        placements=["home"],
        context=struct_pb2.Struct(),
    )


def test_decide__group_held_by_a_web_only_campaign__email_member_skipped_no_flicker(
    tmp_path: Path,
) -> None:
    # One offer per person: the web's "web-deal" holds the group, so the
    # e-mail's "mail-deal" of the same group is not sent to that person, and
    # the web keeps "web-deal". Freed by the channel, the two claimed the
    # group in turn on every call and the person got both offers.
    web, mail = common_pb2.CHANNEL_WEB, common_pb2.CHANNEL_EMAIL
    stored = [
        running("web-deal", conflict_group="promo", channels=[web]),
        running("mail-deal", conflict_group="promo", channels=[mail]),
        running("newsletter", priority=-1, channels=[mail]),
    ]
    steps = [(dt.timedelta(seconds=s), on(c)) for s, c in enumerate((web, mail, web, mail))]

    shown, _ = decide_many(tmp_path, stored, steps, PressureRules())

    assert shown == ["web-deal", "newsletter", "web-deal", "newsletter"]


def test_decide__stored_before_caps_with_period_but_no_max__no_cap_still_shown(
    tmp_path: Path,
) -> None:
    # The previous release stored a cap of a period and max_decisions 0 (the
    # proto's "0 for no cap"); read as a cap of 0 it was never shown again.
    legacy = normalised(campaign("legacy", status=RUNNING))
    legacy.frequency_cap.period.FromSeconds(3600)
    steps = [(dt.timedelta(0), query()), (dt.timedelta(seconds=1), query())]

    shown, _ = decide_many(tmp_path, [legacy], steps, PressureRules())

    assert shown == ["legacy", "legacy"]
    assert campaign_from_proto(legacy).frequency_cap is None


def test_decide__retried_with_the_same_request_id__same_campaign_cap_counted_once(
    tmp_path: Path,
) -> None:
    stored = [
        running(
            "capped", priority=9, frequency_cap={"max_decisions": 1, "period": {"seconds": 60}}
        ),
        running("fallback", priority=1),
    ]
    steps = [
        (dt.timedelta(0), query(request_id="r1")),
        (dt.timedelta(seconds=1), query(request_id="r1")),
        (dt.timedelta(seconds=2), query(request_id="r2")),
    ]

    shown, store = decide_many(tmp_path, stored, steps, PressureRules())

    assert shown == ["capped", "capped", "fallback"]
    assert store.charges == 2  # the retry replaced its first charge; r2 charged nothing


def test_decide__retry_on_a_replica_that_never_saw_the_person__same_campaign(
    tmp_path: Path,
) -> None:
    # No guess, so nothing is read beside Identify: the charge itself takes
    # the first try's charge back and is accepted.
    stored = [
        running(
            "capped", priority=9, frequency_cap={"max_decisions": 1, "period": {"seconds": 60}}
        ),
        running("fallback", priority=1),
    ]

    def first_try_elsewhere(store: CountingStore) -> None:
        now_s = int(START.timestamp())
        cap = f"c:capped:{window_end(now_s, 60)}"
        plan = ChargePlan((Increment(cap, 1, 1),), request=RequestStamp("r:r1", now_s + 600))
        asyncio.run(MemoryCounterStore.charge(store, "p-c1", plan, (), now_s, []))

    shown, store = decide_many(
        tmp_path,
        stored,
        [(dt.timedelta(0), query(request_id="r1")), (dt.timedelta(0), query(request_id="r2"))],
        PressureRules(),
        store_hook=first_try_elsewhere,
    )

    assert shown == ["capped", "fallback"]
    assert store.reads == ["p-c1"]  # the second Decide read under the guess
