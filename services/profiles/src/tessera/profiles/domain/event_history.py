"""Cold event history: counts and sums of a profile's events per UTC day.

What `count(purchase, within=30d)` and `sum(purchase.revenue where category
== "juicers", within=365d)` read. Each accepted event adds to the day of its
own timestamp (UTC) in a few *series*: one for its type, and one per filter
dimension it carries (`category`, `product_id`, `channel`). A day holds the
number of events and the sums of the numeric properties the service checks
(`revenue`, `price`, `quantity`, `duration_ms`).

Bounded per profile, so that it can ride on every GetProfile and Identify
(the one hop of a Decide) whatever a person does:

- only the last `HISTORY_DAYS` days (today and the 399 before): older days
  are dropped when the history is written and skipped when it is read, and
  an event older than that adds nothing;
- at most `MAX_SERIES` series and `MAX_DAYS_TOTAL` (series, day) entries.
  Past either bound the stalest series goes first: filtered series before
  per-type ones, then the one whose last day is oldest (ties: the one with
  fewer days, then key order). A rule reading a dropped series reads 0,
  as for a person who did nothing of the kind.
- a filter value (a category, a product id) of more than
  `MAX_FILTER_VALUE_LENGTH` characters gets no series of its own.

Counts saturate at the largest int64 and sums stay finite doubles, as
everywhere in the profile service (docs/profile-writes.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.profiles.domain.model import EventData, finite_add, saturating_add

HISTORY_DAYS = 400
"""Days kept, today included; the longest window a rule may ask for."""
MAX_SERIES = 128
"""Series per profile (per-type and filtered together)."""
MAX_DAYS_TOTAL = 4096
"""(series, day) entries per profile, over all series."""
MAX_FILTER_VALUE_LENGTH = 128
"""Longest filter value (category, product id) that gets a series."""
FILTER_PROPERTIES: tuple[str, ...] = ("category", "product_id", "channel")
"""What a rule can filter events by: two properties and the event's channel."""
SUM_PROPERTIES: tuple[str, ...] = ("revenue", "price", "quantity", "duration_ms")
"""Numeric properties summed per day: the ones validated on every event."""
CHANNEL_NAMES: Mapping[int, str] = {
    1: "web",
    2: "app",
    3: "email",
    4: "sms",
    5: "push",
    6: "call_center",
    7: "store",
}
"""tessera.common.v1.Channel numbers, by the names rules use."""

_EPOCH = dt.date(1970, 1, 1)

SeriesKey = tuple[str, str, str]
"""(event type, filter property, filter value); the last two "" for every event of the type."""


@dataclass(frozen=True, slots=True)
class DayTotals:
    """Events of one series on one UTC day: how many, and their property sums."""

    count: int = 0
    sums: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EventHistory:
    """A profile's series, each a mapping of UTC day number to totals.

    Day numbers count days since 1970-01-01 (UTC). The default is a person
    who did nothing.
    """

    series: Mapping[SeriesKey, Mapping[int, DayTotals]] = field(default_factory=dict)


def day_of(moment: dt.datetime) -> int:
    """The UTC day number (days since 1970-01-01) of a moment."""
    return (moment.astimezone(dt.UTC).date() - _EPOCH).days


def first_kept_day(now: dt.datetime) -> int:
    """The oldest day a history keeps at `now`: today minus HISTORY_DAYS - 1."""
    return day_of(now) - (HISTORY_DAYS - 1)


def series_keys(event: EventData) -> list[SeriesKey]:
    """The series an event counts in: its type, and each filter value it carries."""
    keys: list[SeriesKey] = [(event.type, "", "")]
    for name in ("category", "product_id"):
        value = event.properties.get(name)
        if isinstance(value, str) and 0 < len(value) <= MAX_FILTER_VALUE_LENGTH:
            keys.append((event.type, name, value))
    channel = CHANNEL_NAMES.get(event.channel)
    if channel:
        keys.append((event.type, "channel", channel))
    return keys


