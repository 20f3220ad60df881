"""The columnar projection of every profile: what EstimateSize evaluates rules over.

The segment service keeps it from the profile service's change feed
(docs/segments-size.md): profile records give traits and identity types,
events give the daily event history and the purchases behind features,
merges re-key a person, erasures remove them. Everything is held as numpy
arrays with one row per person, so a rule is evaluated over all of them at
once (`tessera.segments.domain.estimate`), never one profile at a time.

- **Traits**: one column per top-level trait name, dictionary-encoded: an
  unsigned code per row (the narrowest dtype that holds the column's
  distinct values; 0 is "no such trait") and a table of the distinct values.
  A rule on a trait is decided once per distinct value, then spread to the
  rows by indexing.
- **Identity types**: one bit per type, eight types to a byte column.
- **Event history**: per series (event type, filter property, filter
  value), exactly the series the profile service keeps
  (tessera.profiles.domain.event_history), entries of (row, UTC day, count,
  daily sums), sorted by day so that a window is a slice; entries of one
  row and day are added into one, in the order they arrived.
- **Purchases**: one entry per purchase event (row, time, revenue,
  category), the inputs of RFM, lifetime value and category interest.

Not thread-safe: the caller serialises `apply` and reads.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .nodes import MAX_FILTER_VALUE_LENGTH, MAX_WINDOW_DAYS, SUM_PROPERTIES

Array: TypeAlias = npt.NDArray[Any]
SeriesKey: TypeAlias = tuple[str, str, str]

DAY_US = 86_400_000_000
"""Microseconds in a day."""
MAX_DAY = 65_535
"""Days are stored as uint16 (1970-01-01 + 65,535 days is in 2149)."""
_COUNT_MAX = 2**32 - 1


def _grow(array: Array, needed: int) -> Array:
    """`array` with room for at least `needed` items (doubling), contents kept."""
    if needed <= len(array):
        return array
    bigger = np.zeros(max(needed, 2 * len(array), 16), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


def _value_key(value: Any) -> Any:
    """A hashable key that tells apart what the rule language tells apart.

    1 and 1.0 compare equal in rules and share a key; true and 1 do not.
    """
    if value is None:
        return ("z",)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list | tuple):
        return ("l", tuple(_value_key(v) for v in value))
    if isinstance(value, Mapping):
        return ("d", tuple(sorted((k, _value_key(v)) for k, v in value.items())))
    return ("o", repr(value))


# --- the index of profile ids ------------------------------------------------------

_HEX = frozenset("0123456789abcdef")


def _packed(profile_id: str) -> bytes | None:
    """16 bytes for a profile id the profile service makes (32 lowercase hex digits)."""
    if len(profile_id) == 32 and _HEX.issuperset(profile_id):
        return bytes.fromhex(profile_id)
    return None


class IdIndex:
    """Profile id -> row, compact: ids of the profile service's form are 16 bytes each.

    Such ids live in a sorted array of 16-byte keys with their rows (found by
    binary search) and, when recently added, in a small dict that is folded
    into the arrays once it grows past a quarter of them. Other ids (any
    string) live in a dict of their own.
    """

    __slots__ = ("_keys", "_last", "_other", "_pending", "_rows")

    def __init__(self) -> None:
        self._keys: Array = np.zeros(0, dtype="S16")
        self._rows: Array = np.zeros(0, dtype=np.int32)
        """Row of each key; -1 for a removed key (dropped at the next fold)."""
        self._pending: dict[bytes, int] = {}
        self._other: dict[str, int] = {}
        self._last: tuple[str, int] | None = None

    def get(self, profile_id: str) -> int | None:
        """The row of `profile_id`, or None."""
        if self._last is not None and self._last[0] == profile_id:
            return self._last[1]
        key = _packed(profile_id)
        if key is None:
            row = self._other.get(profile_id)
        else:
            row = self._pending.get(key)
            if row is None and len(self._keys):
                at = int(np.searchsorted(self._keys, key))
                if at < len(self._keys) and self._keys[at] == key and self._rows[at] >= 0:
                    row = int(self._rows[at])
        if row is not None:
            self._last = (profile_id, row)
        return row

    def __contains__(self, profile_id: object) -> bool:
        return isinstance(profile_id, str) and self.get(profile_id) is not None

    def set(self, profile_id: str, row: int) -> None:
        """Point `profile_id` at `row`."""
        self._last = None
        key = _packed(profile_id)
        if key is None:
            self._other[profile_id] = row
            return
        if len(self._keys):
            at = int(np.searchsorted(self._keys, key))
            if at < len(self._keys) and self._keys[at] == key:
                self._rows[at] = row
                return
        self._pending[key] = row
        if len(self._pending) > max(65_536, len(self._keys) // 4):
            self._fold()

    def pop(self, profile_id: str) -> None:
        """Forget `profile_id`."""
        self._last = None
        key = _packed(profile_id)
        if key is None:
            self._other.pop(profile_id, None)
            return
        self._pending.pop(key, None)
        if len(self._keys):
            at = int(np.searchsorted(self._keys, key))
            if at < len(self._keys) and self._keys[at] == key:
                self._rows[at] = -1

    def _fold(self) -> None:
        keys = np.concatenate([self._keys, np.array(list(self._pending), dtype="S16")])
        rows = np.concatenate(
            [self._rows, np.fromiter(self._pending.values(), np.int32, len(self._pending))]
        )
        keep = rows >= 0
        keys, rows = keys[keep], rows[keep]
        order = np.argsort(keys, kind="stable")
        self._keys, self._rows = keys[order], rows[order].astype(np.int32)
        self._pending = {}

    def remap(self, remap: Array | None, alive: Array) -> None:
        """Rows moved by `remap` (merged rows to their survivors); ids of dead rows dropped."""
        self._last = None
        self._fold()
        rows = self._rows.astype(np.int64)
        if remap is not None:
            rows = remap[rows]
        keep = alive[rows]
        self._keys, self._rows = self._keys[keep], rows[keep].astype(np.int32)
        for profile_id, row in list(self._other.items()):
            target = int(remap[row]) if remap is not None else row
            if alive[target]:
                self._other[profile_id] = target
            else:
                del self._other[profile_id]

    def items(self) -> list[tuple[str, int]]:
        """Every (id, row)."""
        self._fold()
        pairs = [
            (key.hex(), int(row))
            for key, row in zip(self._keys.tolist(), self._rows.tolist(), strict=True)
            if row >= 0
        ]
        return pairs + list(self._other.items())

    def nbytes(self) -> int:
        """Bytes held."""
        small = sys.getsizeof(self._pending) + sys.getsizeof(self._other)
        small += sum(sys.getsizeof(k) for k in self._pending)
        small += sum(sys.getsizeof(k) for k in self._other)
        return self._keys.nbytes + self._rows.nbytes + small


# --- records of the feed, as the projection takes them -----------------------


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """A profile's whole traits and identity types after a change."""

    profile_id: str
    traits: Mapping[str, Any]
    identity_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventSeen:
    """An event, reduced to what the projection keeps of it.

    `series` are the filter values the profile service keeps a series for
    (property -> value: category, product_id, channel); `category` is the
    purchase category as the profile service's purchase history reads it
    (`str(category)` of any value that is not empty); `sums` the numeric
    properties summed per day.
    """

    profile_id: str
    type: str
    timestamp_us: int
    series: Mapping[str, str] = field(default_factory=dict)
    category: str | None = None
    sums: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Merge:
    """`merged_id` was merged into `survivor_id`."""

    survivor_id: str
    merged_id: str


