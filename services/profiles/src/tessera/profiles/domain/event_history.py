"""Cold event history: counts and sums of a profile's events per UTC day.

What `count(purchase, within=30d)` and `sum(purchase.revenue where category
== "juicers", within=365d)` read. Each accepted event adds to the day of its
own timestamp (UTC) in a few *series*: one for its type, and one per filter
dimension it carries (`category`, `product_id`, `channel`). A day holds the
number of events and the sums of the numeric properties the service checks
(`revenue`, `price`, `quantity`, `duration_ms`) that its events carried.

A series is held in columns (days ascending, counts and sums aligned), the
shape of its stored JSON and of its proto message, so reading a profile
costs no object per day: the stored form is only ever written by this
module, already bounded, and is trusted as it is read.

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
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.channels import CHANNEL_NAMES
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

_EPOCH = dt.date(1970, 1, 1)

SeriesKey = tuple[str, str, str]
"""(event type, filter property, filter value); the last two "" for every event of the type."""


@dataclass(frozen=True, slots=True)
class Series:
    """One series: days with events (UTC day numbers, ascending), counts and sums aligned.

    `sums` maps a property to one sum per day; a property none of the
    series' events carried is absent (it sums to 0).
    """

    days: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    sums: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def since(self, first_day: int) -> Series:
        """The series without its days before `first_day`."""
        start = bisect_left(self.days, first_day)
        if start == 0:
            return self
        return Series(
            self.days[start:],
            self.counts[start:],
            {name: values[start:] for name, values in self.sums.items()},
        )


@dataclass(frozen=True)
class EventHistory:
    """A profile's series by key. The default is a person who did nothing."""

    series: Mapping[SeriesKey, Series] = field(default_factory=dict)


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
    """The summed properties an event carries (validated finite and >= 0 at the edge)."""
    sums: dict[str, float] = {}
    for name in SUM_PROPERTIES:
        value = event.properties.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            sums[name] = float(value)
    return sums


def _add(series: Series, day: int, count: int, sums: Mapping[str, float]) -> Series:
    """`series` with `count` events and `sums` added on `day`."""
    at = bisect_left(series.days, day)
    present = at < len(series.days) and series.days[at] == day
    width = len(series.days)
    if present:
        days = series.days
        counts = (
            *series.counts[:at],
            saturating_add(series.counts[at], count),
            *series.counts[at + 1 :],
        )
    else:
        days = (*series.days[:at], day, *series.days[at:])
        counts = (*series.counts[:at], count, *series.counts[at:])
    merged: dict[str, tuple[float, ...]] = {}
    for name in {*series.sums, *sums}:
        values = series.sums.get(name, (0.0,) * width)
        add = sums.get(name, 0.0)
        if present:
            merged[name] = (*values[:at], finite_add(values[at], add), *values[at + 1 :])
        else:
            merged[name] = (*values[:at], add, *values[at:])
    return Series(days, counts, merged)


def add_event(history: EventHistory, event: EventData, now: dt.datetime) -> EventHistory:
    """The history after one accepted event, bounded at `now`."""
    day = day_of(event.timestamp)
    if day < first_kept_day(now):
        return bounded(history, now)
    sums = event_sums(event)
    series = dict(history.series)
    for key in series_keys(event):
        series[key] = _add(series.get(key, Series()), day, 1, sums)
    return bounded(EventHistory(series), now)


def merge_event_histories(a: EventHistory, b: EventHistory, now: dt.datetime) -> EventHistory:
    """The history of two merged profiles: every series and day adds up."""
    series = dict(a.series)
    for key, other in b.series.items():
        into = series.get(key, Series())
        for i, day in enumerate(other.days):
            sums = {name: values[i] for name, values in other.sums.items()}
            into = _add(into, day, other.counts[i], sums)
        series[key] = into
    return bounded(EventHistory(series), now)


