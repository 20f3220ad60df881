"""Compile a rule tree into nested closures that evaluate a Subject.

The tree is walked once, at compile time; evaluation only calls closures, and
comparisons against literals are specialised (a set lookup for `in [...]`, a
type check and one operator for `>= 2`).

Value semantics, the same in both notations:

- A missing trait, context field or feature, an unknown channel and JSON
  null are all *null*.
- `==` is strict: numbers equal numbers (1 == 1.0), strings equal strings,
  booleans equal booleans (true is not 1), null equals only null. `!=` is
  exactly `not ==`, so a missing value is `!= "x"` and `== null`.
- `<`, `<=`, `>`, `>=` compare two numbers or two strings (strings by code
  point, which orders ISO dates); anything else, null included, is false.
- `x in [..]` is true when some item `==` x; `x in "text"` tests a substring
  (both strings); `x in <attribute>` does either, by the attribute's value.
  Anything else is false; `not in` is exactly `not in`.
- A value used as a condition is true unless it is false, null, 0, "" or [].
- Counts (session counters, category and product views, event counts and
  sums, interests) are 0, never null, when absent.

Nothing raises at evaluation time for any data in the Subject: traits and
context are free-form and read defensively; session and features are typed
values read by attribute.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from .nodes import (
    And,
    CategoryViews,
    ChannelRef,
    Compare,
    Condition,
    ContextRef,
    EventCount,
    EventFilter,
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
from .subject import FeaturesView, SessionView, Subject

Memberships = Mapping[str, bool]
_Getter = Callable[[Subject, Memberships], Any]
_Predicate = Callable[[Subject, Memberships], bool]

_NO_MEMBERSHIPS: Memberships = {}
_NUMBER_TYPES = (int, float)
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# `1 < x` is `x > 1`: lets a literal on the left use the fast paths too.
_MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class CompiledRule:
    """A rule ready to evaluate: `rule(subject)` -> bool.

    `memberships` maps segment keys to the subject's membership, for rules
    that use `segment("key")`; a key it lacks counts as not a member.
    `CompiledSegments` fills it in dependency order.
    """

    __slots__ = ("_predicate", "rule")

    def __init__(self, rule: Condition, predicate: _Predicate) -> None:
        self.rule = rule
        self._predicate = predicate

    def __call__(self, subject: Subject, memberships: Memberships = _NO_MEMBERSHIPS) -> bool:
        return self._predicate(subject, memberships)


def compile_rule(rule: Condition) -> CompiledRule:
    """Compile a rule tree into a callable `Subject -> bool`."""
    return CompiledRule(rule, _predicate(rule))


# --- value semantics --------------------------------------------------------


def _is_number(value: object) -> bool:
    # bool is an int subclass; exact type checks keep true from equalling 1.
    kind = type(value)
    return kind is int or kind is float


def values_equal(a: object, b: object) -> bool:
    """Tessera's strict equality (see the module docstring)."""
    if a is None or b is None:
        return a is b
    if type(a) is bool or type(b) is bool:
        return a is b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _ordered(compare: Callable[[Any, Any], bool], a: object, b: object) -> bool:
    if (_is_number(a) and _is_number(b)) or (type(a) is str and type(b) is str):
        return compare(a, b)
    return False


def _contains(container: object, item: object) -> bool:
    if isinstance(container, list | tuple):
        return any(values_equal(item, x) for x in container)
    if type(container) is str and type(item) is str:
        return item in container
    return False


def _truthy(value: object) -> bool:
    if isinstance(value, Mapping):
        return True  # as in JsonLogic, an object is true even when empty
    try:
        return bool(value)
    except Exception:  # an exotic object from the caller must not break evaluation
        return False


def compare_values(op: str, a: object, b: object) -> bool:
    """`a op b` for any two values, as a compiled rule decides it.

    The one definition that the fast paths above specialise; the vectorised
    evaluation (`estimate`) decides a comparison with it once per distinct
    value, so both give the same answer.
    """
    if op == "==":
        return values_equal(a, b)
    if op == "!=":
        return not values_equal(a, b)
    if op == "in":
        return _contains(b, a)
    if op == "not in":
        return not _contains(b, a)
    return _ordered(_ORDERING[op], a, b)


def truthy(value: object) -> bool:
    """Whether a value used as a condition holds (see the module docstring)."""
    return _truthy(value)


# --- values -----------------------------------------------------------------