@dataclass(frozen=True, slots=True)
class Erasure:
    """A person was erased, under `profile_id` and every id merged into it."""

    profile_id: str
    merged_ids: tuple[str, ...] = ()


Record: TypeAlias = ProfileChange | EventSeen | Merge | Erasure


def event_seen(
    profile_id: str,
    event_type: str,
    timestamp_us: int,
    channel: str,
    properties: Mapping[str, Any],
) -> EventSeen:
    """An event of the feed as the projection keeps it.

    The same reading of an event as the profile service's history
    (tessera.profiles.domain.event_history.series_keys and event_sums, and
    history.add_to_history for the purchase category).
    """
    series: dict[str, str] = {}
    for name in ("category", "product_id"):
        value = properties.get(name)
        if isinstance(value, str) and 0 < len(value) <= MAX_FILTER_VALUE_LENGTH:
            series[name] = value
    if channel:
        series["channel"] = channel
    sums: dict[str, float] = {}
    for name in SUM_PROPERTIES:
        value = properties.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            sums[name] = float(value)
    category = properties.get("category")
    return EventSeen(
        profile_id,
        event_type,
        timestamp_us,
        series,
        str(category) if category else None,
        sums,
    )


# --- columns -------------------------------------------------------------------


class TraitColumn:
    """One trait name: a code per row, and the distinct values the codes stand for."""

    __slots__ = ("codes", "lookup", "values")

    def __init__(self, capacity: int) -> None:
        self.codes: Array = np.zeros(capacity, dtype=np.uint8)
        self.values: list[Any] = [None]
        """Code -> value; code 0 is "the profile has no such trait"."""
        self.lookup: dict[Any, int] = {}

    def code_of(self, value: Any) -> int:
        """The code of `value`, adding it (and widening the codes) when new."""
        key = _value_key(value)
        code = self.lookup.get(key)
        if code is None:
            code = len(self.values)
            self.values.append(value)
            self.lookup[key] = code
            if code > np.iinfo(self.codes.dtype).max:
                wider = np.uint16 if code <= 0xFFFF else np.uint32
                self.codes = self.codes.astype(wider)
        return code

    def tidy(self) -> None:
        """Forget values no row holds any more (changed traits, erased people)."""
        used = np.unique(self.codes)
        used = used[used != 0]
        if len(used) == len(self.values) - 1:
            return
        remap = np.zeros(len(self.values), dtype=np.int64)
        remap[used] = np.arange(1, len(used) + 1)
        values = [None, *(self.values[int(code)] for code in used)]
        dtype = np.uint8 if len(values) <= 0x100 else np.uint16 if len(values) <= 0x10000 else None
        self.codes = remap[self.codes].astype(dtype or np.uint32)
        self.values = values
        self.lookup = {_value_key(v): code for code, v in enumerate(values) if code}


