"""A rule evaluated over the whole projection at once: the size and value of an audience.

The rule tree is compiled to numpy operations over the projection's columns
(`projection.Projection`), never to a loop over profiles:

- a comparison of a trait with a literal is decided once per *distinct*
  value of the trait, with the same function the per-profile evaluator uses
  (`compiler.compare_values`), and the answer is spread to every row by
  indexing;
- counts, sums and features are float arrays compared in one numpy
  operation, with the rule language's typing (a number never equals a
  string, null orders with nothing);
- a comparison of two attributes is decided once per distinct pair;
- `and`, `or`, `not` are elementwise.

So a rule means here exactly what it means for one profile in
`EvaluateSegments`, for every profile the way it is between visits: what a
rule reads of a live visit (the hot session, the request's channel and
context, the conversion probability predicted from the session) has no
value when sizing an audience. Those are evaluated as for a visitor with no
live session and no request (counts 0, `searched` false, channel, context
and conversion probability null) and named, with the reason, in
`Estimate.left_out`. docs/segments-size.md says why.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from .compiler import compare_values, truthy
from .nodes import (
    And,
    CategoryViews,
    ChannelRef,
    Compare,
    Condition,
    ContextRef,
    EventCount,
    EventSum,
    FeatureRef,
    HasIdentity,
    InSegment,
    Interest,
    Literal,
    Not,
    Or,
    ProductViews,
    Searched,
    SessionField,
    TraitRef,
    Truth,
    Value,
)
from .printer import print_value
from .projection import DAY_US, Array, Projection
from .subject import utc_day

_DOUBLE_MAX = sys.float_info.max
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_ORDERING: dict[str, Callable[[Array, Any], Array]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}

DEFAULT_GOAL_EVENT_TYPE = "purchase"
"""The goal of conversion rate and revenue per member when the request names none."""
DEFAULT_WINDOW_DAYS = 30
"""Days of goal events counted when the request names none."""

SESSION_REASON = (
    "reads the live visit; sizing counts every profile between visits (no live "
    "session), where it is 0"
)
REQUEST_REASON = "describes a request; sizing has none, so it is null"
PROBABILITY_REASON = (
    "is predicted from the live session by the profile service's model; sizing "
    "reads it as null, so no comparison with a number matches"
)
INTEREST_REASON = (
    "adds the live session's category views; sizing counts the purchase part only "
    "(the value between visits)"
)


@dataclass(frozen=True)
class InterestRules:
    """How category interest decays; the profile service's settings of the same name."""

    half_life_days: float = 30.0
    suppress_days: float = 30.0


DEFAULT_INTERESTS = InterestRules()


@dataclass(frozen=True)
class LeftOut:
    """A live-visit attribute a sized rule reads, and how sizing counted it."""

    attribute: str
    reason: str


@dataclass(frozen=True)
class Estimate:
    """The size and value of an audience over the projection.

    `converters` are members with at least one goal event in the window,
    `revenue` the sum of those events' `revenue` property over members.
    """

    members: int
    total: int
    converters: int
    revenue: float
    goal_event_type: str
    window_days: int
    as_of_sequence: int
    left_out: tuple[LeftOut, ...] = ()

    @property
    def fraction(self) -> float:
        """members / total; 0 when there are no profiles."""
        return self.members / self.total if self.total else 0.0

    @property
    def conversion_rate(self) -> float:
        """converters / members; 0 for an empty audience."""
        return self.converters / self.members if self.members else 0.0

    @property
    def revenue_per_member(self) -> float:
        """revenue / members; 0 for an empty audience."""
        return self.revenue / self.members if self.members else 0.0


# --- columns of one evaluation ---------------------------------------------------


@dataclass(frozen=True)
class _Const:
    """The same value for every row."""

    value: Any


@dataclass(frozen=True)
class _Coded:
    """A value per row as a code into a table of distinct values."""

    codes: Array
    values: list[Any]


@dataclass(frozen=True)
class _Numbers:
    """A number per row; `null` marks rows whose value is null (None: none is)."""

    values: Array
    null: Array | None = None


@dataclass(frozen=True)
class _Flags:
    """A boolean per row."""

    values: Array


_Column: TypeAlias = _Const | _Coded | _Numbers | _Flags


def _lut(values: list[Any], decide: Callable[[Any], bool]) -> Array:
    return np.fromiter((decide(v) for v in values), dtype=np.bool_, count=len(values))


