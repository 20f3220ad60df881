"""The roadmap's rules in Decide, end to end: budgets, caps, conflict groups, ranges, explain.

Each scenario runs twice: on the session's suite (PostgreSQL and Redis:
counters in one Lua script per charge) and on a suite of embedded defaults
(SQLite, counters in process). Both run the decision service's default
settings: a budget of 10 per day, conflict groups held for a day
(docs/decide.md).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from scenario import cookie, decide, email, eventually, segment, track, unique, visitor

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.experiments.v1 import experiments_pb2_grpc
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.segments.v1 import segments_pb2_grpc
from tessera.sticky import TRAIT_PREFIX
from tessera.suite import start_suite

pytestmark = pytest.mark.e2e

WEB, APP, EMAIL = common_pb2.CHANNEL_WEB, common_pb2.CHANNEL_APP, common_pb2.CHANNEL_EMAIL
DAY_S = 86_400


class Clients:
    """Generated clients of one running suite."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.channels = {name: grpc.insecure_channel(a) for name, a in addresses.items()}
        self.decision = decision_pb2_grpc.DecisionServiceStub(self.channels["decision"])
        self.profiles = profiles_pb2_grpc.ProfileServiceStub(self.channels["profiles"])
        self.segments = segments_pb2_grpc.SegmentServiceStub(self.channels["segments"])
        self.experiments = experiments_pb2_grpc.ExperimentServiceStub(self.channels["experiments"])

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


