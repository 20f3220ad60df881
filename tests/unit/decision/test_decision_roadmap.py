"""The roadmap check (docs/roadmap.md): schedules, placements, channels, audiences, sizes."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime as dt
import io
from pathlib import Path
from typing import Any

import grpc
import pytest
from decision_fakes import campaign, rpc_error, run_with_catalog

from tessera.catalog import Catalog
from tessera.decision.application import roadmap as roadmap_module
from tessera.decision.application.campaigns import normalised
from tessera.decision.application.roadmap import RoadmapCheck, RoadmapSettings
from tessera.decision.domain.campaigns import (
    CalendarWindow,
    CampaignDef,
    CampaignStatus,
    CampaignVariant,
    Schedule,
)
from tessera.decision.domain.roadmap import (
    Size,
    audience_rule,
    first_live_day,
    overlap,
    reported,
    summary,
    why_first,
)
from tessera.decision.roadmap_cli import columns, request_for, run
from tessera.decision.v1 import decision_pb2
from tessera.errors import InvalidArgument
from tessera.segments.v1 import segments_pb2

NOW = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
WEB, APP, EMAIL = 1, 2, 3
CHRISTMAS = CalendarWindow("christmas", 12, 20, 12, 26)
WINTER = CalendarWindow("winter", 12, 24, 1, 5)
SUMMER = CalendarWindow("summer", 7, 1, 8, 31)


def at(month: int, day: int, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=dt.UTC)


def make(key: str, **fields: object) -> CampaignDef:
    base = CampaignDef(
        key=key,
        placements=("home",),
        variants=(CampaignVariant("treatment", 1.0), CampaignVariant("control", 1.0)),
        control_variant_key="control",
        experiment_key=f"campaign-{key}",
        status=CampaignStatus.RUNNING,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


# -- schedules ----------------------------------------------------------------


def test_first_live_day__always_on__today() -> None:
    assert first_live_day([Schedule(), Schedule()], NOW) == NOW.date()


def test_first_live_day__bounds_meet_without_overlap__none() -> None:
    first = Schedule(end_time=at(12, 10))
    second = Schedule(start_time=at(12, 10))

    assert first_live_day([first, second], NOW) is None


def test_first_live_day__bounds_overlap__the_later_start() -> None:
    first = Schedule(start_time=at(12, 5), end_time=at(12, 20))
    second = Schedule(start_time=at(12, 15))

    assert first_live_day([first, second], NOW) == dt.date(2026, 12, 15)


def test_first_live_day__ended_before_now__none() -> None:
    assert first_live_day([Schedule(end_time=at(11, 1)), Schedule()], NOW) is None


def test_first_live_day__windows_share_days_across_new_year__first_shared_day() -> None:
    assert first_live_day([Schedule(windows=(CHRISTMAS,)), Schedule(windows=(WINTER,))], NOW) == (
        dt.date(2026, 12, 24)
    )


def test_first_live_day__windows_share_no_day__none() -> None:
    assert first_live_day([Schedule(windows=(CHRISTMAS,)), Schedule(windows=(SUMMER,))], NOW) is (
        None
    )


def test_first_live_day__window_and_bounds__window_day_inside_bounds() -> None:
    summer_only = Schedule(windows=(SUMMER,))
    from_next_year = Schedule(start_time=at(3, 1, 2027))

    assert first_live_day([summer_only, from_next_year], NOW) == dt.date(2027, 7, 1)


def test_first_live_day__window_outside_the_period__none() -> None:
    assert first_live_day([Schedule(windows=(SUMMER,))], NOW, at(3, 1, 2027)) is None


def test_first_live_day__leap_day_window__found_in_the_next_leap_year() -> None:
    leap = CalendarWindow("leap", 2, 29, 2, 29)

    assert first_live_day([Schedule(windows=(leap,))], NOW) == dt.date(2028, 2, 29)


def test_first_live_day__leap_day_window_across_a_century__found_eight_years_on() -> None:
    leap = CalendarWindow("leap", 2, 29, 2, 29)
    since = dt.datetime(2097, 3, 1, tzinfo=dt.UTC)

    # 2100 is not a leap year; a four-year walk gave None.
    assert first_live_day([Schedule(windows=(leap,))], since) == dt.date(2104, 2, 29)


def test_first_live_day__end_of_the_calendar__none_not_overflow() -> None:
    late = Schedule(start_time=dt.datetime(9999, 12, 30, tzinfo=dt.UTC), windows=(SUMMER,))

    assert first_live_day([late], NOW) is None


# -- campaigns ----------------------------------------------------------------


def test_overlap__same_placement_everyone_always__collides_with_true_rule() -> None:
    found = overlap(make("a"), make("b"), NOW)

    assert found is not None
    assert (found.placements, found.channels) == (("home",), frozenset())
    assert found.first_day == NOW.date()
    assert found.audience_rule == "true"


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        ({"placements": ("home",)}, {"placements": ("cart",)}),
        ({"channels": frozenset({WEB})}, {"channels": frozenset({APP, EMAIL})}),
        ({"schedule": Schedule(windows=(SUMMER,))}, {"schedule": Schedule(windows=(CHRISTMAS,))}),
        ({"status": CampaignStatus.DRAFT}, {"status": CampaignStatus.PAUSED}),
        ({"status": CampaignStatus.STOPPED}, {}),
        ({}, {"status": CampaignStatus.STOPPED}),
    ],
    ids=["placements", "channels", "windows", "neither-running", "stopped", "other-stopped"],
)
def test_overlap__one_dimension_apart__no_collision(
    mine: dict[str, object], theirs: dict[str, object]
) -> None:
    assert overlap(make("a", **mine), make("b", **theirs), NOW) is None


def test_overlap__draft_against_running__collides() -> None:
    assert overlap(make("a", status=CampaignStatus.DRAFT), make("b"), NOW) is not None


def test_overlap__channels_all_and_some__the_some() -> None:
    found = overlap(make("a", channels=frozenset({WEB, APP})), make("b"), NOW)

    assert found is not None and found.channels == {WEB, APP}


def test_overlap__itself__no_collision() -> None:
    assert overlap(make("a"), make("a", priority=3), NOW) is None


def test_audience_rule__both_sides_any_of_their_segments() -> None:
    assert audience_rule(["fr", "be"], ["vip"]) == (
        '(segment("fr") or segment("be")) and (segment("vip"))'
    )
    assert audience_rule([], ["vip"]) == 'segment("vip")'
    assert audience_rule([], []) == "true"


def test_reported__disjoint_today_left_out__only_known_zero_without_live_data_is_dropped() -> None:
    assert not reported(Size(members=0, total=10))
    assert reported(Size(members=0, total=10, left_out=("session.page_views",)))
    assert reported(Size(members=3, total=10))
    assert reported(Size(error="segments: UNAVAILABLE"))


def test_summary__sized__where_when_how_many_and_who_wins() -> None:
    found = overlap(
        make("spring", priority=5, channels=frozenset({WEB})), make("gifts", priority=10), NOW
    )
    assert found is not None

    text = summary(found, Size(members=1234, total=10_000))

    assert text == (
        "gifts shares home on web from 2026-12-02: about 1,234 profiles (12.3% of 10,000) "
        "are in both audiences; gifts wins there (priority 10 over 5)"
    )


def test_summary__same_priority__the_smaller_key_wins_as_the_cli_says() -> None:
    found = overlap(make("zebra", priority=4), make("apple", priority=4), NOW)
    assert found is not None

    text = summary(found, Size(members=1, total=2))

    assert text.endswith("; apple wins there (same priority 4, smaller key)")
    assert why_first(found.other, found.campaign) == "same priority 4, smaller key"


def test_summary__unknown_size_same_group__says_why_and_one_is_shown() -> None:
    found = overlap(make("a", conflict_group="promo"), make("b", conflict_group="promo"), NOW)
    assert found is not None

    text = summary(found, Size(error="segments: FAILED_PRECONDITION: projection off"))

    assert "overlap size unknown (segments: FAILED_PRECONDITION: projection off)" in text
    assert text.endswith("both are in conflict group promo: a is shown, b not")


# -- the check, against the catalog and a segment service -----------------------


class SizingSegments:
    """EstimateSize answering from a table of rules, or failing, or too slow."""

    def __init__(self, sizes: dict[str, int], total: int = 100) -> None:
        self.sizes = sizes
        self.total = total
        self.fail: grpc.StatusCode | None = None
        self.delay_s = 0.0
        self.asked: list[str] = []

    async def EstimateSize(
        self, request: segments_pb2.EstimateSizeRequest, timeout: float
    ) -> segments_pb2.EstimateSizeResponse:
        self.asked.append(request.rule.text)
        if self.delay_s > timeout:
            await asyncio.sleep(timeout)
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if self.fail is not None:
            raise rpc_error(self.fail, "EstimateSize needs the projection: TESSERA_PROJECTION")
        reply = segments_pb2.EstimateSizeResponse(
            members=self.sizes[request.rule.text], total=self.total
        )
        if "session" in request.rule.text:
            reply.left_out.add(attribute="session.page_views", reason="reads the live visit")
        return reply


def stored(key: str, **fields: object) -> decision_pb2.Campaign:
    return normalised(campaign(key, **{"status": decision_pb2.CAMPAIGN_STATUS_RUNNING, **fields}))


def check_with(
    tmp_path: Path,
    segments: SizingSegments,
    mine: decision_pb2.Campaign,
    others: list[decision_pb2.Campaign],
    settings: RoadmapSettings | None = None,
) -> list[tuple[str, int, float, str]]:
    Found = list[tuple[str, int, float, str]]

    async def scenario(catalog: Catalog[decision_pb2.Campaign]) -> Found:
        for other in others:
            await catalog.create(other)
        mine_stored = await catalog.create(mine)
        check = RoadmapCheck(catalog, segments, settings, now=lambda: NOW)  # type: ignore[arg-type]
        found = await check.collisions(mine_stored)
        return [(c.overlap.other.key, c.size.members, c.size.fraction, c.summary) for c in found]

    return run_with_catalog(tmp_path, scenario)


def test_collisions__running_on_same_placement__sized_by_their_audiences(tmp_path: Path) -> None:
    segments = SizingSegments({'(segment("fr")) and (segment("vip"))': 12})

    found = check_with(
        tmp_path,
        segments,
        stored("mine", audience_segment_keys=["fr"]),
        [stored("theirs", audience_segment_keys=["vip"]), stored("elsewhere", placements=["cart"])],
    )

    assert [(key, members, fraction) for key, members, fraction, _ in found] == [
        ("theirs", 12, 0.12)
    ]
    assert segments.asked == ['(segment("fr")) and (segment("vip"))']


@pytest.mark.parametrize(
    "status", [decision_pb2.CAMPAIGN_STATUS_DRAFT, decision_pb2.CAMPAIGN_STATUS_PAUSED]
)
def test_collisions__stored_campaign_not_running__not_reported(
    tmp_path: Path, status: decision_pb2.CampaignStatus.ValueType
) -> None:
    # The contract says "running campaigns it competes with"; a stored draft
    # was reported against a running write.
    segments = SizingSegments({"true": 100})

    found = check_with(tmp_path, segments, stored("mine"), [stored("draft", status=status)])

    assert found == []
    assert segments.asked == []


def test_collisions__written_draft_against_running__reported(tmp_path: Path) -> None:
    segments = SizingSegments({"true": 100})

    found = check_with(
        tmp_path,
        segments,
        stored("mine", status=decision_pb2.CAMPAIGN_STATUS_DRAFT),
        [stored("live")],
    )

    assert [(key, members) for key, members, _, _ in found] == [("live", 100)]


def test_collisions__disjoint_audiences_today__not_reported(tmp_path: Path) -> None:
    segments = SizingSegments({'(segment("fr")) and (segment("be"))': 0})

    found = check_with(
        tmp_path,
        segments,
        stored("mine", audience_segment_keys=["fr"]),
        [stored("theirs", audience_segment_keys=["be"])],
    )

    assert found == []


def test_collisions__segment_service_refuses__size_unknown_and_reason_given(
    tmp_path: Path,
) -> None:
    segments = SizingSegments({})
    segments.fail = grpc.StatusCode.FAILED_PRECONDITION

    ((key, members, fraction, text),) = check_with(
        tmp_path, segments, stored("mine"), [stored("theirs")]
    )

    assert (key, members, fraction) == ("theirs", -1, -1.0)
    assert "overlap size unknown (segments: FAILED_PRECONDITION: EstimateSize needs" in text


def test_collisions__sizing_slower_than_the_budget__size_unknown_deadline(
    tmp_path: Path,
) -> None:
    segments = SizingSegments({"true": 100})
    segments.delay_s = 60.0

    ((_, members, _, text),) = check_with(
        tmp_path, segments, stored("mine"), [stored("theirs")], RoadmapSettings(timeout_s=0.05)
    )

    assert members == -1
    assert "DEADLINE_EXCEEDED" in text


def test_collisions__over_the_sizing_limit__rest_unsized_with_reason(tmp_path: Path) -> None:
    segments = SizingSegments({'segment("a")': 5, 'segment("b")': 6})

    found = check_with(
        tmp_path,
        segments,
        stored("mine"),
        [stored("x", audience_segment_keys=["a"]), stored("y", audience_segment_keys=["b"])],
        RoadmapSettings(max_sized=1),
    )

    assert [(key, members) for key, members, _, _ in found] == [("x", 5), ("y", -1)]
    assert "more than 1 overlaps at once" in found[1][3]


class CountingSegments(SizingSegments):
    """SizingSegments that takes a moment per call and counts the calls in flight."""

    def __init__(self, sizes: dict[str, int]) -> None:
        super().__init__(sizes)
        self.in_flight = 0
        self.most_in_flight = 0

    async def EstimateSize(
        self, request: segments_pb2.EstimateSizeRequest, timeout: float
    ) -> segments_pb2.EstimateSizeResponse:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return await super().EstimateSize(request, timeout)


def test_collisions__concurrency_setting__at_most_that_many_sizings_in_flight(
    tmp_path: Path,
) -> None:
    keys = [f"s{n}" for n in range(6)]
    segments = CountingSegments({f'segment("{key}")': 1 for key in keys})

    found = check_with(
        tmp_path,
        segments,
        stored("mine"),
        [stored(f"other-{key}", audience_segment_keys=[key]) for key in keys],
        RoadmapSettings(concurrency=2),
    )

    assert len(found) == 6
    assert segments.most_in_flight == 2  # TESSERA_ROADMAP_CONCURRENCY holds


def test_roadmap__period__campaigns_live_in_it_and_their_collisions(tmp_path: Path) -> None:
    segments = SizingSegments({"true": 40})
    summer = decision_pb2.Schedule(
        windows=[decision_pb2.CalendarWindow(start_month=7, start_day=1, end_month=8, end_day=31)]
    )

    async def scenario(catalog: Catalog[decision_pb2.Campaign]) -> decision_pb2.Campaign | None:
        for message in (
            stored("low", priority=1),
            stored("high", priority=9),
            stored("summer", schedule=summer),
            normalised(campaign("draft")),
        ):
            await catalog.create(message)
        check = RoadmapCheck(catalog, segments, now=lambda: NOW)  # type: ignore[arg-type]
        roadmap = await check.roadmap([], None, None)
        # By priority; summer is not live in the 13 weeks from 2 December.
        assert [c.key for c in roadmap.campaigns] == ["high", "low", "draft"]
        pairs = [(c.overlap.campaign.key, c.overlap.other.key) for c in roadmap.collisions]
        assert pairs == [("high", "low"), ("high", "draft"), ("low", "draft")]
        assert roadmap.end - roadmap.start == dt.timedelta(days=91)
        with pytest.raises(InvalidArgument, match="end_time: must be after start_time"):
            await check.roadmap([], at(12, 5), at(12, 1))
        with pytest.raises(InvalidArgument, match="end_time: a roadmap covers at most 731 days"):
            await check.roadmap([], at(12, 5), at(12, 5, 2030))
        summer_map = await check.roadmap(["home"], at(7, 1, 2027), at(7, 8, 2027))
        return summer_map.campaigns[-1] if summer_map.campaigns else None

    last = run_with_catalog(tmp_path, scenario)

    assert last is not None and last.key == "summer"


def test_roadmap__pages__every_campaign_once_each_pair_once_with_its_winner(
    tmp_path: Path,
) -> None:
    segments = SizingSegments({"true": 40})
    # Seven campaigns on one placement, all colliding: 21 pairs. Two share a
    # priority, so the key breaks the tie across a page boundary.
    priorities = {"a": 7, "b": 6, "c": 5, "d": 5, "e": 3, "f": 2, "g": 1}

    async def scenario(
        catalog: Catalog[decision_pb2.Campaign],
    ) -> tuple[list[list[str]], list[tuple[str, str]], list[tuple[str, str]]]:
        for key, priority in priorities.items():
            await catalog.create(stored(key, priority=priority))
        check = RoadmapCheck(catalog, segments, now=lambda: NOW)  # type: ignore[arg-type]
        whole = await check.roadmap(["home"], None, None, page_size=1000)
        assert whole.next_page_token == ""
        pages: list[list[str]] = []
        pairs: list[tuple[str, str]] = []
        token = ""
        while True:
            page = await check.roadmap(["home"], None, None, page_size=3, page_token=token)
            assert (page.start, page.end) == (whole.start, whole.end)
            pages.append([c.key for c in page.campaigns])
            on_page = set(pages[-1])
            for c in page.collisions:
                assert c.overlap.campaign.key in on_page  # the winner is on its page
                pairs.append((c.overlap.campaign.key, c.overlap.other.key))
            token = page.next_page_token
            if not token:
                break
        every = [(c.overlap.campaign.key, c.overlap.other.key) for c in whole.collisions]
        return pages, pairs, every

    pages, pairs, every = run_with_catalog(tmp_path, scenario)

    assert pages == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert len(every) == 21 and len(set(pairs)) == 21
    assert sorted(pairs) == sorted(every)


TOKEN_FIELDS = (
    '{"placements": "x", "start": "2026-12-02T00:00:00+00:00", '
    '"end": "2026-12-20T00:00:00+00:00", "priority": 0, "key": "a"}'
)
"""The fields of a page token, as the service writes them (forged below)."""


def forged(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_roadmap__a_page_reaches_the_collision_budget__it_ends_after_that_campaign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roadmap_module, "PAGE_COLLISIONS", 5)
    segments = SizingSegments({"true": 40})

    async def scenario(
        catalog: Catalog[decision_pb2.Campaign],
    ) -> tuple[list[list[str]], list[tuple[str, str]]]:
        for index, key in enumerate("abcdefg"):
            await catalog.create(stored(key, priority=10 - index))
        check = RoadmapCheck(catalog, segments, now=lambda: NOW)  # type: ignore[arg-type]
        pages: list[list[str]] = []
        pairs: list[tuple[str, str]] = []
        token = ""
        while True:
            page = await check.roadmap(["home"], None, None, page_size=3, page_token=token)
            pages.append([c.key for c in page.campaigns])
            pairs += [(c.overlap.campaign.key, c.overlap.other.key) for c in page.collisions]
            token = page.next_page_token
            if not token:
                return pages, pairs

    pages, pairs = run_with_catalog(tmp_path, scenario)

    # a pairs with the 6 after it, b with 5: each fills a page; c (4) and d (3) share one.
    assert pages == [["a"], ["b"], ["c", "d"], ["e", "f", "g"]]
    assert len(pairs) == len(set(pairs)) == 21


@pytest.mark.parametrize(
    ("later", "message"),
    [
        ({"placements": ["cart"]}, "page_token: was issued for other placements"),
        ({"start": at(12, 9)}, "start_time: is not the first page's"),
        ({"end": at(12, 30)}, "end_time: is not the first page's"),
        ({"token": "not-ours"}, "page_token: is not a token this service issued"),
        ({"token": "e30="}, "page_token: is not a token this service issued"),
        *[
            ({"token": forged(text)}, "page_token: is not a token this service issued")
            for text in (
                "[]",
                "[" * 3000,
                TOKEN_FIELDS.replace('"priority": 0', '"priority": Infinity'),
                TOKEN_FIELDS.replace('"priority": 0', '"priority": true'),
                TOKEN_FIELDS.replace('"priority": 0', '"priority": 1.5'),
                TOKEN_FIELDS.replace("+00:00", "+14:00").replace("2026-12-02", "0001-01-01"),
                TOKEN_FIELDS.replace('"key": "a"', '"key": 7'),
            )
        ],
        ({"page_size": -1}, "page_size: must not be negative"),
    ],
)
def test_roadmap__later_page_of_another_query__invalid_argument_naming_the_field(
    tmp_path: Path, later: dict[str, object], message: str
) -> None:
    async def scenario(catalog: Catalog[decision_pb2.Campaign]) -> None:
        for key in ("a", "b", "c"):
            await catalog.create(stored(key))
        check = RoadmapCheck(catalog, SizingSegments({"true": 40}), now=lambda: NOW)  # type: ignore[arg-type]
        first = await check.roadmap(["home"], at(12, 2), at(12, 20), page_size=1)
        assert first.next_page_token
        # The same query, its period left unset, goes on where the first ended.
        second = await check.roadmap(
            ["home"], None, None, page_size=1, page_token=first.next_page_token
        )
        assert [c.key for c in second.campaigns] == ["b"]
        with pytest.raises(InvalidArgument, match=message):
            await check.roadmap(
                later.get("placements", ["home"]),  # type: ignore[arg-type]
                later.get("start", at(12, 2)),  # type: ignore[arg-type]
                later.get("end"),  # type: ignore[arg-type]
                page_size=later.get("page_size", 1),  # type: ignore[arg-type]
                page_token=later.get("token", first.next_page_token),  # type: ignore[arg-type]
            )

    run_with_catalog(tmp_path, scenario)


# -- the calendar of `tessera roadmap` -----------------------------------------


def test_columns__weeks__from_this_weeks_monday() -> None:
    spans = columns(None, 3, None, dt.date(2026, 12, 2))

    assert spans == [
        (dt.date(2026, 11, 30), dt.date(2026, 12, 7)),
        (dt.date(2026, 12, 7), dt.date(2026, 12, 14)),
        (dt.date(2026, 12, 14), dt.date(2026, 12, 21)),
    ]


def test_columns__months__calendar_months_across_the_year() -> None:
    spans = columns(None, None, 3, dt.date(2026, 12, 2))

    assert spans == [
        (dt.date(2026, 12, 1), dt.date(2027, 1, 1)),
        (dt.date(2027, 1, 1), dt.date(2027, 2, 1)),
        (dt.date(2027, 2, 1), dt.date(2027, 3, 1)),
    ]


def test_request_for__no_from__asks_from_now_though_the_calendar_starts_monday() -> None:
    args = argparse.Namespace(placement=["home"], start=None)
    spans = columns(None, 2, None, NOW.date())

    request = request_for(args, spans, NOW)

    # Overlaps from today on: a Monday before the campaigns existed misleads.
    assert request.start_time.ToDatetime(dt.UTC) == NOW
    assert request.end_time.ToDatetime(dt.UTC) == at(12, 14)
    assert list(request.placements) == ["home"]


def test_request_for__from_given__asks_from_that_day() -> None:
    args = argparse.Namespace(placement=[], start=dt.date(2026, 11, 2))
    spans = columns(args.start, 1, None, NOW.date())

    request = request_for(args, spans, NOW)

    assert request.start_time.ToDatetime(dt.UTC) == at(11, 2)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        # These raised OverflowError with a traceback before asking anything.
        ({"start": dt.date(9999, 12, 1)}, "--from 9999-12-01: the calendar ends on 9999-12-31"),
        ({"start": dt.date(9999, 12, 1), "months": 1}, "the calendar ends on 9999-12-31"),
        ({"timeout": 0.0}, "--timeout must be more than 0 seconds"),
        ({"weeks": 0}, "--weeks must be 1 to 104"),
        ({"months": 25}, "--months must be 1 to 24"),
    ],
)
def test_roadmap_cli__options_out_of_range__exit_2_with_one_line(
    options: dict[str, Any], problem: str
) -> None:
    args = argparse.Namespace(
        **{
            "placement": [],
            "start": None,
            "weeks": None,
            "months": None,
            "output": "table",
            "address": "127.0.0.1:9",  # never asked: the options are refused first
            "timeout": 1.0,
            **options,
        }
    )
    out, err = io.StringIO(), io.StringIO()

    assert run(args, out, err) == 2
    assert err.getvalue().strip().splitlines() == [err.getvalue().strip()]
    assert problem in err.getvalue()
    assert out.getvalue() == ""


def test_collisions__stored_campaigns_unreadable__no_collisions_not_an_error(
    tmp_path: Path,
) -> None:
    class Broken:
        async def page(self, page_size: int, page_token: str) -> Any:
            raise OSError("database went away")

    check = RoadmapCheck(Broken(), SizingSegments({}))  # type: ignore[arg-type]

    assert asyncio.run(check.collisions(stored("mine"))) == []