class Series:
    """One event series: entries (row, day, count, daily sums), kept sorted by day.

    New entries are appended; `settle` sorts and adds up the entries of one
    row and day (in the order they were appended), re-keys merged rows and
    drops erased ones.
    """

    __slots__ = ("counts", "days", "n", "rows", "settled", "sums")

    def __init__(self) -> None:
        self.rows: Array = np.zeros(0, dtype=np.int32)
        self.days: Array = np.zeros(0, dtype=np.uint16)
        self.counts: Array = np.zeros(0, dtype=np.uint16)
        self.sums: dict[str, Array] = {}
        self.n = 0
        self.settled = True
        """Entries are sorted by (day, row), one per (day, row), and no row is merged or gone."""

    def append(self, row: int, day: int, sums: Mapping[str, float]) -> None:
        """One event on `day` of `row`."""
        n = self.n
        if n == len(self.rows):
            self.rows = _grow(self.rows, n + 1)
            self.days = _grow(self.days, n + 1)
            self.counts = _grow(self.counts, n + 1)
            for name in self.sums:
                self.sums[name] = _grow(self.sums[name], n + 1)
        self.rows[n] = row
        self.days[n] = day
        self.counts[n] = 1
        for name, value in sums.items():
            column = self.sums.get(name)
            if column is None:
                column = self.sums[name] = np.zeros(len(self.rows), dtype=np.float64)
            column[n] = value
        self.n = n + 1
        self.settled = False

    def settle(self, remap: Array | None, alive: Array, erased: bool = False) -> None:
        """Sort by (day, row), one entry per (day, row), rows re-keyed by `remap`, dead dropped."""
        if self.settled and remap is None and not erased:
            return
        n = self.n
        rows = self.rows[:n]
        if remap is not None:
            rows = remap[rows]
        keep = alive[rows]
        rows = rows[keep]
        days = self.days[:n][keep]
        counts = self.counts[:n][keep]
        sums = {name: values[:n][keep] for name, values in self.sums.items()}
        # Stable: entries of one (day, row) stay in the order they arrived.
        order = np.lexsort((rows, days))
        rows, days, counts = rows[order], days[order], counts[order]
        sums = {name: values[order] for name, values in sums.items()}
        if len(rows):
            starts = np.flatnonzero(
                np.concatenate(([True], (rows[1:] != rows[:-1]) | (days[1:] != days[:-1])))
            )
            if len(starts) < len(rows):
                group = np.searchsorted(starts, np.arange(len(rows)), side="right") - 1
                # bincount adds in array order: the day's events in the order they came.
                total = np.bincount(group, weights=counts, minlength=len(starts))
                counts = np.minimum(total, _COUNT_MAX).astype(np.uint32)
                sums = {
                    name: np.bincount(group, weights=values, minlength=len(starts))
                    for name, values in sums.items()
                }
                rows, days = rows[starts], days[starts]
        self.rows = rows.astype(np.int32)
        self.days = days.astype(np.uint16)
        # Counts of a day fit 16 bits but for a flood; the column widens for one.
        wide = len(counts) and int(counts.max()) > 0xFFFF
        self.counts = counts.astype(np.uint32 if wide else np.uint16)
        self.sums = {name: values.astype(np.float64) for name, values in sums.items()}
        self.n = len(self.rows)
        self.settled = True

    def window(self, first_day: int) -> slice:
        """The entries on `first_day` and after (settled series)."""
        start = int(np.searchsorted(self.days[: self.n], first_day, side="left"))
        return slice(start, self.n)

    def nbytes(self) -> int:
        """Bytes of the arrays."""
        arrays = [self.rows, self.days, self.counts, *self.sums.values()]
        return sum(a.nbytes for a in arrays)


