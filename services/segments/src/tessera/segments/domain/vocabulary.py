"""The rule vocabulary: what a rule can refer to, shared by both notations.

The text parser and the JsonLogic reader resolve names here, so an attribute
means the same thing whichever notation wrote it, and a static type check
catches comparisons that could never be true (a count compared with a string).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal as Lit
from typing import TypeAlias

from tessera.channels import CHANNELS

from .nodes import (
    FEATURE_PATHS,
    IDENTIFIER,
    ORDERING_OPS,
    SESSION_FIELDS,
    CategoryViews,
    ChannelRef,
    ContextRef,
    FeatureRef,
    HasIdentity,
    InSegment,
    Interest,
    Literal,
    ProductViews,
    RuleNodeError,
    Searched,
    SessionField,
    TraitRef,
    Value,
)
from .printer import print_value

Kind: TypeAlias = Lit["any", "number", "string", "bool", "null", "list"]

# Functions taking one string, by their text name. JsonLogic names are the
# last part (see JSONLOGIC_STRING_OPERATORS).
STRING_FUNCTIONS: dict[str, Callable[[str], Value]] = {
    "session.category_views": CategoryViews,
    "session.product_views": ProductViews,
    "session.searched": Searched,
    "feature.interest": Interest,
    "has_identity": HasIdentity,
    "segment": InSegment,
}
JSONLOGIC_STRING_OPERATORS: dict[str, str] = {
    "category_views": "session.category_views",
    "product_views": "session.product_views",
    "searched": "session.searched",
    "interest": "feature.interest",
    "has_identity": "has_identity",
    "segment": "segment",
}
WINDOW_FUNCTIONS: frozenset[str] = frozenset({"count", "sum"})
DATE_FUNCTIONS: frozenset[str] = frozenset({"days_since"})

ROOTS_HELP = (
    "attributes are trait.<name>, context.<name>, channel, identity.<type>, "
    "session.<field> and feature.<name>"
)


def resolve_attribute(parts: Sequence[str]) -> Value:
    """The value a dotted attribute path names; raises RuleNodeError if none."""
    path = tuple(parts)
    dotted = ".".join(path)
    root, rest = path[0], path[1:]
    if root in ("trait", "context"):
        if not rest:
            raise RuleNodeError(f"'{root}' needs a name: {root}.<name>")
        for part in rest:
            if not IDENTIFIER.match(part):
                raise RuleNodeError(f"{dotted!r}: path part {part!r} is not a name")
        return TraitRef(rest) if root == "trait" else ContextRef(rest)
    if root == "channel":
        if rest:
            raise RuleNodeError(f"unknown attribute {dotted!r}: channel has no fields")
        return ChannelRef()
    if root == "identity":
        if len(rest) != 1:
            raise RuleNodeError(f"unknown attribute {dotted!r}: write identity.<type>")
        return HasIdentity(rest[0])
    if root == "session":
        if len(rest) == 1 and rest[0] in SESSION_FIELDS:
            return SessionField(rest[0])
        if dotted in STRING_FUNCTIONS:
            raise RuleNodeError(f'{dotted} is a function: write {dotted}("...")')
        fields = ", ".join(sorted(SESSION_FIELDS))
        raise RuleNodeError(f"unknown attribute {dotted!r}: session fields are {fields}")
    if root == "feature":
        if rest in FEATURE_PATHS:
            return FeatureRef(rest)
        if dotted in STRING_FUNCTIONS:
            raise RuleNodeError(f'{dotted} is a function: write {dotted}("...")')
        names = ", ".join(sorted(".".join(p) for p in FEATURE_PATHS))
        raise RuleNodeError(f"unknown attribute {dotted!r}: features are {names}, interest(...)")
    if dotted in STRING_FUNCTIONS or dotted in WINDOW_FUNCTIONS or dotted in DATE_FUNCTIONS:
        raise RuleNodeError(f"{dotted} is a function: call it with arguments")
    raise RuleNodeError(f"unknown attribute {dotted!r}; {ROOTS_HELP}")


def kind_of(value: Value) -> Kind:
    """The static type of a value; "any" when only the data can tell."""
    if isinstance(value, Literal):
        v = value.value
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int | float):
            return "number"
        if isinstance(v, str):
            return "string"
        return "list"
    if isinstance(value, TraitRef | ContextRef):
        return "any"
    if isinstance(value, ChannelRef):
        return "string"
    if isinstance(value, Searched | HasIdentity | InSegment):
        return "bool"
    return "number"


def _check_channel(other: Value, values: Sequence[object]) -> str | None:
    if not isinstance(other, ChannelRef):
        return None
    for v in values:
        if isinstance(v, str) and v not in CHANNELS:
            return f"unknown channel {v!r}; channels are {', '.join(CHANNELS)}"
    return None


def check_compare(op: str, left: Value, right: Value) -> str | None:
    """Why `left op right` can never make sense, or None when it can."""
    lk, rk = kind_of(left), kind_of(right)
    if op in ORDERING_OPS:
        for side, kind in ((left, lk), (right, rk)):
            if kind in ("bool", "null", "list"):
                return f"'{op}' orders numbers or strings, but {print_value(side)} is a {kind}"
        if "any" not in (lk, rk) and lk != rk:
            return (
                f"'{op}' compares a {lk} ({print_value(left)}) with a {rk} ({print_value(right)})"
            )
        return None
    if op == "starts_with":
        for side, kind in ((left, lk), (right, rk)):
            if kind not in ("string", "any"):
                return f"'{op}' tests the start of a string, but {print_value(side)} is a {kind}"
        return None
    if op in ("==", "!="):
        if "any" not in (lk, rk) and "null" not in (lk, rk) and lk != rk:
            return (
                f"'{op}' compares a {lk} ({print_value(left)}) with a {rk} "
                f"({print_value(right)}); the result never changes"
            )
        if isinstance(right, Literal):
            return _check_channel(left, [right.value])
        if isinstance(left, Literal):
            return _check_channel(right, [left.value])
        return None
    # in / not in: membership in a list, or substring of a string.
    if rk == "list":
        assert isinstance(right, Literal) and isinstance(right.value, tuple)
        if lk not in ("any", "null"):
            for item in right.value:
                item_kind = kind_of(Literal(item))
                if item_kind not in ("null", lk):
                    return (
                        f"'{op}' looks for a {lk} ({print_value(left)}) "
                        f"in a list holding a {item_kind}"
                    )
        return _check_channel(left, right.value)
    if rk == "any":
        # The data decides: a list trait holds numbers as well as strings.
        return None
    if rk == "string":
        if lk not in ("string", "any"):
            return (
                f"'{op}' with a string on the right tests a substring, "
                f"but {print_value(left)} is a {lk}"
            )
        return None
    return f"'{op}' needs a list or a string on the right, but {print_value(right)} is a {rk}"