def _as_coded(column: _Column, n: int) -> _Coded:
    """Any column as codes and distinct values (for comparing two attributes)."""
    if isinstance(column, _Coded):
        return column
    if isinstance(column, _Const):
        return _Coded(np.zeros(n, dtype=np.uint8), [column.value])
    if isinstance(column, _Flags):
        return _Coded(column.values.astype(np.uint8), [False, True])
    unique, inverse = np.unique(column.values, return_inverse=True)
    values: list[Any] = unique.tolist()
    codes = inverse.astype(np.int64)
    if column.null is not None:
        codes = np.where(column.null, len(values), codes)
        values.append(None)
    return _Coded(codes, values)


def _numbers_against(op: str, column: _Numbers, constant: Any) -> Array:
    """`row op constant` for a number column, typed as the rule language types it."""
    n = len(column.values)
    present = ~column.null if column.null is not None else np.ones(n, dtype=np.bool_)
    is_number = type(constant) is int or type(constant) is float
    if op in ("in", "not in"):
        hit = np.zeros(n, dtype=np.bool_)
        if isinstance(constant, tuple):
            numbers = [float(x) for x in constant if type(x) is int or type(x) is float]
            if numbers:
                hit = np.isin(column.values, np.array(numbers)) & present
            if column.null is not None and any(x is None for x in constant):
                hit |= column.null
        return hit if op == "in" else ~hit
    if op in ("==", "!="):
        if constant is None:
            equal = column.null.copy() if column.null is not None else np.zeros(n, np.bool_)
        elif is_number:
            equal = (column.values == float(constant)) & present
        else:
            equal = np.zeros(n, dtype=np.bool_)
        return equal if op == "==" else ~equal
    if not is_number:
        return np.zeros(n, dtype=np.bool_)
    return _ORDERING[op](column.values, float(constant)) & present


