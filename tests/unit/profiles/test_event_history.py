"""Cold event history: day buckets per series, merges, bounds, the stored form."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tessera.profiles.domain.event_history import (
    HISTORY_DAYS,
    MAX_DAYS_TOTAL,
    MAX_SERIES,
    EventHistory,
    Series,
    add_event,
    add_events_stored,
    bounded,
    day_of,
    event_history_from_json,
    event_history_to_json,
    merge_event_histories,
)
from tessera.profiles.domain.model import EventData
from tessera.profiles.transport.convert import event_history_message
from tessera.profiles.v1 import profiles_pb2

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
TODAY = day_of(NOW)


def event(
    kind: str = "purchase", ago: dt.timedelta = dt.timedelta(0), channel: int = 0, **props: Any
) -> EventData:
    return EventData(f"e-{kind}-{ago}-{props}", kind, NOW - ago, channel, properties=props)


def counts(history: EventHistory) -> dict[tuple[str, str, str], dict[int, int]]:
    return {
        key: dict(zip(series.days, series.counts, strict=True))
        for key, series in history.series.items()
    }


def series_of(by_day: dict[int, tuple[int, float]]) -> Series:
    """A series from {day: (count, revenue)}."""
    days = tuple(sorted(by_day))
    return Series(
        days, tuple(by_day[d][0] for d in days), {"revenue": tuple(by_day[d][1] for d in days)}
    )


def test_day_of__moments_around_utc_midnight__split_on_the_utc_day() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))

    late = day_of(dt.datetime(2026, 3, 10, 23, 59, 59, tzinfo=dt.UTC))
    early = day_of(dt.datetime(2026, 3, 11, 0, 30, tzinfo=paris))  # 23:30 UTC on the 10th

    assert late == early == TODAY
    assert day_of(dt.datetime(1970, 1, 2, tzinfo=dt.UTC)) == 1


def test_add_event__purchase_with_dimensions__counts_in_type_and_each_filter_series() -> None:
    history = add_event(
        EventHistory(),
        event(
            ago=dt.timedelta(days=3),
            channel=7,
            category="juicers",
            product_id="j-1",
            revenue=80.0,
            colour="red",
        ),
        NOW,
    )

    assert counts(history) == {
        ("purchase", "", ""): {TODAY - 3: 1},
        ("purchase", "category", "juicers"): {TODAY - 3: 1},
        ("purchase", "product_id", "j-1"): {TODAY - 3: 1},
        ("purchase", "channel", "store"): {TODAY - 3: 1},
    }
    assert history.series[("purchase", "", "")].sums == {"revenue": (80.0,)}


def test_add_event__same_day_twice__adds_counts_and_sums() -> None:
    first = add_event(EventHistory(), event(revenue=10.0, quantity=2), NOW)

    both = add_event(first, event(revenue=2.5), NOW)

    assert both.series[("purchase", "", "")] == Series(
        (TODAY,), (2,), {"revenue": (12.5,), "quantity": (2.0,)}
    )


def test_add_event__days_out_of_order__kept_ascending_with_sums_aligned() -> None:
    history = EventHistory()
    for ago, revenue in ((5, 1.0), (1, 2.0), (9, 4.0), (1, 8.0)):
        history = add_event(history, event(ago=dt.timedelta(days=ago), revenue=revenue), NOW)

    assert history.series[("purchase", "", "")] == Series(
        (TODAY - 9, TODAY - 5, TODAY - 1), (1, 1, 2), {"revenue": (4.0, 1.0, 10.0)}
    )


def test_add_event__late_event_without_a_property_others_had__sums_zero_that_day() -> None:
    history = add_event(EventHistory(), event(revenue=3.0), NOW)

    history = add_event(history, event(ago=dt.timedelta(days=2)), NOW)

    assert history.series[("purchase", "", "")].sums == {"revenue": (0.0, 3.0)}


def test_add_event__older_than_retention__adds_nothing() -> None:
    kept = add_event(EventHistory(), event(ago=dt.timedelta(days=HISTORY_DAYS - 1)), NOW)
    too_old = add_event(EventHistory(), event(ago=dt.timedelta(days=HISTORY_DAYS)), NOW)

    assert counts(kept) == {("purchase", "", ""): {TODAY - HISTORY_DAYS + 1: 1}}
    assert too_old.series == {}


def test_bounded__days_age_out__dropped_and_empty_series_removed() -> None:
    history = add_event(EventHistory(), event(category="a", ago=dt.timedelta(days=10)), NOW)
    history = add_event(history, event("login"), NOW)

    later = bounded(history, NOW + dt.timedelta(days=HISTORY_DAYS - 10))

    assert counts(later) == {("login", "", ""): {TODAY: 1}}


def test_merge_event_histories__two_profiles__every_day_adds_up() -> None:
    a = add_event(EventHistory(), event(category="juicers", revenue=10.0), NOW)
    b = add_event(EventHistory(), event(category="juicers", revenue=5.0), NOW)
    b = add_event(b, event(category="tv", ago=dt.timedelta(days=1), revenue=1.0), NOW)

    merged = merge_event_histories(a, b, NOW)

    assert counts(merged) == {
        ("purchase", "", ""): {TODAY: 2, TODAY - 1: 1},
        ("purchase", "category", "juicers"): {TODAY: 2},
        ("purchase", "category", "tv"): {TODAY - 1: 1},
    }
    assert merged.series[("purchase", "", "")].sums["revenue"] == (1.0, 15.0)


def test_bounded__more_series_than_allowed__stalest_filtered_series_go_first() -> None:
    history = EventHistory()
    # One per-type series, seen long ago, and many product series after it.
    history = add_event(history, event("login", ago=dt.timedelta(days=300)), NOW)
    for i in range(MAX_SERIES + 5):
        ago = dt.timedelta(days=MAX_SERIES + 5 - i)  # product 0 is the stalest
        history = add_event(history, event("product_view", ago=ago, product_id=f"p{i}"), NOW)

    kept = set(history.series)

    assert len(kept) == MAX_SERIES
    assert ("login", "", "") in kept and ("product_view", "", "") in kept
    assert ("product_view", "product_id", "p0") not in kept
    assert ("product_view", "product_id", f"p{MAX_SERIES + 4}") in kept


def test_bounded__more_days_than_allowed__drops_whole_series_until_within() -> None:
    every_day = series_of({TODAY - d: (1, 1.0) for d in range(HISTORY_DAYS)})
    history = EventHistory(
        {("page_view", "category", f"c{i:02}"): every_day for i in range(20)}
        | {("page_view", "", ""): every_day}
    )

    limited = bounded(history, NOW)

    assert sum(len(series.days) for series in limited.series.values()) <= MAX_DAYS_TOTAL
    assert len(limited.series) == MAX_DAYS_TOTAL // HISTORY_DAYS
    assert ("page_view", "", "") in limited.series


DAYS = st.integers(TODAY - HISTORY_DAYS + 1, TODAY)
HISTORIES = st.dictionaries(
    st.tuples(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.just(""), st.just("")),
    st.dictionaries(
        DAYS, st.tuples(st.integers(1, 2**63 - 1), st.floats(0.0, 1e300)), min_size=1, max_size=5
    ).map(series_of),
    max_size=4,
).map(EventHistory)


@given(HISTORIES)
def test_event_history_json__stored_and_read__same_history(history: EventHistory) -> None:
    stored = json.loads(json.dumps(event_history_to_json(history)))

    again = event_history_from_json(stored)

    assert again == history


@given(HISTORIES, HISTORIES)
def test_merge_event_histories__any_two__counts_and_sums_add_up_per_day(
    a: EventHistory, b: EventHistory
) -> None:
    merged = merge_event_histories(a, b, NOW)

    for key in set(a.series) | set(b.series):
        left, right = counts(a).get(key, {}), counts(b).get(key, {})
        assert counts(merged)[key] == {
            day: min(left.get(day, 0) + right.get(day, 0), 2**63 - 1) for day in {*left, *right}
        }
        assert len(merged.series[key].sums["revenue"]) == len(merged.series[key].days)


def fold_one_by_one(stored: list[dict[str, Any]], events: list[EventData]) -> list[dict[str, Any]]:
    history = event_history_from_json(stored)
    for each in events:
        history = add_event(history, each, NOW)
    return event_history_to_json(history)


EVENTS = st.lists(
    st.builds(
        lambda kind, ago, category, revenue, channel: event(
            kind,
            dt.timedelta(days=ago, hours=1),
            channel,
            **({"category": category} if category else {}),
            **({"revenue": revenue} if revenue is not None else {}),
        ),
        st.sampled_from(["purchase", "page_view"]),
        st.sampled_from([0, 0, 0, 1, 3, HISTORY_DAYS + 2]),
        st.sampled_from(["", "juicers", "tv"]),
        st.none() | st.floats(0.0, 1e300),
        st.sampled_from([0, 1]),
    ),
    max_size=12,
)


@given(HISTORIES, EVENTS, EVENTS)
def test_add_events_stored__any_history_and_events__as_adding_one_by_one(
    history: EventHistory, before: list[EventData], batch: list[EventData]
) -> None:
    # `before` makes the series the batch may find its days in.
    stored = json.loads(json.dumps(fold_one_by_one(event_history_to_json(history), before)))
    expected = fold_one_by_one(json.loads(json.dumps(stored)), batch)

    folded = add_events_stored(stored, batch, NOW)

    assert folded == expected


def test_add_events_stored__events_on_days_held__adds_in_place() -> None:
    stored = json.loads(
        json.dumps(event_history_to_json(add_event(EventHistory(), event(revenue=10.0), NOW)))
    )

    folded = add_events_stored(stored, [event(revenue=2.5), event(revenue=1.0)], NOW)

    assert folded is stored
    assert folded == [
        {"t": "purchase", "p": "", "v": "", "d": [TODAY], "c": [3], "s": {"revenue": [13.5]}}
    ]


def test_add_events_stored__a_sum_the_series_never_had__general_path_adds_the_column() -> None:
    stored = event_history_to_json(add_event(EventHistory(), event(), NOW))

    folded = add_events_stored(stored, [event(revenue=4.0)], NOW)

    assert folded == [
        {"t": "purchase", "p": "", "v": "", "d": [TODAY], "c": [2], "s": {"revenue": [4.0]}}
    ]


def test_event_history_message__same_history_read_again__one_message_copied_into_replies() -> None:
    history = add_event(EventHistory(), event(revenue=10.0), NOW)
    later = add_event(history, event(revenue=2.5), NOW)

    first, again, other = (event_history_message(h) for h in (history, history, later))
    reply = profiles_pb2.Profile(event_history=first)
    reply.event_history.series[0].counts[0] = 99

    assert again is first
    assert list(first.series[0].counts) == [1]
    assert list(other.series[0].counts) == [2]
