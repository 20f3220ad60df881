"""Cold history that rules read: count(...) and sum(...) over tracked events.

Events are tracked with explicit timestamps days apart; Decide (segments
evaluated in process from the Identify answer) and EvaluateSegments (by
profile id, through GetProfile) must give the same answer. A window of N
days is the current UTC day and the N - 1 days before it (docs/rules.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from scenario import campaign, cookie, decide, eventually, segment, track, unique, visitor

from tessera.common.v1 import common_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2

DAYS = dt.timedelta(days=1)


def evaluated(tessera: Any, profile_id: str, keys: set[str]) -> set[str]:
    """The profile's segments among `keys`, from EvaluateSegments by profile id."""
    reply = tessera.segments.EvaluateSegments(
        segments_pb2.EvaluateSegmentsRequest(profile_id=profile_id, channel=common_pb2.CHANNEL_WEB)
    )
    return set(reply.segment_keys) & keys


def decided(tessera: Any, who: common_pb2.Identity, keys: set[str], placement: str) -> set[str]:
    """The profile's segments among `keys`, from Decide."""
    return set(decide(tessera, who, placements=[placement]).segment_keys) & keys


def json_segment(tessera: Any, key: str, rule: str) -> None:
    tessera.segments.CreateSegment(
        segments_pb2.CreateSegmentRequest(
            segment=segments_pb2.Segment(key=key, name=key, rule=segments_pb2.Rule(json_logic=rule))
        )
    )


def test_decide__design_brief_rule__juicer_browsers_in_fr_be_who_did_not_buy_in_30_days(
    tessera: Any,
) -> None:
    audience, placement = unique("juicer-prospects"), unique("hero")
    segment(
        tessera,
        audience,
        'trait.country in ["FR", "BE"] and session.category_views("juicers") >= 2 '
        "and count(purchase, within=30d) == 0",
    )
    promo = campaign(tessera, unique("juicer-intro"), [placement], [audience])
    people = {
        "never bought": (cookie(), None),
        "bought 10 days ago": (cookie(), 10 * DAYS),
        "bought 45 days ago": (cookie(), 45 * DAYS),
    }
    for who, ago in people.values():
        profile_id = visitor(tessera, who, country="BE")
        if ago is not None:
            track(tessera, profile_id, "purchase", ago=ago, category="blenders", revenue=60.0)
        track(tessera, profile_id, "product_view", category="juicers", product_id="j-1")
        track(tessera, profile_id, "product_view", category="juicers", product_id="j-2")
    eventually(
        lambda: (
            decide(tessera, people["never bought"][0], placements=[placement])
            .decisions[0]
            .campaign_key
        )
    )

    shown = {
        name: decide(tessera, who, placements=[placement]).decisions[0].campaign_key
        for name, (who, _) in people.items()
    }

    assert shown == {
        "never bought": promo.key,
        "bought 10 days ago": "",
        "bought 45 days ago": promo.key,
    }


def test_decide_and_evaluate_segments__windows_with_and_without_filter__agree(
    tessera: Any,
) -> None:
    recent = unique("bought-30d")
    juicers = unique("juicers-90d")
    big = unique("spent-365d")
    store = unique("store-juicer-revenue-json")
    segment(tessera, recent, "count(purchase, within=30d) >= 1")
    segment(tessera, juicers, 'count(purchase where category == "juicers", within=90d) >= 2')
    segment(tessera, big, "sum(purchase.revenue, within=365d) > 300")
    json_segment(
        tessera,
        store,
        '{">=": [{"sum": ["purchase", "revenue", "400d", {"channel": "store"}]}, 100]}',
    )
    keys = {recent, juicers, big, store}
    placement = unique("windows")
    campaign(tessera, unique("any-window"), [placement], [recent])
    purchases: dict[str, list[tuple[dt.timedelta, str, float, int]]] = {
        "none": [],
        "juicers 20 and 80 days ago": [
            (20 * DAYS, "juicers", 50.0, common_pb2.CHANNEL_WEB),
            (80 * DAYS, "juicers", 60.0, common_pb2.CHANNEL_WEB),
        ],
        "juicers 80 and 100 days ago, tv in store 200 days ago": [
            (80 * DAYS, "juicers", 50.0, common_pb2.CHANNEL_WEB),
            (100 * DAYS, "juicers", 50.0, common_pb2.CHANNEL_WEB),
            (200 * DAYS, "tv", 400.0, common_pb2.CHANNEL_STORE),
        ],
        "tv 370 days ago in store": [(370 * DAYS, "tv", 999.0, common_pb2.CHANNEL_STORE)],
    }
    people: dict[str, tuple[common_pb2.Identity, str]] = {}
    for name, events in purchases.items():
        who = cookie()
        profile_id = visitor(tessera, who)
        for ago, category, revenue, channel in events:
            track_on(
                tessera, profile_id, "purchase", ago, channel, category=category, revenue=revenue
            )
        people[name] = (who, profile_id)
    eventually(lambda: decided(tessera, people["juicers 20 and 80 days ago"][0], keys, placement))

    by_decide = {name: decided(tessera, who, keys, placement) for name, (who, _) in people.items()}
    by_evaluate = {name: evaluated(tessera, pid, keys) for name, (_, pid) in people.items()}

    assert (
        by_decide
        == by_evaluate
        == {
            "none": set(),
            "juicers 20 and 80 days ago": {recent, juicers},
            "juicers 80 and 100 days ago, tv in store 200 days ago": {big, store},
            "tv 370 days ago in store": {store},
        }
    )