class Purchases:
    """Every purchase event: row, time (µs), revenue, category code (-1: none)."""

    __slots__ = ("categories", "category_codes", "n", "revenue", "rows", "times")

    def __init__(self) -> None:
        self.rows: Array = np.zeros(0, dtype=np.int32)
        self.times: Array = np.zeros(0, dtype=np.int64)
        self.revenue: Array = np.zeros(0, dtype=np.float64)
        self.category_codes: Array = np.zeros(0, dtype=np.int32)
        self.categories: dict[str, int] = {}
        self.n = 0

    def append(self, row: int, time_us: int, revenue: float, category: str | None) -> None:
        """One purchase."""
        n = self.n
        if n == len(self.rows):
            self.rows = _grow(self.rows, n + 1)
            self.times = _grow(self.times, n + 1)
            self.revenue = _grow(self.revenue, n + 1)
            self.category_codes = _grow(self.category_codes, n + 1)
        self.rows[n] = row
        self.times[n] = time_us
        self.revenue[n] = revenue
        code = -1
        if category is not None:
            code = self.categories.setdefault(category, len(self.categories))
        self.category_codes[n] = code
        self.n = n + 1

    def settle(self, remap: Array | None, alive: Array, erased: bool = False) -> None:
        """Re-key merged rows, drop erased ones (order kept: revenue adds up as it came)."""
        if remap is None and not erased:
            return
        n = self.n
        rows = self.rows[:n] if remap is None else remap[self.rows[:n]]
        keep = alive[rows]
        self.rows = rows[keep].astype(np.int32)
        self.times = self.times[:n][keep]
        self.revenue = self.revenue[:n][keep]
        self.category_codes = self.category_codes[:n][keep]
        used = sorted(set(np.unique(self.category_codes).tolist()) - {-1})
        names = {code: name for name, code in self.categories.items()}
        remap_codes = np.full(len(self.categories) + 1, -1, dtype=np.int32)
        self.categories = {}
        for new, old in enumerate(used):
            self.categories[names[old]] = new
            remap_codes[old] = new
        self.category_codes = remap_codes[self.category_codes]
        self.n = len(self.rows)

    def nbytes(self) -> int:
        """Bytes of the arrays."""
        return sum(a.nbytes for a in (self.rows, self.times, self.revenue, self.category_codes))


# --- the projection ------------------------------------------------------------


