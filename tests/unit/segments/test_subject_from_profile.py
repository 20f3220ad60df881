"""A profile message becomes a typed rule subject in one place."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import struct_pb2

from tessera.common.v1 import common_pb2
from tessera.profiles.domain.event_history import EventHistory, add_event
from tessera.profiles.domain.model import EventData
from tessera.profiles.transport.convert import event_history_message
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.domain import (
    DailySeries,
    EventHistoryView,
    SegmentDefinition,
    Subject,
    compile_rule,
    compile_segments,
    parse_text,
    utc_day,
)
from tessera.segments.domain.nodes import FEATURE_PATHS, SESSION_FIELDS
from tessera.segments.transport.convert import subject_from_profile

PROFILE = profiles_pb2.Profile(
    profile_id="p-1",
    identities=[common_pb2.Identity(type="email", value="sha256:x")],
    session=profiles_pb2.Session(
        page_views=3,
        category_views={"juicers": 2},
        product_views={"j1": 1},
        cart=[profiles_pb2.CartItem(product_id="j1", category="juicers", quantity=2, price=40.0)],
        searches=["Cold Press Juicer"],
    ),
    features=profiles_pb2.Features(
        rfm=profiles_pb2.Rfm(recency_days=14.0, frequency=2, monetary=150.0),
        lifetime_value=150.0,
        interests=[profiles_pb2.Interest(category="juicers", score=6.0)],
        conversion_probability=0.2,
    ),
)


def test_subject_from_profile__session_and_features__typed_and_read_by_rules() -> None:
    context = struct_pb2.Struct()
    context.update({"device": "mobile"})

    subject = subject_from_profile(PROFILE, common_pb2.CHANNEL_WEB, context)

    assert subject.session.category_views == {"juicers": 2}
    assert subject.features is not None and subject.features.rfm.frequency == 2
    rule = parse_text(
        'channel == "web" and context.device == "mobile" and has_identity("email") '
        'and session.category_views("juicers") >= 2 and session.cart_value == 80.0 '
        'and session.searched("juicer") and feature.interest("juicers") > 5 '
        "and feature.rfm.recency_days == 14 and feature.lifetime_value == 150"
    )
    assert compile_rule(rule)(subject) is True


@pytest.mark.parametrize("name", sorted(SESSION_FIELDS))
def test_compile__every_session_field__has_a_reader(name: str) -> None:
    subject = subject_from_profile(profiles_pb2.Profile(), 0, None)

    assert compile_rule(parse_text(f"session.{name} == 0"))(subject) is True


@pytest.mark.parametrize("path", sorted(FEATURE_PATHS))
def test_compile__every_feature__has_a_reader(path: tuple[str, ...]) -> None:
    bought = profiles_pb2.Profile(features=profiles_pb2.Features(rfm=profiles_pb2.Rfm(frequency=1)))
    subject = subject_from_profile(bought, 0, None)

    if path == ("rfm", "frequency"):
        assert compile_rule(parse_text("feature.rfm.frequency == 1"))(subject) is True
        return

    assert compile_rule(parse_text(f"feature.{'.'.join(path)} == 0"))(subject) is True


@pytest.mark.parametrize("recency_days", [-1.0, 0.0])
@pytest.mark.parametrize(
    "rule",
    [
        "feature.rfm.recency_days <= 14",
        "feature.rfm.recency_days > 14",
        "feature.rfm.recency_days == 0",
        "feature.rfm.recency_days >= -1",
    ],
)
def test_subject_from_profile__never_bought__no_recency_comparison_matches(
    recency_days: float, rule: str
) -> None:
    never = profiles_pb2.Profile(
        features=profiles_pb2.Features(rfm=profiles_pb2.Rfm(recency_days=recency_days))
    )

    subject = subject_from_profile(never, 0, None)

    assert subject.features is not None and subject.features.rfm.recency_days is None
    assert compile_rule(parse_text(rule))(subject) is False


def test_subject_from_profile__event_history_of_tracked_events__windows_read_on_the_utc_day() -> (
    None
):
    # The profile service's own domain and converter make the message, so
    # this pins the contract between the two services' converters.
    now = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)
    history = EventHistory()
    for days_ago, category, revenue in (
        (29, "juicers", 80.0),
        (31, "juicers", 500.0),
        (2, "tv", 9.0),
    ):
        event = EventData(
            f"e-{days_ago}",
            "purchase",
            now - dt.timedelta(days=days_ago),
            common_pb2.CHANNEL_STORE,
            properties={"category": category, "revenue": revenue},
        )
        history = add_event(history, event, now)
    profile = profiles_pb2.Profile(event_history=event_history_message(history))

    subject = subject_from_profile(profile, 0, None, now)

    def holds(text: str) -> bool:
        return compile_rule(parse_text(text))(subject)

    assert holds("count(purchase, within=30d) == 2")
    assert holds("count(purchase, within=32d) == 3")
    assert holds('count(purchase where category == "juicers", within=30d) == 1')
    assert holds('sum(purchase.revenue where category == "juicers", within=400d) == 580')
    assert holds('count(purchase where channel == "store", within=3d) == 1')
    assert holds("sum(purchase.quantity, within=400d) == 0")  # no event carried one
    assert not holds("count(purchase, within=30d) == 0")


def test_rule_language_bounds__match_what_the_profile_service_keeps() -> None:
    from tessera.profiles.domain import event_history
    from tessera.segments.domain import nodes

    assert nodes.MAX_WINDOW_DAYS == event_history.HISTORY_DAYS
    assert nodes.FILTER_PROPERTIES == event_history.FILTER_PROPERTIES
    assert nodes.SUM_PROPERTIES == event_history.SUM_PROPERTIES
    assert nodes.MAX_FILTER_VALUE_LENGTH == event_history.MAX_FILTER_VALUE_LENGTH
    assert tuple(event_history.CHANNEL_NAMES.values()) == nodes.CHANNELS


def test_subject_from_profile__series_read_from_the_message__same_windows_as_copied_series() -> (
    None
):
    now = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)
    history = EventHistory()
    for n in range(60):
        event = EventData(
            f"e-{n}",
            ("purchase", "page_view", "add_to_cart")[n % 3],
            now - dt.timedelta(hours=37 * n),
            (common_pb2.CHANNEL_WEB, common_pb2.CHANNEL_STORE)[n % 2],
            properties={"category": ("tv", "juicers")[n % 2], "revenue": n / 4, "quantity": n % 4},
        )
        history = add_event(history, event, now)
    message = event_history_message(history)
    today = utc_day(now)

    series = subject_from_profile(
        profiles_pb2.Profile(event_history=message), 0, None, now
    ).history.series

    assert len(series) == len(message.series) == len(set(series))
    for item in message.series:
        copied = DailySeries(
            tuple(item.days), tuple(item.counts), {p.property: tuple(p.values) for p in item.sums}
        )
        read = series[(item.event_type, item.filter_property, item.filter_value)]
        for first_day in range(today - 100, today + 2):
            assert read.count_since(first_day) == copied.count_since(first_day)
            for prop in ("revenue", "quantity", "price"):
                assert read.sum_since(prop, first_day) == copied.sum_since(prop, first_day)
    assert series.get(("purchase", "category", "radios")) is None
    with pytest.raises(KeyError):
        series[("radios", "", "")]


class CountingSeries:
    """A series that counts how often a window is read from it."""

    def __init__(self) -> None:
        self.reads = 0

    def count_since(self, first_day: int) -> int:
        self.reads += 1
        return 3

    def sum_since(self, prop: str, first_day: int) -> float:
        self.reads += 1
        return 10.0


def test_compiled_segments__same_window_in_many_segments__read_once_per_subject() -> None:
    series = CountingSeries()
    subject = Subject(history=EventHistoryView(today=100, series={("purchase", "", ""): series}))
    segments = compile_segments(
        SegmentDefinition(f"s{i}", parse_text(f"count(purchase, within=30d) >= {i}"))
        for i in range(10)
    )

    members = segments.evaluate(subject)
    again = segments.evaluate(subject)

    assert members == again == ["s0", "s1", "s2", "s3"]
    assert series.reads == 1
    fresh = Subject(history=subject.history)
    assert segments.evaluate(fresh) == members
    assert series.reads == 2  # a new subject computes it again
