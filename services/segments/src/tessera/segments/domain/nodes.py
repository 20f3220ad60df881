"""The typed syntax tree that both rule notations compile to.

A rule is a *condition* (something true or false) built from *values*
(literals, profile attributes, session and feature lookups, event windows).
Every node is a frozen dataclass, so trees compare by value, hash, and can be
shared between threads and cached safely.

Constructors check the invariants the parsers and the printer rely on (for
example a window is a whole number of minutes, a path part is an identifier),
and raise `RuleNodeError` when one does not hold: building an invalid node by
hand is a programming error, not bad user input.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal as Lit
from typing import TypeAlias

from tessera.channels import CHANNELS

Scalar: TypeAlias = str | int | float | bool | None
LiteralValue: TypeAlias = Scalar | tuple[Scalar, ...]

CompareOp: TypeAlias = Lit["==", "!=", "<", "<=", ">", ">=", "in", "not in", "starts_with"]
COMPARE_OPS: tuple[CompareOp, ...] = (
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not in",
    "starts_with",
)
ORDERING_OPS: frozenset[str] = frozenset({"<", "<=", ">", ">="})

# Words of the text notation; a path part may still be one (`trait.in`),
# because after a dot the parser reads any word as a name.
KEYWORDS: frozenset[str] = frozenset(
    {"and", "or", "not", "in", "contains", "starts_with", "true", "false", "null", "within"}
)

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
SEGMENT_KEY = re.compile(r"[a-z0-9_-]{1,64}\Z")

SESSION_FIELDS: frozenset[str] = frozenset(
    {"page_views", "time_spent_ms", "events", "cart_size", "cart_value", "favorites", "searches"}
)
FEATURE_PATHS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("lifetime_value",),
        ("conversion_probability",),
        ("rfm", "recency_days"),
        ("rfm", "frequency"),
        ("rfm", "monetary"),
    }
)

MAX_WINDOW_DAYS = 400
"""Longest window of `count` and `sum`: the days of event history the profile
service keeps (tessera.profiles.domain.event_history.HISTORY_DAYS)."""
FILTER_PROPERTIES: tuple[str, ...] = ("category", "product_id", "channel")
"""What `where` can filter events by; the profile service keeps a series for each."""
SUM_PROPERTIES: tuple[str, ...] = ("revenue", "price", "quantity", "duration_ms")
"""Event properties `sum` adds up; the profile service keeps daily sums of these."""
MAX_FILTER_VALUE_LENGTH = 128
"""Longest filter value the profile service keeps a series for."""


MAX_NUMBER_DIGITS = 32
"""Most digits a number literal may have, its exponent aside.

More than any price, count or probability needs, and far below Python's
4,300-digit limit on reading integers, which would otherwise fail the call.
"""


class RuleNodeError(ValueError):
    """A syntax tree node was built with arguments that break its invariants."""


def number_literal(text: str) -> int | float:
    """The value of a number as written in a rule (text or JSON syntax).

    An integer stays an int; a number with a fraction or an exponent is a
    float. Raises RuleNodeError for more than `MAX_NUMBER_DIGITS` digits
    before the exponent, and for a value a double cannot hold (`1e400`).
    """
    mantissa = re.split("[eE]", text, maxsplit=1)[0]
    digits = sum(c.isdigit() for c in mantissa)
    if digits > MAX_NUMBER_DIGITS:
        raise RuleNodeError(
            f"a number has at most {MAX_NUMBER_DIGITS} digits before its exponent; "
            f"this one has {digits}"
        )
    if mantissa != text or "." in text:
        value = float(text)
        if not math.isfinite(value):
            raise RuleNodeError(
                f"number {text[:40]} is not finite as a double (its limit is about 1.8e308)"
            )
        return value
    return int(text)


def _check_path(kind: str, path: tuple[str, ...]) -> None:
    if not path:
        raise RuleNodeError(f"{kind} path is empty")
    for part in path:
        if not isinstance(part, str) or not IDENTIFIER.match(part):
            raise RuleNodeError(f"{kind} path part {part!r} is not a name (letters, digits, _)")


def _check_text(kind: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise RuleNodeError(f"{kind} must be a non-empty string")


def _check_window(window_days: int) -> None:
    # Whole UTC days: the event history is kept per day, and no further back
    # than MAX_WINDOW_DAYS.
    if (
        not isinstance(window_days, int)
        or isinstance(window_days, bool)
        or not 1 <= window_days <= MAX_WINDOW_DAYS
    ):
        raise RuleNodeError(
            f"window must be a whole number of days from 1 to {MAX_WINDOW_DAYS}, "
            f"not {window_days!r}"
        )


def _check_where(where: object) -> None:
    if where is not None and not isinstance(where, EventFilter):
        raise RuleNodeError(f"a window's filter is an EventFilter or None, not {where!r}")


def _check_scalar(value: object) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RuleNodeError(f"number {value!r} is not finite")
        return
    raise RuleNodeError(f"literal {value!r} is not a string, number, boolean or null")


# --- values ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: string, int, float, bool, null, or a list (tuple) of those."""

    value: LiteralValue

    def __post_init__(self) -> None:
        if isinstance(self.value, tuple):
            for item in self.value:
                _check_scalar(item)
        else:
            _check_scalar(self.value)


