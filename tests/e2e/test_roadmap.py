"""The roadmap check and `tessera roadmap` through the generated clients (docs/roadmap.md).

The suite is shared by every end-to-end test, so the population here is
marked with a trait of this run's own and every segment reads it: the sizes
are known whatever else the suite holds.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from cli_runner import Tessera, use_suite
from scenario import cookie, eventually, segment, unique, visitor

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2
from tessera.segments.v1 import segments_pb2
from tessera.suite import Suite

pytestmark = pytest.mark.e2e

# (age, country) of the seeded people: under 40 are 6, in France 5, both 3.
PEOPLE = [
    (25, "FR"),
    (31, "FR"),
    (38, "FR"),
    (22, "BE"),
    (29, "DE"),
    (35, "BE"),
    (45, "FR"),
    (52, "FR"),
    (61, "DE"),
    (70, "BE"),
]
YOUNG_AND_FRENCH = 3


@pytest.fixture(scope="module")
def population(tessera: Any) -> dict[str, str]:
    """Ten people of this run; segments `young` (6) and `french` (5) over them, keyed."""
    run = uuid.uuid4().hex
    for age, country in PEOPLE:
        visitor(tessera, cookie(), roadmap_run=run, age=age, country=country)
    keys = {"young": unique("young"), "french": unique("french")}
    mine = f'trait.roadmap_run == "{run}"'
    segment(tessera, keys["young"], f"{mine} and trait.age < 40")
    segment(tessera, keys["french"], f'{mine} and trait.country == "FR"')
    both = segments_pb2.EstimateSizeRequest(
        rule=segments_pb2.Rule(text=f'segment("{keys["young"]}") and segment("{keys["french"]}")')
    )
    # The segment service's projection follows the profile feed: wait for it.
    assert eventually(
        lambda: tessera.segments.EstimateSize(both).members == YOUNG_AND_FRENCH, timeout_s=20
    )
    return keys


def running(
    tessera: Any,
    placements: list[str],
    audience: list[str],
    priority: int = 0,
    channels: list[int] | None = None,
    windows: list[tuple[int, int, int, int]] | None = None,
    status: int = decision_pb2.CAMPAIGN_STATUS_RUNNING,
    key: str = "",
) -> decision_pb2.CreateCampaignResponse:
    message = decision_pb2.Campaign(
        key=key or unique("plan"),
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=placements,
        audience_segment_keys=audience,
        priority=priority,
        channels=channels or [],
        status=status,
    )
    message.variants.add(key="treatment", weight=1).payload.update({"title": "x"})
    for start_month, start_day, end_month, end_day in windows or []:
        message.schedule.windows.add(
            start_month=start_month, start_day=start_day, end_month=end_month, end_day=end_day
        )
    reply: decision_pb2.CreateCampaignResponse = tessera.decision.CreateCampaign(
        decision_pb2.CreateCampaignRequest(campaign=message)
    )
    return reply


def test_create_campaign__overlapping_running_campaign__reported_with_estimated_overlap(
    tessera: Any, population: dict[str, str]
) -> None:
    placement = unique("hero")
    first = running(tessera, [placement], [population["young"]], priority=10)

    second = running(tessera, [placement, unique("side")], [population["french"]], priority=5)

    (collision,) = second.collisions
    estimate = tessera.segments.EstimateSize(
        segments_pb2.EstimateSizeRequest(
            rule=segments_pb2.Rule(
                text=f'segment("{population["french"]}") and segment("{population["young"]}")'
            )
        )
    )
    assert first.collisions == []
    assert collision.campaign_key == first.campaign.key
    assert list(collision.placements) == [placement]
    assert collision.estimated_overlap == YOUNG_AND_FRENCH == estimate.members
    assert collision.overlap_fraction == pytest.approx(YOUNG_AND_FRENCH / estimate.total)
    assert collision.first_day.ToDatetime().date() == dt.datetime.now(dt.UTC).date()
    assert f"about {YOUNG_AND_FRENCH} profiles" in collision.summary
    assert f"{first.campaign.key} wins there (priority 10 over 5)" in collision.summary


def test_update_campaign__draft_moved_onto_a_running_placement__reports_it(
    tessera: Any, population: dict[str, str]
) -> None:
    placement = unique("hero")
    live = running(tessera, [placement], [population["young"]])
    draft = running(
        tessera, [unique("elsewhere")], [], status=decision_pb2.CAMPAIGN_STATUS_DRAFT
    ).campaign
    draft.placements[:] = [placement]

    updated = tessera.decision.UpdateCampaign(
        decision_pb2.UpdateCampaignRequest(campaign=draft, expected_version=draft.version)
    )

    (collision,) = updated.collisions
    assert collision.campaign_key == live.campaign.key
    assert collision.estimated_overlap == 6  # everyone (the draft's audience) and young


@pytest.mark.parametrize("apart", ["placement", "channels", "windows"])
def test_create_campaign__apart_in_one_dimension__no_collision(
    tessera: Any, population: dict[str, str], apart: str
) -> None:
    placement = unique("hero")
    audience = [population["young"]]
    running(
        tessera,
        [placement],
        audience,
        channels=[common_pb2.CHANNEL_WEB],
        windows=[(12, 20, 12, 26)],
    )

    second = running(
        tessera,
        [unique("other")] if apart == "placement" else [placement],
        audience,
        channels=[common_pb2.CHANNEL_APP, common_pb2.CHANNEL_EMAIL]
        if apart == "channels"
        else [common_pb2.CHANNEL_WEB],
        windows=[(7, 1, 8, 31)] if apart == "windows" else [(12, 24, 1, 5)],
    )

    assert list(second.collisions) == []


def test_create_campaign__disjoint_audiences__no_collision(
    tessera: Any, population: dict[str, str]
) -> None:
    placement = unique("hero")
    old = unique("old")
    segment(tessera, old, "trait.age >= 200")  # no one
    running(tessera, [placement], [population["young"]])

    assert list(running(tessera, [placement], [old]).collisions) == []


def test_roadmap_cli__two_colliding_campaigns__calendar_with_the_overlap(
    tessera: Any,
    population: dict[str, str],
    suite: Suite,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    placement = unique("hero")
    first = running(tessera, [placement], [population["young"]], priority=10).campaign
    second = running(tessera, [placement], [population["french"]], priority=5).campaign
    use_suite(monkeypatch, suite)

    run = Tessera(capsys)("roadmap", "--placement", placement, "--weeks", "6")

    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith("Roadmap ") and "a column per week" in lines[0]
    assert placement in lines
    row = next(line for line in lines if line.startswith(first.key))
    assert row.split()[1:4] == ["10", "-", "running"]
    assert row.count("██") == 6  # always on: live every week
    overlap = next(line for line in lines if f"{first.key} vs {second.key}" in line)
    assert f"{YOUNG_AND_FRENCH} (" in overlap
    assert f"{first.key} (priority 10 over 5)" in overlap


def test_roadmap_cli__json__the_get_roadmap_answer(
    tessera: Any,
    population: dict[str, str],
    suite: Suite,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    placement = unique("hero")
    first = running(tessera, [placement], [population["young"]], priority=3).campaign
    second = running(tessera, [placement], [population["french"]], priority=3).campaign
    use_suite(monkeypatch, suite)

    run = Tessera(capsys)("roadmap", "--placement", placement, "-o", "json")

    answer = json.loads(run.out)
    assert [c["key"] for c in answer["campaigns"]] == sorted([first.key, second.key])
    (pair,) = answer["collisions"]
    assert pair["campaign_key"] == min(first.key, second.key)
    assert pair["collision"]["estimated_overlap"] == str(YOUNG_AND_FRENCH)


def test_get_roadmap__pages_of_one__each_campaign_once_each_pair_on_its_winners_page(
    tessera: Any, population: dict[str, str]
) -> None:
    from tessera.decision.roadmap_cli import whole_roadmap

    placement = unique("hero")
    # Keys of the longest a campaign may have (55): a page token holds the last one.
    longest = [unique("plan").ljust(55, "x") for _ in range(3)]
    keys = [
        running(tessera, [placement], [population["young"]], 3, key=longest[0]).campaign.key,
        running(tessera, [placement], [population["french"]], 2, key=longest[1]).campaign.key,
        running(tessera, [placement], [population["young"]], 1, key=longest[2]).campaign.key,
    ]
    request = decision_pb2.GetRoadmapRequest(placements=[placement], page_size=1)

    pages = []
    token = ""
    while True:
        ask = decision_pb2.GetRoadmapRequest()
        ask.CopyFrom(request)
        ask.page_token = token
        page = tessera.decision.GetRoadmap(ask)
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    whole = whole_roadmap(tessera.decision, request, timeout=10)

    assert [[c.key for c in page.campaigns] for page in pages] == [[k] for k in keys]
    assert [
        [(c.campaign_key, c.collision.campaign_key) for c in page.collisions] for page in pages
    ] == [
        [(keys[0], keys[1]), (keys[0], keys[2])],
        [(keys[1], keys[2])],
        [],
    ]
    assert len({page.start_time.ToDatetime() for page in pages}) == 1
    assert [c.key for c in whole.campaigns] == keys and whole.next_page_token == ""
    assert len(whole.collisions) == 3


def test_roadmap_cli__nothing_listening__unavailable_on_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tessera.suite import free_port

    address = f"127.0.0.1:{free_port()}"

    run = Tessera(capsys)("roadmap", "--address", address, "--timeout", "1")

    assert run.code == 1
    assert run.out == ""
    assert run.err.startswith("UNAVAILABLE: ") or run.err.startswith("DEADLINE_EXCEEDED: ")