class _Evaluation:
    """One rule's evaluation over one projection at one moment."""

    def __init__(
        self,
        projection: Projection,
        segments: Mapping[str, Condition],
        now: dt.datetime,
        interests: InterestRules,
    ) -> None:
        self.projection = projection
        self.n = projection.n
        self.segments = segments
        self.today = utc_day(now)
        self.now_us = (now - _EPOCH) // dt.timedelta(microseconds=1)
        self.interests = interests
        self.left_out: dict[str, str] = {}
        self._values: dict[Value, _Column] = {}
        self._memberships: dict[str, Array] = {}
        self._purchases: tuple[Array, Array, Array] | None = None

    # --- conditions

    def condition(self, node: Condition) -> Array:
        """Rows for which `node` holds."""
        if isinstance(node, And):
            result = self.condition(node.operands[0])
            for operand in node.operands[1:]:
                result = result & self.condition(operand)
            return result
        if isinstance(node, Or):
            result = self.condition(node.operands[0])
            for operand in node.operands[1:]:
                result = result | self.condition(operand)
            return result
        if isinstance(node, Not):
            return ~self.condition(node.operand)
        if isinstance(node, Truth):
            return self._truth(self.value(node.value))
        return self._compare(node)

    def _truth(self, column: _Column) -> Array:
        if isinstance(column, _Const):
            return np.full(self.n, truthy(column.value), dtype=np.bool_)
        if isinstance(column, _Flags):
            return column.values
        if isinstance(column, _Numbers):
            result = column.values != 0
            held: Array = result & ~column.null if column.null is not None else result
            return held
        return _lut(column.values, truthy)[column.codes]

    def _compare(self, node: Compare) -> Array:
        op, left, right = node.op, node.left, node.right
        mirror = isinstance(left, Literal) and not isinstance(right, Literal)
        if mirror and op not in ("in", "not in"):
            left, right, op = right, left, _MIRRORED[op]  # type: ignore[assignment]
        a, b = self.value(left), self.value(right)
        if isinstance(b, _Const):
            constant = b.value
            if isinstance(a, _Const):
                return np.full(self.n, compare_values(op, a.value, constant), dtype=np.bool_)
            if isinstance(a, _Numbers):
                return _numbers_against(op, a, constant)
            coded = _as_coded(a, self.n)
            return _lut(coded.values, lambda v: compare_values(op, v, constant))[coded.codes]
        if isinstance(a, _Const) and op in ("in", "not in"):
            if isinstance(b, _Numbers | _Flags):  # a number or a boolean contains nothing
                return np.full(self.n, op == "not in", dtype=np.bool_)
            item = a.value
            coded = _as_coded(b, self.n)
            return _lut(coded.values, lambda v: compare_values(op, item, v))[coded.codes]
        if isinstance(a, _Numbers) and isinstance(b, _Numbers) and op not in ("in", "not in"):
            present = np.ones(self.n, dtype=np.bool_)
            for column in (a, b):
                if column.null is not None:
                    present &= ~column.null
            if op in ("==", "!="):
                both_null = np.zeros(self.n, dtype=np.bool_)
                if a.null is not None and b.null is not None:
                    both_null = a.null & b.null
                equal = ((a.values == b.values) & present) | both_null
                decided: Array = equal if op == "==" else ~equal
                return decided
            ordered: Array = np.asarray(_ORDERING[op](a.values, b.values)) & present
            return ordered
        # Two attributes: decided once per distinct pair of values.
        left_coded, right_coded = _as_coded(a, self.n), _as_coded(b, self.n)
        width = len(right_coded.values)
        pairs = left_coded.codes.astype(np.int64) * width + right_coded.codes.astype(np.int64)
        unique, inverse = np.unique(pairs, return_inverse=True)
        lut = np.fromiter(
            (
                compare_values(op, left_coded.values[p // width], right_coded.values[p % width])
                for p in unique.tolist()
            ),
            dtype=np.bool_,
            count=len(unique),
        )
        return lut[inverse]

    # --- values

    def value(self, node: Value) -> _Column:
        """The column of a value, computed once per evaluation."""
        if isinstance(node, Literal):
            # Not cached: Literal(False) == Literal(0) as dataclasses, not as rule values.
            return _Const(node.value)
        column = self._values.get(node)
        if column is None:
            column = self._values[node] = self._compute(node)
        return column

    def _left_out(self, node: Value, reason: str) -> None:
        self.left_out.setdefault(print_value(node), reason)

    def _compute(self, node: Value) -> _Column:
        projection = self.projection
        if isinstance(node, Literal):
            return _Const(node.value)
        if isinstance(node, TraitRef):
            trait = projection.traits.get(node.path[0])
            if trait is None:
                return _Const(None)
            values = trait.values
            if len(node.path) > 1:
                values = [_follow(v, node.path[1:]) for v in values]
            return _Coded(trait.codes[: self.n], values)
        if isinstance(node, HasIdentity):
            return _Flags(projection.identity_mask(node.identity_type))
        if isinstance(node, InSegment):
            return _Flags(self.membership(node.key))
        if isinstance(node, EventCount):
            return _Numbers(self._window(node.event_type, node.where, node.window_days, None))
        if isinstance(node, EventSum):
            total = self._window(node.event_type, node.where, node.window_days, node.property)
            return _Numbers(np.clip(total, -_DOUBLE_MAX, _DOUBLE_MAX))
        if isinstance(node, FeatureRef):
            return self._feature(node)
        if isinstance(node, Interest):
            self._left_out(node, INTEREST_REASON)
            return _Numbers(self._interest(node.category))
        if isinstance(node, SessionField | CategoryViews | ProductViews):
            self._left_out(node, SESSION_REASON)
            return _Const(0)
        if isinstance(node, Searched):
            self._left_out(node, SESSION_REASON.replace("where it is 0", "where it is false"))
            return _Const(False)
        if isinstance(node, ChannelRef | ContextRef):
            self._left_out(node, REQUEST_REASON)
            return _Const(None)
        raise TypeError(f"not a rule value: {node!r}")

    def membership(self, key: str) -> Array:
        """Rows in segment `key` (not a member when the key is unknown)."""
        members = self._memberships.get(key)
        if members is None:
            rule = self.segments.get(key)
            members = self.condition(rule) if rule is not None else np.zeros(self.n, dtype=np.bool_)
            self._memberships[key] = members
        return members

    def _window(self, event_type: str, where: Any, window_days: int, prop: str | None) -> Array:
        key = (event_type, where.property, where.value) if where else (event_type, "", "")
        series = self.projection.series_of(key)
        if series is None:
            return np.zeros(self.n, dtype=np.float64)
        window = series.window(self.today - (window_days - 1))
        rows = series.rows[window]
        if prop is None:
            weights = series.counts[window]
        else:
            sums = series.sums.get(prop)
            if sums is None:
                return np.zeros(self.n, dtype=np.float64)
            weights = sums[window]
        # bincount adds each row's days in day order, as the profile service's sum does.
        return np.bincount(rows, weights=weights, minlength=self.n)[: self.n]

    def _purchase_totals(self) -> tuple[Array, Array, Array]:
        """Per row: orders, revenue, time of the last purchase (µs; now when none)."""
        if self._purchases is None:
            purchases = self.projection.settled_purchases()
            rows = purchases.rows[: purchases.n]
            orders = np.bincount(rows, minlength=self.n)[: self.n].astype(np.float64)
            revenue = np.bincount(rows, weights=purchases.revenue[: purchases.n], minlength=self.n)
            last = _latest(rows, purchases.times[: purchases.n], self.n, self.now_us)
            revenue = np.clip(revenue[: self.n], -_DOUBLE_MAX, _DOUBLE_MAX)
            self._purchases = (orders, revenue, last)
        return self._purchases

    def _age_days(self, last_us: Array) -> Array:
        # (now - last).total_seconds() / 86400, as the profile service computes it;
        # a purchase stamped a little ahead of now was bought now.
        seconds = (self.now_us - last_us).astype(np.float64) / 1e6
        return np.maximum(0.0, seconds / 86_400.0)

    def _feature(self, node: FeatureRef) -> _Column:
        if node.path == ("conversion_probability",):
            self._left_out(node, PROBABILITY_REASON)
            return _Const(None)
        orders, revenue, last = self._purchase_totals()
        if node.path == ("rfm", "frequency"):
            return _Numbers(orders)
        if node.path == ("rfm", "recency_days"):
            never = orders == 0
            return _Numbers(np.round(self._age_days(last), 3), never)
        return _Numbers(revenue)  # lifetime_value, rfm.monetary

    def _interest(self, category: str) -> Array:
        purchases = self.projection.settled_purchases()
        code = purchases.categories.get(category)
        if code is None:
            return np.zeros(self.n, dtype=np.float64)
        chosen = purchases.category_codes[: purchases.n] == code
        rows = purchases.rows[: purchases.n][chosen]
        count = np.bincount(rows, minlength=self.n)[: self.n].astype(np.float64)
        last = _latest(rows, purchases.times[: purchases.n][chosen], self.n, self.now_us)
        age = self._age_days(last)
        # score = purchases * 2^(-age / half-life), 0 while the need is met
        # (bought within suppress_days): docs/interests.md.
        score = count * np.power(2.0, -age / self.interests.half_life_days)
        score[(age < self.interests.suppress_days) | (count == 0)] = 0.0
        return score


def _latest(rows: Array, times: Array, n: int, default: int) -> Array:
    """Per row, the latest of its times; `default` for rows without any."""
    latest = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(latest, rows, times)
    return np.where(latest == np.iinfo(np.int64).min, default, latest)


def _follow(value: Any, path: tuple[str, ...]) -> Any:
    """A nested trait's part, None where the path leads nowhere (as the evaluator reads it)."""
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def members(
    projection: Projection,
    rule: Condition,
    segments: Mapping[str, Condition],
    now: dt.datetime,
    interests: InterestRules = DEFAULT_INTERESTS,
) -> Array:
    """Which rows (alive or not: `projection.alive` says) the rule holds for, at `now`."""
    evaluation = _Evaluation(projection, segments, now, interests)
    return evaluation.condition(rule) & projection.alive[: projection.n]


def estimate(
    projection: Projection,
    rule: Condition,
    segments: Mapping[str, Condition],
    now: dt.datetime,
    goal_event_type: str = DEFAULT_GOAL_EVENT_TYPE,
    window_days: int = DEFAULT_WINDOW_DAYS,
    interests: InterestRules = DEFAULT_INTERESTS,
) -> Estimate:
    """The size and value of the audience of `rule` over every profile of the projection.

    `segments` are the rules of the segments `segment("key")` may name.
    Value: members with a `goal_event_type` event in the last `window_days`
    UTC days (the window of `count(...)`), and the sum of those events'
    `revenue` over members.
    """
    evaluation = _Evaluation(projection, segments, now, interests)
    alive = projection.alive[: projection.n]
    chosen = evaluation.condition(rule) & alive
    goal = EventCount(goal_event_type, window_days)
    counts = evaluation.value(goal)
    assert isinstance(counts, _Numbers)
    revenue = evaluation.value(EventSum(goal_event_type, "revenue", window_days))
    assert isinstance(revenue, _Numbers)
    return Estimate(
        members=int(np.count_nonzero(chosen)),
        total=int(np.count_nonzero(alive)),
        converters=int(np.count_nonzero(chosen & (counts.values > 0))),
        revenue=float(np.clip(revenue.values[chosen].sum(), -_DOUBLE_MAX, _DOUBLE_MAX)),
        goal_event_type=goal_event_type,
        window_days=window_days,
        as_of_sequence=projection.position,
        left_out=tuple(LeftOut(a, r) for a, r in evaluation.left_out.items()),
    )


__all__ = [
    "DAY_US",
    "DEFAULT_GOAL_EVENT_TYPE",
    "DEFAULT_INTERESTS",
    "DEFAULT_WINDOW_DAYS",
    "Estimate",
    "InterestRules",
    "LeftOut",
    "estimate",
    "members",
]