@dataclass(frozen=True, slots=True)
class TraitRef:
    """A profile trait, `trait.a.b` -> path ("a", "b")."""

    path: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_path("trait", self.path)


@dataclass(frozen=True, slots=True)
class ContextRef:
    """A field of the request context (device, location, page...)."""

    path: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_path("context", self.path)


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """The channel of the request, as a lowercase short name such as "web"."""


@dataclass(frozen=True, slots=True)
class SessionField:
    """A number from the hot session: page_views, cart_size, searches..."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in SESSION_FIELDS:
            raise RuleNodeError(f"unknown session field {self.name!r}")


@dataclass(frozen=True, slots=True)
class CategoryViews:
    """How many products of a category this session viewed."""

    category: str

    def __post_init__(self) -> None:
        _check_text("category", self.category)


@dataclass(frozen=True, slots=True)
class ProductViews:
    """How many times this session viewed a product."""

    product_id: str

    def __post_init__(self) -> None:
        _check_text("product id", self.product_id)


@dataclass(frozen=True, slots=True)
class Searched:
    """Whether a search of this session contains the text (case-insensitive)."""

    text: str

    def __post_init__(self) -> None:
        _check_text("search text", self.text)


@dataclass(frozen=True, slots=True)
class FeatureRef:
    """A computed feature: lifetime_value, conversion_probability, rfm.*."""

    path: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.path not in FEATURE_PATHS:
            raise RuleNodeError(f"unknown feature {'.'.join(self.path)!r}")


@dataclass(frozen=True, slots=True)
class Interest:
    """The computed interest score of a category (0 when none)."""

    category: str

    def __post_init__(self) -> None:
        _check_text("category", self.category)


@dataclass(frozen=True, slots=True)
class HasIdentity:
    """Whether the profile has an identity of this type (email, crm_id...)."""

    identity_type: str

    def __post_init__(self) -> None:
        _check_text("identity type", self.identity_type)


@dataclass(frozen=True, slots=True)
class InSegment:
    """Whether the subject is a member of another segment."""

    key: str

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not SEGMENT_KEY.match(self.key):
            raise RuleNodeError(
                f"segment key {self.key!r} must be 1 to 64 lowercase letters, digits, _ or -"
            )


@dataclass(frozen=True, slots=True)
class EventFilter:
    """`where <property> == "<value>"`: only events whose property has that value.

    `property` is one of FILTER_PROPERTIES; for "channel" the value is a
    channel name ("web", "store"...).
    """

    property: str
    value: str

    def __post_init__(self) -> None:
        if self.property not in FILTER_PROPERTIES:
            raise RuleNodeError(
                f"events are filtered by {', '.join(FILTER_PROPERTIES)}, not {self.property!r}"
            )
        _check_text(f"the {self.property} of a filter", self.value)
        if len(self.value) > MAX_FILTER_VALUE_LENGTH:
            raise RuleNodeError(
                f"a filter value has at most {MAX_FILTER_VALUE_LENGTH} characters "
                "(longer ones are not kept in the event history)"
            )
        if self.property == "channel" and self.value not in CHANNELS:
            raise RuleNodeError(
                f"unknown channel {self.value!r}; channels are {', '.join(CHANNELS)}"
            )


@dataclass(frozen=True, slots=True)
class EventCount:
    """How many events of a type (matching `where`) the profile had in the last days.

    The window is the current UTC day and the `window_days - 1` before it.
    """

    event_type: str
    window_days: int
    where: EventFilter | None = None

    def __post_init__(self) -> None:
        _check_path("event type", (self.event_type,))
        _check_window(self.window_days)
        _check_where(self.where)


@dataclass(frozen=True, slots=True)
class EventSum:
    """The sum of a numeric property of events of a type (matching `where`) in the last days."""

    event_type: str
    property: str
    window_days: int
    where: EventFilter | None = None

    def __post_init__(self) -> None:
        _check_path("event type", (self.event_type,))
        if self.property not in SUM_PROPERTIES:
            raise RuleNodeError(f"sum() adds up {', '.join(SUM_PROPERTIES)}, not {self.property!r}")
        _check_window(self.window_days)
        _check_where(self.where)


@dataclass(frozen=True, slots=True)
class DaysSince:
    """Whole UTC days from a date (a trait or context field) to today; null when no date.

    `tessera.segments.domain.dates` says which strings are dates.
    """

    value: TraitRef | ContextRef

    def __post_init__(self) -> None:
        if not isinstance(self.value, TraitRef | ContextRef):
            raise RuleNodeError("days_since() reads a trait or a context field")


Value: TypeAlias = (
    Literal
    | TraitRef
    | ContextRef
    | ChannelRef
    | SessionField
    | CategoryViews
    | ProductViews
    | Searched
    | FeatureRef
    | Interest
    | HasIdentity
    | InSegment
    | EventCount
    | EventSum
    | DaysSince
)
VALUE_TYPES: tuple[type, ...] = (
    Literal,
    TraitRef,
    ContextRef,
    ChannelRef,
    SessionField,
    CategoryViews,
    ProductViews,
    Searched,
    FeatureRef,
    Interest,
    HasIdentity,
    InSegment,
    EventCount,
    EventSum,
    DaysSince,
)


# --- conditions -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """`left op right`; `a contains b` is stored as `b in a`.

    `a starts_with b`: both are strings and `a` begins with `b`.
    """

    op: CompareOp
    left: Value
    right: Value

    def __post_init__(self) -> None:
        if self.op not in COMPARE_OPS:
            raise RuleNodeError(f"unknown comparison {self.op!r}")
        if not isinstance(self.left, VALUE_TYPES) or not isinstance(self.right, VALUE_TYPES):
            raise RuleNodeError("both sides of a comparison must be values")


@dataclass(frozen=True, slots=True)
class Truth:
    """A value used as a condition: true unless false, null, 0, "" or []."""

    value: Value

    def __post_init__(self) -> None:
        if not isinstance(self.value, VALUE_TYPES):
            raise RuleNodeError("Truth wraps a value")


@dataclass(frozen=True, slots=True)
class Not:
    """Negation of a condition."""

    operand: Condition

    def __post_init__(self) -> None:
        if not isinstance(self.operand, CONDITION_TYPES):
            raise RuleNodeError("not needs a condition")


@dataclass(frozen=True, slots=True)
class And:
    """All operands hold (two or more; evaluated left to right, short-circuit)."""

    operands: tuple[Condition, ...]

    def __post_init__(self) -> None:
        _check_operands("and", self.operands)


@dataclass(frozen=True, slots=True)
class Or:
    """At least one operand holds (two or more; short-circuit)."""

    operands: tuple[Condition, ...]

    def __post_init__(self) -> None:
        _check_operands("or", self.operands)


Condition: TypeAlias = Compare | Truth | Not | And | Or
CONDITION_TYPES: tuple[type, ...] = (Compare, Truth, Not, And, Or)
Node: TypeAlias = Condition | Value


def _check_operands(kind: str, operands: tuple[Condition, ...]) -> None:
    # A single operand would print without its operator and parse back as the
    # bare operand, so the tree would not round-trip; parsers collapse it.
    if not isinstance(operands, tuple) or len(operands) < 2:
        raise RuleNodeError(f"{kind} needs a tuple of at least two operands")
    for operand in operands:
        if not isinstance(operand, CONDITION_TYPES):
            raise RuleNodeError(f"{kind} operands must be conditions")


def as_condition(node: Node) -> Condition:
    """Use `node` where a condition is expected: values are tested for truth."""
    if isinstance(node, CONDITION_TYPES):
        return node  # type: ignore[return-value]
    return Truth(node)  # type: ignore[arg-type]


def is_value(node: Node) -> bool:
    """Whether `node` is a value (not a condition)."""
    return isinstance(node, VALUE_TYPES)


def walk(node: Node) -> list[Node]:
    """Every node of the tree under `node`, `node` first (pre-order)."""
    out: list[Node] = []
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        out.append(current)
        if isinstance(current, And | Or):
            stack.extend(reversed(current.operands))
        elif isinstance(current, Not):
            stack.append(current.operand)
        elif isinstance(current, Truth):
            stack.append(current.value)
        elif isinstance(current, Compare):
            stack.append(current.right)
            stack.append(current.left)
    return out