def _path_getter(root: Callable[[Subject], Mapping[str, Any]], path: tuple[str, ...]) -> _Getter:
    if len(path) == 1:
        (key,) = path

        def get_one(s: Subject, m: Memberships) -> Any:
            return root(s).get(key)

        return get_one

    def get_nested(s: Subject, m: Memberships) -> Any:
        current: Any = root(s)
        for part in path:
            if not isinstance(current, Mapping):
                return None
            current = current.get(part)
        return current

    return get_nested


def _cart_size(session: SessionView) -> int:
    return sum(line.quantity for line in session.cart)


def _cart_value(session: SessionView) -> float:
    total = 0.0
    for line in session.cart:
        total += line.price * line.quantity
    return total


# One reader per name in nodes.SESSION_FIELDS and nodes.FEATURE_PATHS.
_SESSION_FIELDS: dict[str, Callable[[SessionView], int | float]] = {
    "page_views": lambda session: session.page_views,
    "time_spent_ms": lambda session: session.time_spent_ms,
    "events": lambda session: session.events,
    "cart_size": _cart_size,
    "cart_value": _cart_value,
    "favorites": lambda session: len(session.favorites),
    "searches": lambda session: len(session.searches),
}
_FEATURES: dict[tuple[str, ...], Callable[[FeaturesView], int | float | None]] = {
    ("lifetime_value",): lambda features: features.lifetime_value,
    ("conversion_probability",): lambda features: features.conversion_probability,
    ("rfm", "recency_days"): lambda features: features.rfm.recency_days,
    ("rfm", "frequency"): lambda features: features.rfm.frequency,
    ("rfm", "monetary"): lambda features: features.rfm.monetary,
}


def _session_field(name: str) -> _Getter:
    read = _SESSION_FIELDS[name]
    return lambda s, m: read(s.session)


def _feature(path: tuple[str, ...]) -> _Getter:
    read = _FEATURES[path]
    return lambda s, m: read(s.features) if s.features is not None else None


def _category_views(category: str) -> _Getter:
    return lambda s, m: s.session.category_views.get(category, 0)


def _product_views(product_id: str) -> _Getter:
    return lambda s, m: s.session.product_views.get(product_id, 0)


def _searched(text: str) -> _Getter:
    needle = text.casefold()

    def get(s: Subject, m: Memberships) -> Any:
        return any(needle in query.casefold() for query in s.session.searches)

    return get


def _interest(category: str) -> _Getter:
    def get(s: Subject, m: Memberships) -> Any:
        return s.features.interests.get(category, 0.0) if s.features is not None else 0.0

    return get


def _series_key(event_type: str, where: EventFilter | None) -> tuple[str, str, str]:
    return (event_type, where.property, where.value) if where else (event_type, "", "")


def _event_count(key: tuple[str, str, str], window_days: int) -> _Getter:
    back = window_days - 1

    def count(s: Subject, m: Memberships) -> Any:
        series = s.history.series.get(key)
        return series.count_since(s.history.today - back) if series is not None else 0

    return count


def _event_sum(key: tuple[str, str, str], prop: str, window_days: int) -> _Getter:
    back = window_days - 1

    def total(s: Subject, m: Memberships) -> Any:
        series = s.history.series.get(key)
        return series.sum_since(prop, s.history.today - back) if series is not None else 0.0

    return total


def _getter(value: Value) -> _Getter:
    if isinstance(value, Literal):
        constant: Any = value.value
        return lambda s, m: constant
    if isinstance(value, TraitRef):
        return _path_getter(lambda s: s.traits, value.path)
    if isinstance(value, ContextRef):
        return _path_getter(lambda s: s.context, value.path)
    if isinstance(value, ChannelRef):
        return lambda s, m: s.channel or None
    if isinstance(value, SessionField):
        return _session_field(value.name)
    if isinstance(value, CategoryViews):
        return _category_views(value.category)
    if isinstance(value, ProductViews):
        return _product_views(value.product_id)
    if isinstance(value, Searched):
        return _searched(value.text)
    if isinstance(value, FeatureRef):
        return _feature(value.path)
    if isinstance(value, Interest):
        return _interest(value.category)
    if isinstance(value, HasIdentity):
        identity_type = value.identity_type
        return lambda s, m: identity_type in s.identity_types
    if isinstance(value, InSegment):
        key = value.key
        return lambda s, m: m.get(key, False)
    if isinstance(value, EventCount):
        return _event_count(_series_key(value.event_type, value.where), value.window_days)
    if isinstance(value, EventSum):
        return _event_sum(
            _series_key(value.event_type, value.where), value.property, value.window_days
        )
    raise TypeError(f"not a rule value: {value!r}")