@pytest.fixture(scope="module", params=["postgres+redis", "embedded"])
def suite_of(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "postgres+redis":
        yield request.getfixturevalue("tessera")
        return
    env = {
        "TESSERA_DATA_DIR": tempfile.mkdtemp(prefix="tessera-e2e-embedded-"),
        "TESSERA_DATABASE_URL": "",
        "TESSERA_REDIS_URL": "",
    }
    embedded = start_suite(env, free_ports=True)
    clients = Clients(embedded.addresses)
    try:
        yield clients
    finally:
        clients.close()
        embedded.stop()


def create(
    tessera: Any, key: str, placements: list[str], audience: list[str], **fields: Any
) -> str:
    message = decision_pb2.Campaign(
        key=key,
        name=key,
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=placements,
        audience_segment_keys=audience,
        status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
        **fields,
    )
    variant = message.variants.add(key="treatment", weight=1)
    variant.payload.update({"title": key})
    tessera.decision.CreateCampaign(decision_pb2.CreateCampaignRequest(campaign=message))
    return key


def shows(tessera: Any, key: str, placement: str, channel: int = WEB) -> bool:
    """Whether a newcomer is shown `key` on `placement` yet (definitions reach replicas)."""
    (decision,) = decide(tessera, cookie(), placements=[placement], channel=channel).decisions
    return decision.campaign_key == key


def explained(
    tessera: Any, *identities: common_pb2.Identity, placement: str, channel: int = WEB
) -> decision_pb2.Decision:
    reply = tessera.decision.Decide(
        decision_pb2.DecideRequest(
            identities=identities, channel=channel, placements=[placement], explain=True
        ),
        timeout=5,
    )
    decision: decision_pb2.Decision = reply.decisions[0]
    return decision


def has_sticky_trait(tessera: Any, profile_id: str) -> bool:
    profile = tessera.profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile
    return any(name.startswith(TRAIT_PREFIX) for name in profile.traits.fields)


def test_decide__email_web_then_login_on_app__one_variant_and_one_budget_for_the_person(
    suite_of: Any,
) -> None:
    # Known by e-mail (the newsletter), anonymous on the web, then logging in
    # on the app with both: the two profiles merge. Each decision of "omni"
    # costs 3 of the day's budget of 10. Charged apart, the merged person
    # would have 6 + 3 = 9 after the login and get "omni" once more; folded
    # into one budget they have 9 after the login and the fourth decision
    # goes to the free campaign, whatever the channel.
    tessera = suite_of
    everyone, placement = unique("all"), unique("omni-slot")
    segment(tessera, everyone, "true")
    omni = create(tessera, unique("omni"), [placement], [everyone], priority=5, pressure_cost=3)
    plain = create(tessera, unique("plain"), [placement], [everyone], priority=1)
    assert eventually(lambda: shows(tessera, omni, placement))
    account, browser = email(), cookie()

    on_email = decide(tessera, account, placements=[placement], channel=EMAIL)
    on_web = decide(tessera, browser, placements=[placement], channel=WEB)
    for shown in (on_email, on_web):
        assert eventually(lambda shown=shown: has_sticky_trait(tessera, shown.profile_id))
    logged_in = decide(tessera, browser, account, placements=[placement], channel=APP)
    again_by_email = explained(tessera, account, placement=placement, channel=EMAIL)
    again_on_web = decide(tessera, browser, placements=[placement], channel=WEB)

    assert on_email.profile_id != on_web.profile_id
    assert logged_in.profile_id == on_email.profile_id  # the older profile survives
    first = on_email.decisions[0]
    assert [d.decisions[0].campaign_key for d in (on_email, on_web, logged_in)] == [omni] * 3
    assert logged_in.decisions[0].variant_key == first.variant_key
    assert again_by_email.campaign_key == plain
    assert "skipped " + omni + ": pressure budget (9 spent + 3 over 10)" in again_by_email.reasons
    assert again_on_web.decisions[0].campaign_key == plain


def spent_by(tessera: Any, identity: common_pb2.Identity, probe_placement: str) -> str:
    """The reason that names the person's spent budget, read without spending it.

    The probe campaign costs more than the whole budget, so it is never shown
    (nothing is charged) and its skip reason says what was spent.
    """
    reasons = decide(tessera, identity, placements=[probe_placement]).decisions[0].reasons
    return next((r for r in reasons if "pressure budget" in r), "")


def test_decide__login_merged_by_a_backend_not_by_decide__budgets_folded_from_the_feed(
    suite_of: Any,
) -> None:
    # The login is an Identify a backend makes itself, so no Decide sees the
    # merge: the change feed's merge record folds the counters.
    tessera = suite_of
    everyone, placement, probe_at = unique("all"), unique("feed-slot"), unique("probe-slot")
    segment(tessera, everyone, "true")
    omni = create(tessera, unique("omni"), [placement], [everyone], pressure_cost=3)
    probe = create(tessera, unique("probe"), [probe_at], [everyone], pressure_cost=11)
    assert eventually(lambda: shows(tessera, omni, placement))
    account, browser = email(), cookie()
    visitor(tessera, account)  # known by e-mail first: the older profile survives

    on_web = decide(tessera, browser, placements=[placement])
    on_email = decide(tessera, account, placements=[placement], channel=EMAIL)
    tessera.profiles.Identify(profiles_pb2.IdentifyRequest(identities=[browser, account]))
    folded = f"skipped {probe}: pressure budget (6 spent + 11 over 10)"
    seen = eventually(lambda: spent_by(tessera, account, probe_at) == folded)

    assert [on_web.decisions[0].campaign_key, on_email.decisions[0].campaign_key] == [omni] * 2
    assert on_web.profile_id != on_email.profile_id
    assert seen, spent_by(tessera, account, probe_at)


def capped_over_fallback(tessera: Any, slot: str, max_decisions: int) -> tuple[str, str, str]:
    """A placement, a campaign for everyone capped at `max_decisions` a day, and a fallback.

    The capped one has the higher priority; returns once a newcomer is shown it.
    """
    everyone, placement = unique("all"), unique(slot)
    segment(tessera, everyone, "true")
    cap = decision_pb2.FrequencyCap(max_decisions=max_decisions)
    cap.period.FromSeconds(DAY_S)
    capped = create(
        tessera, unique("capped"), [placement], [everyone], priority=5, frequency_cap=cap
    )
    fallback = create(tessera, unique("fallback"), [placement], [everyone], priority=1)
    assert eventually(lambda: shows(tessera, capped, placement))
    return placement, capped, fallback


def test_decide__frequency_cap__n_decisions_then_the_next_campaign_with_the_reason(
    suite_of: Any,
) -> None:
    tessera = suite_of
    placement, capped, fallback = capped_over_fallback(tessera, "cap-slot", max_decisions=3)
    someone = cookie()

    shown = [
        decide(tessera, someone, placements=[placement], channel=channel).decisions[0]
        for channel in (WEB, APP, WEB, EMAIL, WEB)
    ]

    assert [d.campaign_key for d in shown] == [capped, capped, capped, fallback, fallback]
    reason = f"skipped {capped}: frequency cap (3 per {DAY_S}s reached)"
    assert reason in shown[3].reasons
    assert not any(r.startswith("skipped") for r in shown[0].reasons)


def retried(
    tessera: Any, identity: common_pb2.Identity, placement: str, request_id: str
) -> decision_pb2.Decision:
    reply = tessera.decision.Decide(
        decision_pb2.DecideRequest(
            identities=[identity], channel=WEB, placements=[placement], request_id=request_id
        ),
        timeout=5,
    )
    decision: decision_pb2.Decision = reply.decisions[0]
    return decision


def test_decide__retried_with_its_request_id__same_campaign_and_the_cap_counted_once(
    suite_of: Any,
) -> None:
    # A channel whose answer was lost retries with the same request_id: the
    # retry shows the campaign again and the cap of 1 is still not exceeded
    # for the next new request, which gets the next campaign with the reason.
    tessera = suite_of
    placement, capped, fallback = capped_over_fallback(tessera, "retry-slot", max_decisions=1)
    someone = cookie()

    first = retried(tessera, someone, placement, "r1")
    retry = retried(tessera, someone, placement, "r1")
    next_request = retried(tessera, someone, placement, "r2")
    late_retry = retried(tessera, someone, placement, "r1")

    assert [d.campaign_key for d in (first, retry, next_request, late_retry)] == [
        capped,
        capped,
        fallback,
        capped,
    ]
    assert f"skipped {capped}: frequency cap (1 per {DAY_S}s reached)" in next_request.reasons


def test_decide__request_id_with_a_control_character_or_too_long__invalid_argument_naming_it(
    suite_of: Any,
) -> None:
    tessera = suite_of
    refused = []
    for bad in ("r1\n", "r1\x1b", "r" * 257):
        with pytest.raises(grpc.RpcError) as caught:
            retried(tessera, cookie(), "home", bad)
        refused.append((caught.value.code(), "request_id" in (caught.value.details() or "")))

    assert refused == [(grpc.StatusCode.INVALID_ARGUMENT, True)] * 3


def test_decide__concurrent_decides_of_one_person__cap_never_exceeded(suite_of: Any) -> None:
    # Several tabs and channels at once: the charge is atomic and checks the
    # cap again, so exactly max_decisions of them get the capped campaign.
    tessera = suite_of
    everyone, placement = unique("all"), unique("race-slot")
    segment(tessera, everyone, "true")
    cap = decision_pb2.FrequencyCap(max_decisions=3)
    cap.period.FromSeconds(DAY_S)
    capped = create(
        tessera, unique("capped"), [placement], [everyone], priority=5, frequency_cap=cap
    )
    fallback = create(tessera, unique("fallback"), [placement], [everyone], priority=1)
    assert eventually(lambda: shows(tessera, capped, placement))
    someone = cookie()

    with ThreadPoolExecutor(max_workers=12) as pool:
        shown = list(
            pool.map(
                lambda _: (
                    decide(tessera, someone, placements=[placement]).decisions[0].campaign_key
                ),
                range(12),
            )
        )

    assert sorted(shown) == sorted([capped] * 3 + [fallback] * 9)


def test_decide__conflict_group__first_shown_keeps_the_group_until_no_longer_eligible(
    suite_of: Any,
) -> None:
    # The person got "first" from the group; a better campaign of the same
    # group that starts later does not take its place (no flicker) while
    # "first" stays eligible. Paused, it frees the group.
    tessera = suite_of
    everyone, group, placement = unique("all"), unique("promo"), unique("group-slot")
    segment(tessera, everyone, "true")
    first = create(
        tessera, unique("first"), [placement], [everyone], priority=1, conflict_group=group
    )
    assert eventually(lambda: shows(tessera, first, placement))
    someone = cookie()
    before = decide(tessera, someone, placements=[placement]).decisions[0]
    better = create(
        tessera, unique("better"), [placement], [everyone], priority=9, conflict_group=group
    )
    assert eventually(lambda: shows(tessera, better, placement))

    held = [explained(tessera, someone, placement=placement) for _ in range(3)]
    stored = tessera.decision.GetCampaign(decision_pb2.GetCampaignRequest(key=first)).campaign
    stored.status = decision_pb2.CAMPAIGN_STATUS_PAUSED
    tessera.decision.UpdateCampaign(decision_pb2.UpdateCampaignRequest(campaign=stored))
    freed = eventually(
        lambda: decide(tessera, someone, placements=[placement]).decisions[0].campaign_key == better
    )

    assert before.campaign_key == first
    assert [d.campaign_key for d in held] == [first] * 3
    assert f"skipped {better}: conflict group ({group} held by {first})" in held[0].reasons
    assert freed


def test_decide__probability_range__cart_add_changes_the_very_next_decision(
    suite_of: Any,
) -> None:
    tessera = suite_of
    everyone, placement = unique("all"), unique("incentive-slot")
    segment(tessera, everyone, "true")
    probe = decide(tessera, cookie(), placements=[placement])
    fresh = probe.conversion_probability  # every new session starts here
    bounds = decision_pb2.ProbabilityRange(min=min(fresh + 0.01, 1.0), max=1.0)
    incentive = create(
        tessera,
        unique("incentive"),
        [placement],
        [everyone],
        priority=5,
        conversion_probability=bounds,
    )
    default = create(tessera, unique("default"), [placement], [everyone], priority=1)
    assert eventually(lambda: shows(tessera, default, placement))
    someone = cookie()
    profile_id = visitor(tessera, someone)

    before = explained(tessera, someone, placement=placement)
    for product in ("sku-1", "sku-2", "sku-3"):
        track(tessera, profile_id, "add_to_cart", product_id=product, price=20.0)
    after = decide(tessera, someone, placements=[placement])

    assert before.campaign_key == default
    assert any(r.startswith(f"skipped {incentive}: probability range") for r in before.reasons)
    assert after.conversion_probability >= bounds.min
    assert after.decisions[0].campaign_key == incentive
    assert f"probability range {bounds.min:g} to 1" in after.decisions[0].reasons


def test_decide__explain__says_why_each_other_campaign_of_the_placement_was_skipped(
    suite_of: Any,
) -> None:
    tessera = suite_of
    everyone, nobody, placement = unique("all"), unique("nobody"), unique("explain-slot")
    segment(tessera, everyone, "true")
    segment(tessera, nobody, "false")
    winner = create(tessera, unique("winner"), [placement], [everyone], priority=5)
    lower = create(tessera, unique("lower"), [placement], [everyone], priority=1)
    app_only = create(tessera, unique("app-only"), [placement], [everyone], channels=[APP])
    outsider = create(tessera, unique("outsider"), [placement], [nobody])
    draft = create(tessera, unique("draft"), [placement], [everyone])
    stored = tessera.decision.GetCampaign(decision_pb2.GetCampaignRequest(key=draft)).campaign
    stored.status = decision_pb2.CAMPAIGN_STATUS_DRAFT
    tessera.decision.UpdateCampaign(decision_pb2.UpdateCampaignRequest(campaign=stored))
    later = decision_pb2.Schedule(
        windows=[
            decision_pb2.CalendarWindow(
                name="never", start_month=2, start_day=30, end_month=2, end_day=31
            )
        ]
    )
    offseason = create(tessera, unique("offseason"), [placement], [everyone], schedule=later)
    assert eventually(lambda: shows(tessera, winner, placement))
    someone = cookie()

    plain = decide(tessera, someone, placements=[placement]).decisions[0]
    decision = eventually(
        lambda: (
            (d := explained(tessera, someone, placement=placement)).reasons
            and any(draft in r for r in d.reasons)
            and d
        )
    )

    assert decision.campaign_key == winner
    skipped = [r for r in decision.reasons if r.startswith("skipped")]
    assert sorted(skipped) == sorted(
        [
            f"skipped {lower}: lower priority (placement filled by {winner})",
            f"skipped {app_only}: channel",
            f"skipped {outsider}: audience",
            f"skipped {draft}: not running (draft)",
            f"skipped {offseason}: schedule (not live now)",
        ]
    )
    assert plain.campaign_key == winner
    assert not any(r.startswith("skipped") for r in plain.reasons)


def test_decide__calendar_window_campaign__opens_then_closes_on_its_schedule(
    suite_of: Any,
) -> None:
    # A promotion live only in a calendar window (today, in the schedule's
    # time zone) and only between two instants a few seconds apart: before
    # the start the evergreen campaign fills the placement, inside the
    # window the promotion (higher priority) does, after the end the
    # evergreen again. A second promotion whose window is another day of
    # the year never shows. Schedules are read at decision time, so no
    # campaign write happens between the three phases.
    tessera = suite_of
    everyone, placement = unique("all"), unique("calendar-slot")
    segment(tessera, everyone, "true")
    zone = "Europe/Paris"
    today = dt.datetime.now(ZoneInfo(zone)).date()
    elsewhere = today + dt.timedelta(days=100)
    evergreen = create(tessera, unique("evergreen"), [placement], [everyone], priority=1)
    opens = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8)
    closes = opens + dt.timedelta(seconds=4)
    schedule = decision_pb2.Schedule(
        windows=[
            decision_pb2.CalendarWindow(
                name="today",
                start_month=today.month,
                start_day=today.day,
                end_month=today.month,
                end_day=today.day,
            )
        ],
        time_zone=zone,
    )
    schedule.start_time.FromDatetime(opens)
    schedule.end_time.FromDatetime(closes)
    promotion = create(
        tessera, unique("promo"), [placement], [everyone], priority=9, schedule=schedule
    )
    other_day = decision_pb2.Schedule(
        windows=[
            decision_pb2.CalendarWindow(
                name="other-day",
                start_month=elsewhere.month,
                start_day=elsewhere.day,
                end_month=elsewhere.month,
                end_day=elsewhere.day,
            )
        ],
        time_zone=zone,
    )
    never = create(
        tessera, unique("other-day"), [placement], [everyone], priority=10, schedule=other_day
    )
    assert eventually(lambda: shows(tessera, evergreen, placement))

    before = explained(tessera, cookie(), placement=placement)
    assert dt.datetime.now(dt.UTC) < opens, "the suite was too slow to see the window closed"
    assert before.campaign_key == evergreen
    assert f"skipped {promotion}: schedule (not live now)" in before.reasons
    assert eventually(lambda: shows(tessera, promotion, placement), timeout_s=10)
    inside = explained(tessera, cookie(), placement=placement)
    assert inside.campaign_key == promotion or dt.datetime.now(dt.UTC) >= closes
    assert eventually(lambda: shows(tessera, evergreen, placement), timeout_s=10)
    after = explained(tessera, cookie(), placement=placement)

    assert dt.datetime.now(dt.UTC) >= closes
    assert after.campaign_key == evergreen
    assert f"skipped {promotion}: schedule (not live now)" in after.reasons
    assert f"skipped {never}: schedule (not live now)" in after.reasons
