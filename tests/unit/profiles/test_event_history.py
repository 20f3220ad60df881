"""Cold event history: day buckets per series, merges, bounds, the stored form."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tessera.profiles.domain.event_history import (
    HISTORY_DAYS,
    MAX_DAYS_TOTAL,
    MAX_SERIES,
    DayTotals,
    EventHistory,
    add_event,
    bounded,
    day_of,
    event_history_from_json,
    event_history_to_json,
    merge_event_histories,
)
from tessera.profiles.domain.model import EventData

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
TODAY = day_of(NOW)


def event(
    kind: str = "purchase", ago: dt.timedelta = dt.timedelta(0), channel: int = 0, **props: Any
) -> EventData:
    return EventData(f"e-{kind}-{ago}-{props}", kind, NOW - ago, channel, properties=props)


def counts(history: EventHistory) -> dict[tuple[str, str, str], dict[int, int]]:
    return {
        key: {day: totals.count for day, totals in days.items()}
        for key, days in history.series.items()
    }


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
    assert history.series[("purchase", "", "")][TODAY - 3].sums == {
        "revenue": 80.0,
        "quantity": 1.0,
    }


def test_add_event__same_day_twice__adds_counts_and_sums() -> None:
    first = add_event(EventHistory(), event(revenue=10.0, quantity=2), NOW)

    both = add_event(first, event(revenue=2.5), NOW)

    assert both.series[("purchase", "", "")] == {
        TODAY: DayTotals(2, {"revenue": 12.5, "quantity": 3.0})
    }


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
    assert merged.series[("purchase", "", "")][TODAY].sums["revenue"] == 15.0


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
    every_day = {TODAY - d: DayTotals(1) for d in range(HISTORY_DAYS)}
    history = EventHistory(
        {("page_view", "category", f"c{i:02}"): every_day for i in range(20)}
        | {("page_view", "", ""): every_day}
    )

    limited = bounded(history, NOW)

    assert sum(len(days) for days in limited.series.values()) <= MAX_DAYS_TOTAL
    assert len(limited.series) == MAX_DAYS_TOTAL // HISTORY_DAYS
    assert ("page_view", "", "") in limited.series


DAYS = st.integers(TODAY - HISTORY_DAYS + 1, TODAY)
TOTALS = st.builds(
    DayTotals,
    st.integers(1, 2**63 - 1),
    st.dictionaries(
        st.sampled_from(["revenue", "price", "quantity", "duration_ms"]),
        st.floats(0.5, 1e300),
        max_size=4,
    ),
)
HISTORIES = st.dictionaries(
    st.tuples(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.just(""), st.just("")),
    st.dictionaries(DAYS, TOTALS, min_size=1, max_size=5),
    max_size=4,
).map(EventHistory)


@given(HISTORIES)
def test_event_history_json__stored_and_read__same_history(history: EventHistory) -> None:
    stored = event_history_to_json(history)

    again = event_history_from_json(stored)

    assert event_history_to_json(again) == stored
    assert counts(again) == counts(history)


@given(HISTORIES, HISTORIES)
def test_merge_event_histories__any_two__counts_add_up_per_day(
    a: EventHistory, b: EventHistory
) -> None:
    merged = merge_event_histories(a, b, NOW)

    for key in set(a.series) | set(b.series):
        for day in set(a.series.get(key, {})) | set(b.series.get(key, {})):
            expected = (
                a.series.get(key, {}).get(day, DayTotals()).count
                + b.series.get(key, {}).get(day, DayTotals()).count
            )
            assert merged.series[key][day].count == min(expected, 2**63 - 1)