class Projection:
    """Every profile the feed has told of, as columns; `apply` feeds it, readers read it."""

    def __init__(self) -> None:
        self.position = 0
        """The feed sequence of the last record applied."""
        self.n = 0
        """Rows in use; a merged or erased person's row stays, dead, until `compact`."""
        self.index = IdIndex()
        """Profile id (and merged ids) -> row."""
        self.alive: Array = np.zeros(0, dtype=np.bool_)
        self.traits: dict[str, TraitColumn] = {}
        self.identity_types: dict[str, int] = {}
        """Identity type -> bit number (column bit // 8, bit bit % 8)."""
        self.identity_bits: list[Array] = []
        self.series: dict[SeriesKey, Series] = {}
        self.purchases = Purchases()
        self._merged_into: dict[int, int] = {}
        """Rows merged away since the last settle -> the row they went into."""
        self._erased = False
        """A row died since the last settle: its entries are still held."""

    # --- rows -------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Profiles held (not merged away, not erased)."""
        return int(np.count_nonzero(self.alive[: self.n]))

    def _find(self, profile_id: str) -> int | None:
        row = self.index.get(profile_id)
        while row is not None and row in self._merged_into:
            row = self._merged_into[row]
        return row

    def _row(self, profile_id: str) -> int:
        row = self._find(profile_id)
        if row is not None:
            return row
        row = self.n
        self.n += 1
        if row >= len(self.alive):
            capacity = max(16, 2 * len(self.alive))
            self.alive = _grow(self.alive, capacity)
            for column in self.traits.values():
                column.codes = _grow(column.codes, capacity)
            self.identity_bits = [_grow(bits, capacity) for bits in self.identity_bits]
        self.alive[row] = True
        self.index.set(profile_id, row)
        return row

    # --- applying the feed --------------------------------------------------------

    def apply(self, records: Iterable[Record], position: int, today: int) -> None:
        """Apply records of the feed in order; `position` is the last one's sequence.

        `today` (a UTC day number) bounds the event history kept: days
        older than the longest window (400 days back) are not kept.
        """
        first_day = max(0, today - (MAX_WINDOW_DAYS - 1))
        for record in records:
            if isinstance(record, EventSeen):
                self._event(record, first_day)
            elif isinstance(record, ProfileChange):
                self._profile(record)
            elif isinstance(record, Merge):
                self._merge(record)
            else:
                self._erase(record)
        self.position = max(self.position, position)

    def _event(self, event: EventSeen, first_day: int) -> None:
        row = self._row(event.profile_id)
        if event.type == "purchase":
            self.purchases.append(
                row, event.timestamp_us, event.sums.get("revenue", 0.0), event.category
            )
        day = event.timestamp_us // DAY_US
        if not first_day <= day <= MAX_DAY:
            return
        keys: list[SeriesKey] = [(event.type, "", "")]
        keys.extend((event.type, prop, value) for prop, value in event.series.items())
        for key in keys:
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = Series()
            series.append(row, day, event.sums)

    def _set_identity(self, row: int, identity_type: str) -> None:
        bit = self.identity_types.get(identity_type)
        if bit is None:
            bit = self.identity_types[identity_type] = len(self.identity_types)
            if bit // 8 >= len(self.identity_bits):
                self.identity_bits.append(np.zeros(len(self.alive), dtype=np.uint8))
        self.identity_bits[bit // 8][row] |= np.uint8(1 << (bit % 8))

    def _profile(self, change: ProfileChange) -> None:
        row = self._row(change.profile_id)
        for name, column in self.traits.items():
            if name not in change.traits:
                column.codes[row] = 0
        for name, value in change.traits.items():
            if value is None:
                continue
            if name not in self.traits:
                self.traits[name] = TraitColumn(len(self.alive))
            trait = self.traits[name]
            trait.codes[row] = trait.code_of(value)
        for bits in self.identity_bits:
            bits[row] = 0
        for identity_type in change.identity_types:
            self._set_identity(row, identity_type)

    def _merge(self, merge: Merge) -> None:
        survivor = self._row(merge.survivor_id)
        merged = self._find(merge.merged_id)
        if merged is None or merged == survivor:
            # Rebuilt from the feed: the merged profile's records already
            # name the survivor (the log re-keys them), nothing to move.
            self.index.set(merge.merged_id, survivor)
            return
        # The survivor's traits win; the merged profile only fills gaps.
        for column in self.traits.values():
            if column.codes[survivor] == 0:
                column.codes[survivor] = column.codes[merged]
            column.codes[merged] = 0
        for bits in self.identity_bits:
            bits[survivor] |= bits[merged]
            bits[merged] = 0
        self.alive[merged] = False
        # Ids that named the merged row follow it through `_find` until `settle`.
        self._merged_into[merged] = survivor
        self.index.set(merge.merged_id, survivor)

    def _erase(self, erasure: Erasure) -> None:
        rows = set()
        for profile_id in (erasure.profile_id, *erasure.merged_ids):
            row = self._find(profile_id)
            self.index.pop(profile_id)
            if row is not None:
                rows.add(row)
        for row in rows:
            for column in self.traits.values():
                column.codes[row] = 0
            for bits in self.identity_bits:
                bits[row] = 0
            self.alive[row] = False
            self._erased = True

    # --- settling: what merges and erasures leave to do ---------------------------

    @property
    def holds_erased(self) -> bool:
        """Whether entries or values of an erased person are still held (until `settle`)."""
        return self._erased

    def _remap(self) -> Array | None:
        if not self._merged_into:
            return None
        remap = np.arange(max(self.n, 1), dtype=np.int64)
        for merged in self._merged_into:
            target = merged
            while target in self._merged_into:  # a chain of merges: follow it to the end
                target = self._merged_into[target]
            remap[merged] = target
        return remap

    def settle(self) -> None:
        """Move merged rows' history to their survivors, remove what erased people left."""
        remap = self._remap()
        alive = self.alive[: max(self.n, 1)]
        for series in list(self.series.values()):
            series.settle(remap, alive, self._erased)
        for key in [k for k, s in self.series.items() if s.n == 0]:
            del self.series[key]
        self.purchases.settle(remap, alive, self._erased)
        if remap is not None or self._erased:
            for column in self.traits.values():
                column.tidy()
            self.index.remap(remap, alive)
        self._merged_into = {}
        self._erased = False

    def series_of(self, key: SeriesKey) -> Series | None:
        """A settled series, or None when no event of it is held."""
        series = self.series.get(key)
        if series is None:
            return None
        if not series.settled or self._merged_into:
            series.settle(self._remap(), self.alive[: max(self.n, 1)])
        return series

    def settled_purchases(self) -> Purchases:
        """The purchases, merged rows re-keyed."""
        self.purchases.settle(self._remap(), self.alive[: max(self.n, 1)])
        return self.purchases

    # --- reading ------------------------------------------------------------------

    def identity_mask(self, identity_type: str) -> Array:
        """Rows whose profile has an identity of the type."""
        bit = self.identity_types.get(identity_type)
        if bit is None:
            return np.zeros(self.n, dtype=np.bool_)
        held: Array = (self.identity_bits[bit // 8][: self.n] & np.uint8(1 << (bit % 8))) != 0
        return held

    def nbytes(self) -> int:
        """Bytes held, arrays and the Python objects of the index and value tables."""
        arrays = self.alive.nbytes + sum(b.nbytes for b in self.identity_bits)
        arrays += sum(c.codes.nbytes for c in self.traits.values())
        arrays += sum(s.nbytes() for s in self.series.values()) + self.purchases.nbytes()
        objects = self.index.nbytes()
        objects += sum(
            sys.getsizeof(c.values)
            + sys.getsizeof(c.lookup)
            + sum(sys.getsizeof(v) for v in c.values)
            for c in self.traits.values()
        )
        return arrays + objects

    # --- persisting -----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The projection as one blob (settled, dead rows left out).

        A few large arrays, the series' entries concatenated, so storing and
        loading cost one copy of the data each (an `.npz`, uncompressed).
        """
        self.settle()
        keep = self.alive[: self.n]
        new_row = np.cumsum(keep) - 1
        series = list(self.series.values())
        sums = sorted({name for item in series for name in item.sums})
        header: dict[str, Any] = {
            "version": 2,
            "position": self.position,
            "rows": int(np.count_nonzero(keep)),
            "other_ids": {p: int(new_row[r]) for p, r in self.index._other.items()},
            "traits": {name: c.values[1:] for name, c in self.traits.items()},
            "identity_types": self.identity_types,
            "series": [list(key) for key in self.series],
            "sums": [[name in item.sums for name in sums] for item in series],
            "sum_names": sums,
            "categories": sorted(self.purchases.categories, key=self.purchases.categories.get),  # type: ignore[arg-type]
        }
        self.index._fold()
        empty_rows = np.zeros(0, dtype=np.int32)
        rows = np.concatenate([empty_rows, *(item.rows[: item.n] for item in series)])
        arrays: dict[str, Array] = {
            "index.keys": self.index._keys,
            "index.rows": new_row[self.index._rows].astype(np.int32),
            "s.lengths": np.array([item.n for item in series], dtype=np.int64),
            "s.rows": new_row[rows].astype(np.int32),
            "s.days": np.concatenate(
                [np.zeros(0, np.uint16), *(item.days[: item.n] for item in series)]
            ),
            "s.counts": np.concatenate(
                [np.zeros(0, np.uint32), *(item.counts[: item.n] for item in series)]
            ).astype(np.uint32),
        }
        for name in sums:
            arrays[f"s.sum.{name}"] = np.concatenate(
                [np.zeros(0)] + [item.sums[name][: item.n] for item in series if name in item.sums]
            )
        for i, column in enumerate(self.traits.values()):
            arrays[f"trait{i}"] = column.codes[: self.n][keep]
        for i, bits in enumerate(self.identity_bits):
            arrays[f"identity{i}"] = bits[: self.n][keep]
        p = self.purchases
        arrays["p.rows"] = new_row[p.rows[: p.n]].astype(np.int32)
        arrays["p.times"] = p.times[: p.n]
        arrays["p.revenue"] = p.revenue[: p.n]
        arrays["p.categories"] = p.category_codes[: p.n]
        buffer = io.BytesIO()
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Projection:
        """A projection stored by `to_bytes`."""
        with np.load(io.BytesIO(data)) as stored:
            header = json.loads(stored["header"].tobytes().decode())
            projection = cls()
            projection.position = int(header["position"])
            n = int(header["rows"])
            projection.n = n
            projection.index._keys = stored["index.keys"]
            projection.index._rows = stored["index.rows"]
            projection.index._other = {p: int(r) for p, r in header["other_ids"].items()}
            projection.alive = np.ones(n, dtype=np.bool_)
            for i, (name, values) in enumerate(header["traits"].items()):
                column = TraitColumn(0)
                column.values = [None, *values]
                column.lookup = {
                    _value_key(v): code for code, v in enumerate(column.values) if code
                }
                column.codes = stored[f"trait{i}"]
                projection.traits[name] = column
            projection.identity_types = {k: int(v) for k, v in header["identity_types"].items()}
            projection.identity_bits = [
                stored[f"identity{i}"] for i in range((len(projection.identity_types) + 7) // 8)
            ]
            names: list[str] = header["sum_names"]
            rows, days, counts = stored["s.rows"], stored["s.days"], stored["s.counts"]
            sums = {name: stored[f"s.sum.{name}"] for name in names}
            sum_at = dict.fromkeys(names, 0)
            start = 0
            lengths = stored["s.lengths"].tolist()
            for key, length, present in zip(header["series"], lengths, header["sums"], strict=True):
                item = Series()
                end = start + length
                item.rows, item.days = rows[start:end].copy(), days[start:end].copy()
                wide = length and int(counts[start:end].max()) > 0xFFFF
                item.counts = counts[start:end].astype(np.uint32 if wide else np.uint16)
                for name, held in zip(names, present, strict=True):
                    if held:
                        item.sums[name] = sums[name][sum_at[name] : sum_at[name] + length].copy()
                        sum_at[name] += length
                item.n = length
                projection.series[(key[0], key[1], key[2])] = item
                start = end
            p = projection.purchases
            p.rows = stored["p.rows"]
            p.times = stored["p.times"]
            p.revenue = stored["p.revenue"]
            p.category_codes = stored["p.categories"]
            p.categories = {name: code for code, name in enumerate(header["categories"])}
            p.n = len(p.rows)
        return projection