def bounded(history: EventHistory, now: dt.datetime) -> EventHistory:
    """The history within its bounds at `now` (see the module docstring)."""
    first = first_kept_day(now)
    if (
        len(history.series) <= MAX_SERIES
        and all(s.days and s.days[0] >= first for s in history.series.values())
        and sum(len(s.days) for s in history.series.values()) <= MAX_DAYS_TOTAL
    ):
        return history  # within every bound already: the read path's common case
    series: dict[SeriesKey, Series] = {}
    changed = False
    for key, whole in history.series.items():
        kept = whole.since(first)
        changed = changed or kept is not whole
        if kept.days:
            series[key] = kept
    total = sum(len(s.days) for s in series.values())
    if len(series) <= MAX_SERIES and total <= MAX_DAYS_TOTAL:
        return EventHistory(series) if changed else history

    def staleness(key: SeriesKey) -> tuple[bool, int, int, SeriesKey]:
        days = series[key].days
        return (key[1] == "", days[-1], len(days), key)

    for key in sorted(series, key=staleness):
        if len(series) <= MAX_SERIES and total <= MAX_DAYS_TOTAL:
            break
        total -= len(series.pop(key).days)
    return EventHistory(series)


def bounded_until(history: EventHistory) -> dt.datetime | None:
    """The moment from which `bounded(history, now)` is no longer `history` itself.

    Before it, the history is within every bound (see `bounded`): its oldest
    day is still kept, and the counts of series and days are not over. None
    when it is over a bound at any moment.
    """
    if len(history.series) > MAX_SERIES:
        return None
    if sum(len(s.days) for s in history.series.values()) > MAX_DAYS_TOTAL:
        return None
    if any(not s.days for s in history.series.values()):
        return None
    if not history.series:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    oldest = min(s.days[0] for s in history.series.values())
    # `first_kept_day(now)` passes `oldest` at the start of day oldest + HISTORY_DAYS.
    last_day = _EPOCH + dt.timedelta(days=oldest + HISTORY_DAYS)
    return dt.datetime.combine(last_day, dt.time(), dt.UTC)


def event_history_to_json(history: EventHistory) -> list[dict[str, Any]]:
    """The stored form: one object per series, in key order, its columns as lists."""
    return [
        {
            "t": event_type,
            "p": prop,
            "v": value,
            "d": list(s.days),
            "c": list(s.counts),
            "s": {name: list(values) for name, values in sorted(s.sums.items())},
        }
        for (event_type, prop, value), s in sorted(history.series.items())
    ]


def event_history_from_json(raw: Iterable[dict[str, Any]] | None) -> EventHistory:
    """A history from its stored form (None: a profile stored before histories existed)."""
    return EventHistory(
        {
            (item["t"], item["p"], item["v"]): Series(
                tuple(item["d"]),
                tuple(item["c"]),
                {name: tuple(values) for name, values in item["s"].items()},
            )
            for item in raw or ()
        }
    )


def add_events_stored(
    stored: list[dict[str, Any]] | None, events: Iterable[EventData], now: dt.datetime
) -> list[dict[str, Any]]:
    """The stored form after `events`, in order: what folding each with `add_event`
    into `event_history_from_json(stored)` and writing it back gives.

    The write path's shortcut: an event on a day its series already hold
    (the common case, a visitor active today) only adds to numbers in
    place, in the decoded stored form, without building a history of
    tuples and writing it out again. Whenever the shortcut cannot give that
    same result (a new day or series, a sum the series never had, days to
    drop at `now`, an event too old to keep), the whole fold takes the
    general path. `stored` may be changed in place.
    """
    events = list(events)
    if stored and _in_place(stored, events, now):
        return stored
    history = event_history_from_json(stored)
    for event in events:
        history = add_event(history, event, now)
    return event_history_to_json(history)


def _in_place(stored: list[dict[str, Any]], events: list[EventData], now: dt.datetime) -> bool:
    """Add `events` to `stored` in place when every one lands on a day its series
    hold, with sums they hold, and no day is due to be dropped; False (and
    `stored` untouched) otherwise."""
    first = first_kept_day(now)
    if any(item["d"][0] < first for item in stored):
        return False
    index = {(item["t"], item["p"], item["v"]): item for item in stored}
    plan: list[tuple[dict[str, Any], int, dict[str, float]]] = []
    for event in events:
        day = day_of(event.timestamp)
        sums = event_sums(event)
        for key in series_keys(event):
            item = index.get(key)
            if item is None:
                return False
            days = item["d"]
            at = bisect_left(days, day)
            if at == len(days) or days[at] != day or not item["s"].keys() >= sums.keys():
                return False
            plan.append((item, at, sums))
    for item, at, sums in plan:
        counts = item["c"]
        counts[at] = saturating_add(counts[at], 1)
        for name, value in sums.items():
            column = item["s"][name]
            column[at] = finite_add(column[at], value)
    return True
