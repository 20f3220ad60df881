"""The segment rule language: two notations, one typed tree, a fast evaluator.

Plain Python (no grpc, protobuf or SQL), so the segment service and the
decision service evaluate rules with the same code. The language itself is
described for users in docs/rules.md.

Typical use::

    rule = parse_rule(text, notation="text")          # or "json_logic"
    segments = compile_segments([SegmentDefinition("vip", rule), ...])
    keys = segments.evaluate(Subject(traits={...}, ...))
"""

from __future__ import annotations

from typing import Literal as Lit
from typing import TypeAlias

from .compiler import CompiledRule, Memberships, compile_rule, values_equal
from .errors import RuleError, RuleSyntaxError
from .jsonlogic import parse_json_logic, validate_json_logic
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
    RuleNodeError,
    Searched,
    SessionField,
    TraitRef,
    Truth,
    Value,
)
from .printer import print_rule, print_value
from .segments import (
    CompiledSegments,
    SegmentDefinition,
    compile_available,
    compile_segments,
    dependencies,
    validate_segment_key,
)
from .subject import (
    CartLine,
    DailySeries,
    EventHistoryView,
    FeaturesView,
    RfmView,
    SessionView,
    Subject,
    utc_day,
)
from .text import parse_text, validate_text

Notation: TypeAlias = Lit["text", "json_logic"]


def detect_notation(rule: str) -> Notation:
    """Guess the notation: a rule starting with `{` is JsonLogic, else text.

    Only for callers that lack the explicit `oneof` of the API; a text rule
    never starts with `{`, and a JsonLogic rule that is a bare constant
    (`true`) means the same in the text notation.
    """
    return "json_logic" if rule.lstrip().startswith("{") else "text"


def parse_rule(
    rule: str, notation: Notation | None = None, *, field: str = "segment.rule"
) -> Condition:
    """Parse a rule in either notation; raises RuleSyntaxError (an InvalidArgument)."""
    if (notation or detect_notation(rule)) == "json_logic":
        return parse_json_logic(rule, field=field)
    return parse_text(rule, field=field)


def validate(rule: str, notation: Notation | None = None) -> list[RuleError]:
    """Every problem in a rule, in position order, each with line and column."""
    if (notation or detect_notation(rule)) == "json_logic":
        return validate_json_logic(rule)
    return validate_text(rule)


__all__ = [
    "And",
    "CartLine",
    "CategoryViews",
    "ChannelRef",
    "Compare",
    "CompiledRule",
    "CompiledSegments",
    "Condition",
    "ContextRef",
    "DailySeries",
    "DaysSince",
    "EventCount",
    "EventFilter",
    "EventHistoryView",
    "EventSum",
    "FeatureRef",
    "FeaturesView",
    "HasIdentity",
    "InSegment",
    "Interest",
    "Literal",
    "Memberships",
    "Not",
    "Notation",
    "Or",
    "ProductViews",
    "RfmView",
    "RuleError",
    "RuleNodeError",
    "RuleSyntaxError",
    "Searched",
    "SegmentDefinition",
    "SessionField",
    "SessionView",
    "Subject",
    "TraitRef",
    "Truth",
    "Value",
    "compile_available",
    "compile_rule",
    "compile_segments",
    "dependencies",
    "detect_notation",
    "parse_json_logic",
    "parse_rule",
    "parse_text",
    "print_rule",
    "print_value",
    "utc_day",
    "validate",
    "validate_json_logic",
    "validate_segment_key",
    "validate_text",
    "values_equal",
]
