"""Render a rule tree in the canonical text notation.

The output parses back to the same tree (`parse_text(print_rule(r)) == r`),
so it is what the service stores and shows whatever notation a rule came in.
"""

from __future__ import annotations

import json

from .nodes import (
    And,
    CategoryViews,
    ChannelRef,
    Compare,
    Condition,
    ContextRef,
    DaysSince,
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
    Scalar,
    Searched,
    SessionField,
    TraitRef,
    Truth,
    Value,
)


def _string(text: str) -> str:
    # JSON escapes are exactly what the text lexer reads back.
    return json.dumps(text, ensure_ascii=False)


def _scalar(value: Scalar) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


def _where(where: EventFilter | None) -> str:
    return "" if where is None else f" where {where.property} == {_string(where.value)}"


def print_value(value: Value) -> str:
    """The text notation of one value (literal, attribute or function)."""
    if isinstance(value, Literal):
        if isinstance(value.value, tuple):
            return "[" + ", ".join(_scalar(v) for v in value.value) + "]"
        return _scalar(value.value)
    if isinstance(value, TraitRef):
        return "trait." + ".".join(value.path)
    if isinstance(value, ContextRef):
        return "context." + ".".join(value.path)
    if isinstance(value, ChannelRef):
        return "channel"
    if isinstance(value, SessionField):
        return "session." + value.name
    if isinstance(value, FeatureRef):
        return "feature." + ".".join(value.path)
    if isinstance(value, CategoryViews):
        return f"session.category_views({_string(value.category)})"
    if isinstance(value, ProductViews):
        return f"session.product_views({_string(value.product_id)})"
    if isinstance(value, Searched):
        return f"session.searched({_string(value.text)})"
    if isinstance(value, Interest):
        return f"feature.interest({_string(value.category)})"
    if isinstance(value, HasIdentity):
        return f"has_identity({_string(value.identity_type)})"
    if isinstance(value, InSegment):
        return f"segment({_string(value.key)})"
    if isinstance(value, EventCount):
        return f"count({value.event_type}{_where(value.where)}, within={value.window_days}d)"
    if isinstance(value, EventSum):
        return (
            f"sum({value.event_type}.{value.property}{_where(value.where)}, "
            f"within={value.window_days}d)"
        )
    if isinstance(value, DaysSince):
        return f"days_since({print_value(value.value)})"
    raise TypeError(f"not a rule value: {value!r}")


def _print(node: Condition, parent: type | None) -> str:
    if isinstance(node, Truth):
        return print_value(node.value)
    if isinstance(node, Compare):
        return f"{print_value(node.left)} {node.op} {print_value(node.right)}"
    if isinstance(node, Not):
        inner = _print(node.operand, Not)
        # Parentheses for anything but a bare value: `not (a == 1)` reads
        # unambiguously to people, and the parser gives the same tree.
        return f"not {inner}" if isinstance(node.operand, Truth) else f"not ({inner})"
    if isinstance(node, And | Or):
        word = " and " if isinstance(node, And) else " or "
        text = word.join(_print(op, type(node)) for op in node.operands)
        # `and` binds tighter than `or`, so only an `or` inside an `and`
        # strictly needs parentheses; a nested operator of the same kind
        # keeps them so that the tree's shape survives the round trip.
        needs_parens = parent is And or (parent is Or and isinstance(node, Or))
        return f"({text})" if needs_parens else text
    raise TypeError(f"not a rule condition: {node!r}")


def print_rule(rule: Condition) -> str:
    """The canonical text form of a rule; parsing it gives the same tree."""
    return _print(rule, None)