def event_sums(event: EventData) -> dict[str, float]:
    """The summed properties of one event; `quantity` is 1 when absent, as in a cart."""
    sums: dict[str, float] = {}
    for name in SUM_PROPERTIES:
        value = event.properties.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            sums[name] = float(value)
    sums.setdefault("quantity", 1.0)
    return sums


def _add_day(day: DayTotals, count: int, sums: Mapping[str, float]) -> DayTotals:
    merged = dict(day.sums)
    for name, value in sums.items():
        merged[name] = finite_add(merged.get(name, 0.0), value)
    return DayTotals(saturating_add(day.count, count), merged)


def add_event(history: EventHistory, event: EventData, now: dt.datetime) -> EventHistory:
    """The history after one accepted event, bounded at `now`."""
    day = day_of(event.timestamp)
    if day < first_kept_day(now):
        return bounded(history, now)
    sums = event_sums(event)
    series = dict(history.series)
    for key in series_keys(event):
        days = dict(series.get(key, {}))
        days[day] = _add_day(days.get(day, DayTotals()), 1, sums)
        series[key] = days
    return bounded(EventHistory(series), now)


def merge_event_histories(a: EventHistory, b: EventHistory, now: dt.datetime) -> EventHistory:
    """The history of two merged profiles: every series and day adds up."""
    series = {key: dict(days) for key, days in a.series.items()}
    for key, days in b.series.items():
        into = series.setdefault(key, {})
        for day, totals in days.items():
            into[day] = _add_day(into.get(day, DayTotals()), totals.count, totals.sums)
    return bounded(EventHistory(series), now)


def bounded(history: EventHistory, now: dt.datetime) -> EventHistory:
    """The history within its bounds at `now` (see the module docstring)."""
    first = first_kept_day(now)
    series: dict[SeriesKey, Mapping[int, DayTotals]] = {}
    for key, days in history.series.items():
        kept = {day: totals for day, totals in days.items() if day >= first}
        if kept:
            series[key] = kept
    total = sum(len(days) for days in series.values())
    if len(series) <= MAX_SERIES and total <= MAX_DAYS_TOTAL:
        return EventHistory(series)

    def staleness(key: SeriesKey) -> tuple[bool, int, int, SeriesKey]:
        days = series[key]
        return (key[1] == "", max(days), len(days), key)

    for key in sorted(series, key=staleness):
        if len(series) <= MAX_SERIES and total <= MAX_DAYS_TOTAL:
            break
        total -= len(series.pop(key))
    return EventHistory(series)


def event_history_to_json(history: EventHistory) -> list[dict[str, Any]]:
    """The stored form: one object per series, columns aligned by day, days ascending."""
    stored: list[dict[str, Any]] = []
    for (event_type, prop, value), days in sorted(history.series.items()):
        ordered = sorted(days)
        names = sorted({name for day in ordered for name in days[day].sums})
        stored.append(
            {
                "t": event_type,
                "p": prop,
                "v": value,
                "d": ordered,
                "c": [days[day].count for day in ordered],
                "s": {name: [days[day].sums.get(name, 0.0) for day in ordered] for name in names},
            }
        )
    return stored


def event_history_from_json(raw: Iterable[dict[str, Any]] | None) -> EventHistory:
    """A history from its stored form (None: a profile stored before histories existed)."""
    series: dict[SeriesKey, Mapping[int, DayTotals]] = {}
    for item in raw or ():
        sums: dict[str, list[float]] = item.get("s", {})
        series[(item["t"], item["p"], item["v"])] = {
            int(day): DayTotals(
                saturating_add(0, int(count)),
                {name: finite_add(0.0, float(values[i])) for name, values in sums.items()},
            )
            for i, (day, count) in enumerate(zip(item["d"], item["c"], strict=True))
        }
    return EventHistory(series)
