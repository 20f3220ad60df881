"""Pressure budgets, frequency caps, conflict-group holds, probability ranges, explain.

The rules alone (tessera.decision.domain): counters given as values, no store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from test_decision_campaigns import make

from tessera.decision.domain.campaigns import (
    CampaignDef,
    CampaignStatus,
    candidates,
    choose,
    holding,
    possible,
    static_skips,
)
from tessera.decision.domain.pressure import (
    ChargePlan,
    Counters,
    FrequencyCap,
    HoldCheck,
    HoldClaim,
    Increment,
    PressureRules,
    ProbabilityRange,
    RequestStamp,
    apply_plan,
    charge_plan,
    counter_spec,
    counters_from,
    fold_into,
    hold_value,
    request_value,
    window_end,
)

NOW = dt.datetime(2026, 12, 24, 12, 0, tzinfo=dt.UTC)
NOW_S = int(NOW.timestamp())
DAY = 86_400
WEB = 1
EVERYONE: frozenset[str] = frozenset()


def treatment_for(*campaigns: CampaignDef) -> dict[str, str]:
    return {c.experiment_key: "treatment" for c in campaigns}


def pick(
    ranked: list[CampaignDef],
    placements: tuple[str, ...] = ("home",),
    variants: dict[str, str] | None = None,
    **rules: object,
) -> list[tuple[str, str]]:
    choices = choose(
        placements,
        ranked,
        treatment_for(*ranked) if variants is None else variants,
        WEB,
        EVERYONE,
        **rules,  # type: ignore[arg-type]
    )
    return [(c.placement, c.campaign.key if c.campaign else "") for c in choices]


def test_window_end__fixed_windows_aligned_to_the_epoch() -> None:
    assert window_end(0, DAY) == DAY
    assert window_end(DAY - 1, DAY) == DAY
    assert window_end(DAY, DAY) == 2 * DAY
    assert window_end(NOW_S, DAY) == int(dt.datetime(2026, 12, 25, tzinfo=dt.UTC).timestamp())


def test_choose__cap_reached__next_campaign_with_reason() -> None:
    capped = make("capped", priority=9, frequency_cap=FrequencyCap(3, DAY))
    fallback = make("fallback", priority=1)
    counters = Counters(decisions={"capped": 3})

    (choice,) = choose(
        ("home",),
        [capped, fallback],
        treatment_for(capped, fallback),
        WEB,
        EVERYONE,
        counters=counters,
    )

    assert choice.campaign is fallback
    assert "skipped capped: frequency cap (3 per 86400s reached)" in choice.reasons


def test_choose__cap_not_reached__capped_campaign_wins() -> None:
    capped = make("capped", priority=9, frequency_cap=FrequencyCap(3, DAY))
    fallback = make("fallback", priority=1)

    picked = pick([capped, fallback], counters=Counters(decisions={"capped": 2}))

    assert picked == [("home", "capped")]


def test_choose__cost_over_budget__next_campaign_with_reason() -> None:
    loud = make("loud", priority=9, pressure_cost=4)
    quiet = make("quiet", priority=1)

    (choice,) = choose(
        ("home",),
        [loud, quiet],
        treatment_for(loud, quiet),
        WEB,
        EVERYONE,
        counters=Counters(pressure_spent=7),
        budget=10,
    )

    assert choice.campaign is quiet
    assert "skipped loud: pressure budget (7 spent + 4 over 10)" in choice.reasons


def test_choose__budget_zero__no_budget_at_all() -> None:
    loud = make("loud", pressure_cost=4)

    assert pick([loud], counters=Counters(pressure_spent=1000), budget=0) == [("home", "loud")]


def test_choose__costs_of_one_decision_add_up_over_its_placements() -> None:
    hero = make("hero", priority=9, placements=("hero",), pressure_cost=3)
    side = make("side", priority=5, placements=("side",), pressure_cost=3)
    free = make("free", priority=1, placements=("side",))

    picked = pick(
        [hero, side, free], ("hero", "side"), counters=Counters(pressure_spent=2), budget=6
    )

    assert picked == [("hero", "hero"), ("side", "free")]


def test_choose__group_held__held_campaign_keeps_it_over_a_better_one() -> None:
    better = make("better", priority=9, conflict_group="promo")
    held = make("held", priority=1, conflict_group="promo")

    (choice,) = choose(
        ("home",),
        [better, held],
        treatment_for(better, held),
        WEB,
        EVERYONE,
        counters=Counters(holds={"promo": "held"}),
        holders={"promo": held},
    )

    assert choice.campaign is held
    assert "skipped better: conflict group (promo held by held)" in choice.reasons


def test_choose__holder_capped__group_free_for_the_next_member() -> None:
    better = make("better", priority=9, conflict_group="promo")
    held = make("held", priority=1, conflict_group="promo", frequency_cap=FrequencyCap(1, DAY))
    counters = Counters(decisions={"held": 1}, holds={"promo": "held"})

    assert pick([better, held], counters=counters, holders={"promo": held}) == [("home", "better")]


def test_holding__holder_no_longer_eligible__group_freed() -> None:
    held = make("held", conflict_group="promo", audience_segment_keys=("vip",))
    paused = make("paused", conflict_group="other", status=CampaignStatus.PAUSED)
    moved = make("moved", conflict_group="elsewhere")
    campaigns = [held, paused, moved]
    holds = {"promo": "held", "other": "paused", "third": "moved", "gone": "deleted"}

    in_vip = holding(holds, campaigns, frozenset({"vip"}), NOW, 0.5)
    left_vip = holding(holds, campaigns, EVERYONE, NOW, 0.5)

    assert in_vip == {"promo": held}
    assert left_vip == {}


def test_candidates__probability_range__only_visitors_inside_it() -> None:
    hesitant = make("hesitant", probability_range=ProbabilityRange(0.2, 0.6))
    always = make("always")

    def keys(probability: float | None) -> list[str]:
        return [
            c.key for c in candidates([hesitant, always], ["home"], WEB, EVERYONE, NOW, probability)
        ]

    assert keys(0.2) == ["always", "hesitant"]
    assert keys(0.6) == ["always", "hesitant"]
    assert keys(0.61) == ["always"]
    assert keys(0.1) == ["always"]
    assert keys(None) == ["always"]


def test_choose__explain__every_other_campaign_of_the_placement_with_its_rule() -> None:
    winner = make("winner", priority=5)
    lower = make("lower", priority=1)
    app_only = make("app-only", channels=frozenset({2}))
    paused = make("paused", status=CampaignStatus.PAUSED)
    later = make(
        "later",
        schedule=dataclasses.replace(winner.schedule, start_time=NOW + dt.timedelta(days=1)),
    )
    vip = make("vip", audience_segment_keys=("vip",))
    hesitant = make("hesitant", probability_range=ProbabilityRange(0.2, 0.6))
    no_experiment = make("no-experiment", priority=7)
    everyone = [winner, lower, app_only, paused, later, vip, hesitant, no_experiment]
    ranked = candidates(everyone, ["home"], WEB, EVERYONE, NOW, 0.9)
    explained = static_skips(everyone, ["home"], WEB, EVERYONE, NOW, 0.9)

    (choice,) = choose(
        ("home",), ranked, treatment_for(winner, lower), WEB, EVERYONE, explain=explained
    )

    assert choice.campaign is winner
    assert choice.reasons == (
        "priority 5",
        "audience: everyone",
        "skipped no-experiment: experiment (outside its traffic, or not running or loaded)",
        "skipped lower: lower priority (placement filled by winner)",
        "skipped app-only: channel",
        "skipped hesitant: probability range (0.9 not in 0.2 to 0.6)",
        "skipped later: schedule (not live now)",
        "skipped paused: not running (paused)",
        "skipped vip: audience",
    )


def test_choose__no_explain__only_the_winner_reasons() -> None:
    winner = make("winner", priority=5)
    lower = make("lower", priority=1)

    (choice,) = choose(("home",), [winner, lower], treatment_for(winner, lower), WEB, EVERYONE)

    assert choice.reasons == ("priority 5", "audience: everyone")


def test_charge_plan__control_charged_like_treatment_and_cost_once_per_decision() -> None:
    promo = make("promo", pressure_cost=2, frequency_cap=FrequencyCap(3, 3600), conflict_group="g")
    rules = PressureRules(budget=10, period_s=DAY, hold_s=600)

    plan = charge_plan([promo], Counters(raw_holds={"g": ""}), rules, NOW_S)

    assert plan == ChargePlan(
        (
            Increment(f"p:{window_end(NOW_S, DAY)}", 2, 10),
            Increment(f"c:promo:{window_end(NOW_S, 3600)}", 1, 3),
        ),
        (HoldClaim("h:g", hold_value("promo", NOW_S + 600), ""),),
    )


def test_charge_plan__group_already_held_by_it__hold_checked_not_renewed() -> None:
    promo = make("promo", conflict_group="g")
    held = Counters(holds={"g": "promo"}, raw_holds={"g": hold_value("promo", NOW_S + 5)})

    plan = charge_plan([promo], held, PressureRules(), NOW_S)

    assert plan == ChargePlan(checks=(HoldCheck("h:g", hold_value("promo", NOW_S + 5)),))


def test_charge_plan__nothing_shown_but_a_hold_relied_on__hold_checked() -> None:
    held = Counters(holds={"g": "elsewhere"}, raw_holds={"g": hold_value("elsewhere", NOW_S + 5)})

    plan = charge_plan([], held, PressureRules(), NOW_S)

    assert plan.checks == (HoldCheck("h:g", hold_value("elsewhere", NOW_S + 5)),)
    assert not plan.empty


def test_apply_plan__hold_relied_on_changed_meanwhile__refused() -> None:
    record = {"h:g": hold_value("other", NOW_S + 60)}
    plan = ChargePlan(
        (Increment(f"p:{NOW_S + 60}", 1, 10),),
        checks=(HoldCheck("h:g", hold_value("mine", NOW_S + 60)),),
    )

    assert not apply_plan(record, plan, NOW_S)
    assert record == {"h:g": hold_value("other", NOW_S + 60)}


def test_apply_plan__one_limit_exceeded__nothing_charged() -> None:
    record = {f"p:{NOW_S + 10}": "9", f"c:a:{NOW_S + 10}": "0"}
    plan = ChargePlan(
        (Increment(f"c:a:{NOW_S + 10}", 1, 3), Increment(f"p:{NOW_S + 10}", 2, 10)),
    )

    applied = apply_plan(record, plan, NOW_S)

    assert not applied
    assert record == {f"p:{NOW_S + 10}": "9", f"c:a:{NOW_S + 10}": "0"}


def test_apply_plan__hold_taken_meanwhile__refused() -> None:
    record = {"h:g": hold_value("other", NOW_S + 60)}
    plan = ChargePlan(holds=(HoldClaim("h:g", hold_value("mine", NOW_S + 60), ""),))

    assert not apply_plan(record, plan, NOW_S)


def test_apply_plan__ended_windows_and_holds_dropped_then_charged() -> None:
    record = {f"p:{NOW_S}": "10", "h:g": hold_value("old", NOW_S - 1)}
    plan = ChargePlan(
        (Increment(f"p:{NOW_S + 60}", 3, 10),),
        (HoldClaim("h:g", hold_value("new", NOW_S + 60), ""),),
    )

    applied = apply_plan(record, plan, NOW_S)

    assert applied
    assert record == {f"p:{NOW_S + 60}": "3", "h:g": hold_value("new", NOW_S + 60)}


def test_fold_into__counters_add_and_survivor_hold_kept() -> None:
    survivor = {f"p:{NOW_S + 60}": "3", "h:g": hold_value("mine", NOW_S + 60)}
    merged = {
        f"p:{NOW_S + 60}": "4",
        f"c:a:{NOW_S + 60}": "2",
        "h:g": hold_value("theirs", NOW_S + 60),
        "h:k": hold_value("kept", NOW_S + 60),
        f"p:{NOW_S}": "9",  # an ended window: not carried over
    }

    fold_into(survivor, merged, NOW_S)

    assert survivor == {
        f"p:{NOW_S + 60}": "7",
        f"c:a:{NOW_S + 60}": "2",
        "h:g": hold_value("mine", NOW_S + 60),
        "h:k": hold_value("kept", NOW_S + 60),
    }


def test_counters_from__values_read__spent_decisions_and_live_holds() -> None:
    capped = make("capped", frequency_cap=FrequencyCap(3, DAY), pressure_cost=1)
    grouped = make("grouped", conflict_group="g")
    spec = counter_spec([capped, grouped], PressureRules(budget=5, period_s=DAY), NOW_S)

    counters = counters_from(spec, ["4", "2", hold_value("grouped", NOW_S + 1)], NOW_S)
    ended = counters_from(spec, [None, None, hold_value("grouped", NOW_S)], NOW_S)

    assert spec.fields == [
        f"p:{window_end(NOW_S, DAY)}",
        f"c:capped:{window_end(NOW_S, DAY)}",
        "h:g",
    ]
    assert (counters.pressure_spent, dict(counters.decisions), dict(counters.holds)) == (
        4,
        {"capped": 2},
        {"g": "grouped"},
    )
    assert (ended.pressure_spent, dict(ended.holds), dict(ended.raw_holds)) == (0, {}, {"g": ""})


def test_counter_spec__nothing_counted__nothing_read() -> None:
    plain = make("plain", pressure_cost=3)

    assert counter_spec([plain], PressureRules(budget=0), NOW_S).empty


def test_possible__members_of_a_group_on_other_placements_included() -> None:
    here = make("here", conflict_group="g")
    there = make("there", placements=("other",), conflict_group="g")
    unrelated = make("unrelated", placements=("other",))

    assert [c.key for c in possible([here, there, unrelated], ["home"], WEB, NOW)] == [
        "here",
        "there",
    ]


def test_choose__counters_unavailable__counted_campaigns_skipped_with_reason() -> None:
    costly = make("costly", priority=9, pressure_cost=1)
    free = make("free", priority=1)

    (choice,) = choose(
        ("home",),
        [costly, free],
        treatment_for(costly, free),
        WEB,
        EVERYONE,
        counters=Counters(unavailable=True),
        budget=10,
    )

    assert choice.campaign is free
    assert (
        "skipped costly: counters unavailable (its cap, budget or group cannot be checked)"
        in choice.reasons
    )


def test_static_skips__probability_unknown__said_unknown_not_zero() -> None:
    # A profile without features has no predicted probability: a ranged
    # campaign is skipped, and explain must not claim the visitor is at 0.
    hesitant = make("hesitant", probability_range=ProbabilityRange(0.2, 0.6))

    explained = static_skips([hesitant], ["home"], WEB, EVERYONE, NOW, None)

    assert [s.text() for s in explained["home"]] == [
        "skipped hesitant: probability range (unknown, not in 0.2 to 0.6)"
    ]


CAP_END = window_end(NOW_S, 3600)
BUDGET_END = window_end(NOW_S, DAY)


def test_charge_plan__request_id__stamped_to_be_remembered_for_the_retry_window() -> None:
    capped = make("capped", frequency_cap=FrequencyCap(1, 3600))
    rules = PressureRules(retry_window_s=600)

    plan = charge_plan([capped], Counters(), rules, NOW_S, request_id="r1")

    assert plan == ChargePlan(
        (Increment(f"c:capped:{CAP_END}", 1, 1),), request=RequestStamp("r:r1", NOW_S + 600)
    )


def test_apply_plan__first_try_with_request_id__charge_remembered_under_the_id() -> None:
    record: dict[str, str] = {}
    plan = ChargePlan(
        (Increment(f"p:{BUDGET_END}", 2, 10), Increment(f"c:capped:{CAP_END}", 1, 1)),
        request=RequestStamp("r:r1", NOW_S + 600),
    )

    applied = apply_plan(record, plan, NOW_S)

    assert applied
    assert record == {
        f"p:{BUDGET_END}": "2",
        f"c:capped:{CAP_END}": "1",
        "r:r1": f"{NOW_S + 600}|p:{BUDGET_END}|2|c:capped:{CAP_END}|1",
    }


def test_apply_plan__retry_of_a_recorded_request__cap_of_one_allows_it_counted_once() -> None:
    plan = ChargePlan(
        (Increment(f"p:{BUDGET_END}", 2, 10), Increment(f"c:capped:{CAP_END}", 1, 1)),
        request=RequestStamp("r:r1", NOW_S + 600),
    )
    record: dict[str, str] = {}
    apply_plan(record, plan, NOW_S)
    retry = dataclasses.replace(plan, request=RequestStamp("r:r1", NOW_S + 630))

    applied = apply_plan(record, retry, NOW_S + 30)

    assert applied
    assert record == {  # the same counts, and the first try's window kept
        f"p:{BUDGET_END}": "2",
        f"c:capped:{CAP_END}": "1",
        "r:r1": f"{NOW_S + 600}|p:{BUDGET_END}|2|c:capped:{CAP_END}|1",
    }


def test_apply_plan__another_request_id__charged_again_and_cap_refuses() -> None:
    first = ChargePlan(
        (Increment(f"c:capped:{CAP_END}", 1, 1),), request=RequestStamp("r:r1", NOW_S + 600)
    )
    record: dict[str, str] = {}
    apply_plan(record, first, NOW_S)
    other = dataclasses.replace(first, request=RequestStamp("r:r2", NOW_S + 600))

    assert not apply_plan(record, other, NOW_S)
    assert record[f"c:capped:{CAP_END}"] == "1"


def test_apply_plan__retry_shows_something_else__first_charge_taken_back() -> None:
    record = {
        f"p:{BUDGET_END}": "5",  # 2 of them the first try's, 3 other decisions'
        f"c:capped:{CAP_END}": "1",
        "r:r1": request_value(NOW_S + 600, [(f"p:{BUDGET_END}", 2), (f"c:capped:{CAP_END}", 1)]),
    }
    cheaper = ChargePlan(
        (Increment(f"p:{BUDGET_END}", 1, 10),), request=RequestStamp("r:r1", NOW_S + 700)
    )

    assert apply_plan(record, cheaper, NOW_S + 100)
    assert record == {
        f"p:{BUDGET_END}": "4",
        f"c:capped:{CAP_END}": "0",
        "r:r1": f"{NOW_S + 600}|p:{BUDGET_END}|1",
    }


def test_apply_plan__retry_window_over__request_forgotten_and_charged_again() -> None:
    record: dict[str, str] = {}
    stamp = RequestStamp("r:r1", NOW_S + 600)
    plan = ChargePlan((Increment(f"p:{BUDGET_END}", 2, 10),), request=stamp)
    apply_plan(record, plan, NOW_S)

    applied = apply_plan(record, plan, NOW_S + 600)

    assert applied
    assert record[f"p:{BUDGET_END}"] == "4"


def test_counters_from__request_recorded__its_charge_taken_out_for_the_retry() -> None:
    capped = make("capped", frequency_cap=FrequencyCap(1, 3600), pressure_cost=2)
    rules = PressureRules(budget=10, period_s=DAY)
    spec = counter_spec([capped], rules, NOW_S, request_id="r1")
    recorded = request_value(NOW_S + 600, [(f"p:{BUDGET_END}", 2), (f"c:capped:{CAP_END}", 1)])

    counters = counters_from(spec, ["7", "1", recorded], NOW_S)
    forgotten = counters_from(spec, ["7", "1", recorded], NOW_S + 600)

    assert spec.fields == [f"p:{BUDGET_END}", f"c:capped:{CAP_END}", "r:r1"]
    assert (counters.pressure_spent, dict(counters.decisions)) == (5, {"capped": 0})
    assert (forgotten.pressure_spent, dict(forgotten.decisions)) == (7, {"capped": 1})


def test_choose__retry_of_the_request_that_filled_a_cap_of_one__same_campaign() -> None:
    capped = make("capped", priority=9, frequency_cap=FrequencyCap(1, 3600))
    fallback = make("fallback", priority=1)
    spec = counter_spec([capped, fallback], PressureRules(), NOW_S, request_id="r1")
    recorded = request_value(NOW_S + 600, [(f"c:capped:{CAP_END}", 1)])

    retry = counters_from(spec, ["1", recorded], NOW_S)
    new_request = counters_from(spec, ["1", None], NOW_S)

    assert pick([capped, fallback], counters=retry) == [("home", "capped")]
    assert pick([capped, fallback], counters=new_request) == [("home", "fallback")]


def test_counter_spec__request_id_but_nothing_counted__nothing_read() -> None:
    plain = make("plain")

    assert counter_spec([plain], PressureRules(budget=0), NOW_S, request_id="r1").empty


def test_fold_into__merged_persons_request_taken_over() -> None:
    survivor: dict[str, str] = {}
    remembered = request_value(NOW_S + 600, [(f"p:{BUDGET_END}", 2)])

    fold_into(survivor, {"r:r1": remembered, f"p:{BUDGET_END}": "2"}, NOW_S)

    assert survivor == {"r:r1": remembered, f"p:{BUDGET_END}": "2"}
