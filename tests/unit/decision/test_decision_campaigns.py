"""Campaign rules of the decision path: schedule, control, validation, choice."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from tessera.decision.domain.campaigns import (
    CalendarWindow,
    CampaignDef,
    CampaignStatus,
    CampaignVariant,
    Schedule,
    candidates,
    choose,
    validate_campaign,
    with_control,
)
from tessera.errors import InvalidArgument

NOW = dt.datetime(2026, 12, 24, 12, 0, tzinfo=dt.UTC)
WEB, APP = 1, 2


def make(name: str, **fields: object) -> CampaignDef:
    base = CampaignDef(
        key=name,
        placements=("home",),
        variants=(
            CampaignVariant("treatment", 1.0, {"title": name}),
            CampaignVariant("control", 1.0),
        ),
        control_variant_key="control",
        experiment_key=f"campaign-{name}",
        status=CampaignStatus.RUNNING,
        goal_event_type="purchase",
        goal_kind="conversion",
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def test_with_control__no_control_named__adds_control_with_mean_weight() -> None:
    variants, control = with_control([CampaignVariant("a", 1.0), CampaignVariant("b", 3.0)], "")

    assert control == "control"
    assert [(v.key, v.weight) for v in variants] == [("a", 1.0), ("b", 3.0), ("control", 2.0)]


def test_with_control__control_named_and_present__unchanged() -> None:
    given = [CampaignVariant("a", 1.0), CampaignVariant("holdback", 0.2)]

    variants, control = with_control(given, "holdback")

    assert (list(variants), control) == (given, "holdback")


def test_calendar_window__spans_new_year__contains_both_sides() -> None:
    holidays = CalendarWindow("winter", 12, 20, 1, 5)

    inside = [dt.datetime(2026, 12, 31), dt.datetime(2027, 1, 5), dt.datetime(2026, 12, 20)]
    outside = [dt.datetime(2027, 1, 6), dt.datetime(2026, 12, 19), dt.datetime(2026, 7, 1)]

    assert all(holidays.contains(day) for day in inside)
    assert not any(holidays.contains(day) for day in outside)


def test_schedule__window_in_time_zone__uses_local_date() -> None:
    christmas = Schedule(
        windows=(CalendarWindow("christmas", 12, 25, 12, 26),), time_zone="Pacific/Auckland"
    )

    # 24 Dec 12:00 UTC is already 25 Dec 01:00 in Auckland.
    assert christmas.is_live(NOW)
    assert not Schedule(windows=christmas.windows).is_live(NOW)


def test_schedule__start_and_end__live_only_between() -> None:
    schedule = Schedule(
        start_time=NOW - dt.timedelta(hours=1), end_time=NOW + dt.timedelta(hours=1)
    )

    assert schedule.is_live(NOW)
    assert not schedule.is_live(NOW + dt.timedelta(hours=1))
    assert not schedule.is_live(NOW - dt.timedelta(hours=2))


def test_candidates__paused_wrong_channel_or_audience__left_out_and_rest_ranked() -> None:
    campaigns = [
        make("low", priority=1),
        make("high", priority=9),
        make("paused", priority=20, status=CampaignStatus.PAUSED),
        make("app-only", priority=20, channels=frozenset({APP})),
        make("vip-only", priority=20, audience_segment_keys=("vip",)),
    ]

    ranked = candidates(campaigns, ["home"], WEB, frozenset({"gold"}), NOW)

    assert [c.key for c in ranked] == ["high", "low"]


def test_choose__variant_missing__campaign_skipped_for_next() -> None:
    ranked = [make("first", priority=2), make("second", priority=1)]

    (choice,) = choose(["home"], ranked, {"campaign-second": "treatment"}, WEB, frozenset())

    assert choice.campaign is not None and choice.campaign.key == "second"
    assert not choice.is_control


def test_choose__control_variant__is_control_with_reason() -> None:
    (choice,) = choose(["home"], [make("a")], {"campaign-a": "control"}, WEB, frozenset())

    assert choice.is_control
    assert "control group: show the default" in choice.reasons


def test_choose__visitor_in_holdout__control_with_holdout_reason() -> None:
    (choice,) = choose(
        ["home"], [make("a")], {}, WEB, frozenset(), held_out=frozenset({"campaign-a"})
    )

    assert choice.campaign is not None and choice.campaign.key == "a"
    assert (choice.variant_key, choice.is_control) == ("control", True)
    assert "holdout: show the default" in choice.reasons
    assert "control group: show the default" not in choice.reasons


def test_choose__conflict_group__best_campaign_wins_even_on_later_placement() -> None:
    big = make("big", priority=5, placements=("top",), conflict_group="sale")
    small = make("small", priority=1, placements=("side",), conflict_group="sale")
    variants = {"campaign-big": "treatment", "campaign-small": "treatment"}

    side, top = choose(["side", "top"], [big, small], variants, WEB, frozenset())

    assert top.campaign is big
    assert side.campaign is None


def test_choose__no_candidate__empty_choice_with_reason() -> None:
    (choice,) = choose(["footer"], [make("a")], {"campaign-a": "treatment"}, WEB, frozenset())

    assert choice.campaign is None
    assert choice.reasons == ("no live campaign fits this placement",)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key": "Bad Key"}, "campaign.key"),
        ({"goal_event_type": ""}, "campaign.goal.event_type"),
        ({"goal_kind": ""}, "campaign.goal.kind"),
        ({"placements": ()}, "campaign.placements"),
        ({"placements": ("home", "home")}, "campaign.placements"),
        ({"variants": (CampaignVariant("control", 1.0),)}, "campaign.variants"),
        (
            {"variants": (CampaignVariant("a", -1.0), CampaignVariant("control", 1.0))},
            "campaign.variants[0].weight",
        ),
        (
            {"variants": (CampaignVariant("a", 1e308), CampaignVariant("control", 1e308))},
            "campaign.variants",
        ),
        ({"schedule": Schedule(time_zone="Mars/Olympus")}, "campaign.schedule.time_zone"),
        (
            {"schedule": Schedule(windows=(CalendarWindow("x", 13, 1, 1, 1),))},
            "campaign.schedule.windows[0].start_month",
        ),
        ({"schedule": Schedule(start_time=NOW, end_time=NOW)}, "campaign.schedule.end_time"),
    ],
)
def test_validate_campaign__bad_field__invalid_argument_names_it(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_campaign(make("ok", **change))

    assert raised.value.field == field


def test_choose__variant_unknown_to_campaign__campaign_skipped() -> None:
    (choice,) = choose(["home"], [make("a")], {"campaign-a": "renamed"}, WEB, frozenset())

    assert choice.campaign is None


def test_is_live__plain_string_status__same_as_the_enum():
    import dataclasses
    import datetime as dt

    from tessera.decision.domain.campaigns import CampaignDef, CampaignStatus, CampaignVariant

    by_enum = CampaignDef(
        key="c",
        placements=("home",),
        variants=(CampaignVariant(key="a", weight=1),),
        control_variant_key="a",
        experiment_key="c",
        status=CampaignStatus.RUNNING,
    )
    by_text = dataclasses.replace(by_enum, status="running")  # type: ignore[arg-type]
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    assert by_enum.is_live(now)
    assert by_text.is_live(now)