# --- conditions -------------------------------------------------------------


def _equals_literal(get: _Getter, constant: object) -> _Predicate:
    if constant is None or type(constant) is bool:
        return lambda s, m: get(s, m) is constant
    if type(constant) is str:
        return lambda s, m: get(s, m) == constant  # only a str equals a str
    if _is_number(constant):

        def number_equals(s: Subject, m: Memberships) -> bool:
            v = get(s, m)
            return (type(v) is int or type(v) is float) and v == constant

        return number_equals
    return lambda s, m: values_equal(get(s, m), constant)


def _order_literal(get: _Getter, op: str, constant: object) -> _Predicate:
    compare = _ORDERING[op]
    if _is_number(constant):

        def number_order(s: Subject, m: Memberships) -> bool:
            v = get(s, m)
            return (type(v) is int or type(v) is float) and compare(v, constant)

        return number_order
    if type(constant) is str:

        def string_order(s: Subject, m: Memberships) -> bool:
            v = get(s, m)
            return type(v) is str and compare(v, constant)

        return string_order
    return lambda s, m: False  # null, booleans and lists have no order


def _in_literal(get: _Getter, constant: object) -> _Predicate:
    if isinstance(constant, tuple):
        items = tuple(constant)
        if items and all(type(x) is str for x in items):
            strings = frozenset(items)
            return lambda s, m: type(v := get(s, m)) is str and v in strings
        if items and all(_is_number(x) for x in items):
            numbers = frozenset(items)

            def number_in(s: Subject, m: Memberships) -> bool:
                v = get(s, m)
                return (type(v) is int or type(v) is float) and v in numbers

            return number_in
        return lambda s, m: _contains(items, get(s, m))
    if type(constant) is str:
        text = constant
        return lambda s, m: type(v := get(s, m)) is str and v in text
    return lambda s, m: False


def _compare(node: Compare) -> _Predicate:
    op, left, right = node.op, node.left, node.right
    if op in ("in", "not in"):
        get = _getter(left)
        if isinstance(right, Literal):
            positive = _in_literal(get, right.value)
        else:
            get_container = _getter(right)

            def positive(s: Subject, m: Memberships) -> bool:
                return _contains(get_container(s, m), get(s, m))

        return positive if op == "in" else _negate(positive)
    # Put a literal on the right so that the specialised paths apply.
    if isinstance(left, Literal) and not isinstance(right, Literal):
        left, right, op = right, left, _MIRRORED[op]  # type: ignore[assignment]
    get_left = _getter(left)
    if isinstance(right, Literal):
        constant: Any = right.value
        if op in ("==", "!="):
            equal = _equals_literal(get_left, constant)
            return equal if op == "==" else _negate(equal)
        return _order_literal(get_left, op, constant)
    get_right = _getter(right)
    if op in ("==", "!="):

        def equal_values(s: Subject, m: Memberships) -> bool:
            return values_equal(get_left(s, m), get_right(s, m))

        return equal_values if op == "==" else _negate(equal_values)
    compare = _ORDERING[op]
    return lambda s, m: _ordered(compare, get_left(s, m), get_right(s, m))


def _negate(predicate: _Predicate) -> _Predicate:
    return lambda s, m: not predicate(s, m)


def _all(predicates: tuple[_Predicate, ...]) -> _Predicate:
    if len(predicates) == 2:
        a, b = predicates
        return lambda s, m: a(s, m) and b(s, m)

    def every(s: Subject, m: Memberships) -> bool:
        return all(predicate(s, m) for predicate in predicates)

    return every


def _any(predicates: tuple[_Predicate, ...]) -> _Predicate:
    if len(predicates) == 2:
        a, b = predicates
        return lambda s, m: a(s, m) or b(s, m)

    def some(s: Subject, m: Memberships) -> bool:
        return any(predicate(s, m) for predicate in predicates)

    return some


def _predicate(node: Condition) -> _Predicate:
    if isinstance(node, Compare):
        return _compare(node)
    if isinstance(node, Truth):
        get = _getter(node.value)
        if isinstance(node.value, HasIdentity | InSegment | Searched):
            return get  # already a bool
        return lambda s, m: _truthy(get(s, m))
    if isinstance(node, Not):
        return _negate(_predicate(node.operand))
    if isinstance(node, And):
        return _all(tuple(_predicate(o) for o in node.operands))
    if isinstance(node, Or):
        return _any(tuple(_predicate(o) for o in node.operands))
    raise TypeError(f"not a rule condition: {node!r}")