def test_evaluate_segments__purchase_31_days_ago__outside_30d_and_29_days_ago_inside(
    tessera: Any,
) -> None:
    recent = unique("recent-buyer")
    segment(tessera, recent, "count(purchase, within=30d) > 0")
    placement = unique("edge")
    campaign(tessera, unique("edge-campaign"), [placement], [recent])
    outside, inside = cookie(), cookie()
    track(tessera, visitor(tessera, outside), "purchase", ago=31 * DAYS, revenue=10.0)
    inside_id = visitor(tessera, inside)
    track(tessera, inside_id, "purchase", ago=29 * DAYS, revenue=10.0)
    eventually(lambda: decide(tessera, inside, placements=[placement]).decisions[0].campaign_key)

    outside_id = visitor(tessera, outside)

    assert evaluated(tessera, outside_id, {recent}) == set()
    assert evaluated(tessera, inside_id, {recent}) == {recent}
    assert decided(tessera, outside, {recent}, placement) == set()
    assert decided(tessera, inside, {recent}, placement) == {recent}


def test_identify__two_profiles_merge__their_windows_add_up(tessera: Any) -> None:
    two = unique("two-purchases")
    segment(tessera, two, 'count(purchase where category == "juicers", within=30d) == 2')
    app, web, login = cookie(), cookie(), common_pb2.Identity(type="user_id", value=unique("u"))
    for who in (app, web):
        track(tessera, visitor(tessera, who), "purchase", ago=3 * DAYS, category="juicers")
    before = {evaluated(tessera, visitor(tessera, who), {two}) == set() for who in (app, web)}

    merged = tessera.profiles.Identify(profiles_pb2.IdentifyRequest(identities=[app, web, login]))

    assert before == {True}
    assert merged.merged_profile_ids
    assert evaluated(tessera, merged.profile.profile_id, {two}) == {two}
    series = {
        (s.event_type, s.filter_property, s.filter_value): list(s.counts)
        for s in merged.profile.event_history.series
    }
    assert series[("purchase", "category", "juicers")] == [2]


def test_delete_profile__erased__history_gone_and_identity_starts_afresh(tessera: Any) -> None:
    who = cookie()
    profile_id = visitor(tessera, who)
    track(tessera, profile_id, "purchase", ago=2 * DAYS, revenue=20.0)
    held = tessera.profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=profile_id))

    tessera.profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=profile_id))
    again = tessera.profiles.Identify(profiles_pb2.IdentifyRequest(identities=[who]))

    assert {(s.event_type, s.filter_value) for s in held.profile.event_history.series} == {
        ("purchase", ""),
        ("purchase", "web"),
    }
    assert again.created and again.profile.profile_id != profile_id
    assert len(again.profile.event_history.series) == 0


def track_on(
    tessera: Any, profile_id: str, kind: str, ago: dt.timedelta, channel: int, **properties: Any
) -> None:
    """Track one event stamped `ago` before now, on a channel."""
    event = common_pb2.Event(
        event_id=unique("ev"), profile_id=profile_id, type=kind, channel=channel
    )  # type: ignore[arg-type]
    event.timestamp.FromDatetime(dt.datetime.now(dt.UTC) - ago)
    event.properties.update(properties)
    tessera.profiles.Track(profiles_pb2.TrackRequest(event=event))
