"""The JsonLogic notation of rules (the rule format of flagd and OpenFeature).

A rule is one JSON value. Standard operators read here:

- `{"var": "trait.country"}`: an attribute, by the same dotted names as the
  text notation (`trait.*`, `context.*`, `channel`, `identity.<type>`,
  `session.<field>`, `feature.*`). Default values (`["path", default]`) are
  not supported: a missing value is null, as everywhere in Tessera.
- `==` `===` `!=` `!==` `<` `<=` `>` `>=`: all with Tessera's strict
  equality (so `==` does not convert "1" to 1); `<` and `<=` also take three
  arguments, `a < b < c`.
- `in`: `[x, [..]]` membership, `[x, "text"]` substring.
- `and`, `or`, `!`, `!!`.

json-logic-js's published behaviour for these, and where Tessera differs,
is pinned in tests/unit/segments/test_jsonlogic_fidelity.py and listed in
docs/rules.md.

Tessera operators, one per text function:

- `{"segment": "key"}`, `{"has_identity": "email"}`,
  `{"category_views": "juicers"}`, `{"product_views": "sku-1"}`,
  `{"searched": "juicer"}`, `{"interest": "kitchen"}`;
- `{"count": ["purchase", "30d"]}`, `{"sum": ["purchase", "revenue", "7d"]}`,
  each with an optional filter last: `{"count": ["purchase", "90d",
  {"category": "juicers"}]}` is `count(purchase where category ==
  "juicers", within=90d)`;
- `{"starts_with": [{"var": "trait.postal_code"}, "75"]}` is
  `trait.postal_code starts_with "75"`;
- `{"days_since": {"var": "trait.signup_date"}}` is
  `days_since(trait.signup_date)`.

Errors carry the line and column of the operator's key (or of the offending
value) in the JSON text.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, NoReturn

from .durations import parse_window_days
from .errors import RuleError, parsed_or_raise, position
from .nodes import (
    FILTER_PROPERTIES,
    SUM_PROPERTIES,
    And,
    Compare,
    CompareOp,
    Condition,
    ContextRef,
    DaysSince,
    EventCount,
    EventFilter,
    EventSum,
    Literal,
    Not,
    Or,
    RuleNodeError,
    TraitRef,
    Value,
    as_condition,
    number_literal,
)
from .vocabulary import (
    JSONLOGIC_STRING_OPERATORS,
    STRING_FUNCTIONS,
    check_compare,
    resolve_attribute,
)

MAX_RULE_CHARS = 65_536
MAX_DEPTH = 64

_COMPARISONS: dict[str, CompareOp] = {
    "==": "==",
    "===": "==",
    "!=": "!=",
    "!==": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "in": "in",
    "starts_with": "starts_with",
}
_CONDITION_OPERATORS = frozenset({"and", "or", "!", "!!", *_COMPARISONS})
_VALUE_OPERATORS = frozenset({"var", "count", "sum", "days_since", *JSONLOGIC_STRING_OPERATORS})
_SUPPORTED = ", ".join(
    [
        *_COMPARISONS,
        "and",
        "or",
        "!",
        "!!",
        "var",
        *JSONLOGIC_STRING_OPERATORS,
        "count",
        "sum",
        "days_since",
    ]
)


class _NumberText(str):
    """A JSON number as written, converted by `number_literal` where its offset is known."""


class _BadNumber(Exception):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


# Numbers are read as their text: `int()` on thousands of digits raises
# ValueError (Python's int-string limit), which would fail the call, not the rule.
_DECODER = json.JSONDecoder(parse_int=_NumberText, parse_float=_NumberText)
_PLACEHOLDER: Value = TraitRef(("__unresolved__",))


@dataclass(frozen=True, slots=True)
class _Json:
    """A JSON value with the offset where it starts in the source."""

    kind: str  # object, array, scalar
    offset: int
    value: Any  # scalar; list[_Json]; list[tuple[str, int, _Json]] (key, key offset, value)


class _Stop(Exception):
    """Raised after an error that makes reading further pointless."""


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _read_json(text: str, i: int, depth: int) -> tuple[_Json, int]:
    # Only called on text json.loads accepted, so it need not diagnose errors.
    if depth > MAX_DEPTH:
        raise RecursionError
    i = _skip_space(text, i)
    start = text[i]
    if start == "{":
        object_offset = i
        members: list[tuple[str, int, _Json]] = []
        i = _skip_space(text, i + 1)
        while text[i] != "}":
            key_offset = i
            key, i = _DECODER.raw_decode(text, i)
            i = _skip_space(text, i) + 1  # the colon
            item, i = _read_json(text, i, depth + 1)
            members.append((key, key_offset, item))
            i = _skip_space(text, i)
            if text[i] == ",":
                i = _skip_space(text, i + 1)
        return _Json("object", object_offset, members), i + 1
    if start == "[":
        array_offset = i
        items: list[_Json] = []
        i = _skip_space(text, i + 1)
        while text[i] != "]":
            item, i = _read_json(text, i, depth + 1)
            items.append(item)
            i = _skip_space(text, i)
            if text[i] == ",":
                i = _skip_space(text, i + 1)
        return _Json("array", array_offset, items), i + 1
    value, end = _DECODER.raw_decode(text, i)
    if isinstance(value, _NumberText):
        try:
            value = number_literal(value)
        except RuleNodeError as exc:
            raise _BadNumber(i, str(exc)) from exc
    return _Json("scalar", i, value), end


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.errors: list[RuleError] = []

    def note(self, offset: int, message: str) -> None:
        line, column = position(self.text, offset)
        self.errors.append(RuleError(line, column, message))

    def fail(self, offset: int, message: str) -> NoReturn:
        self.note(offset, message)
        raise _Stop

    def operation(self, node: _Json) -> tuple[str, int, list[_Json]]:
        members = node.value
        if len(members) != 1:
            keys = ", ".join(repr(k) for k, _, _ in members) or "none"
            self.fail(
                node.offset,
                f"an operation is an object with exactly one operator key; found {keys}",
            )
        op, key_offset, args = members[0]
        # JsonLogic allows a lone argument without its array: {"!": x}.
        return op, key_offset, args.value if args.kind == "array" else [args]

    def condition(self, node: _Json) -> Condition:
        if node.kind != "object":
            return as_condition(self.value(node, "the rule"))
        op, at, args = self.operation(node)
        if op in ("and", "or"):
            if not args:
                self.fail(at, f"'{op}' needs at least one argument")
            operands = tuple(self.condition(a) for a in args)
            if len(operands) == 1:
                return operands[0]
            return And(operands) if op == "and" else Or(operands)
        if op in ("!", "!!"):
            if len(args) != 1:
                self.fail(at, f"'{op}' takes exactly one argument, got {len(args)}")
            inner = self.condition(args[0])
            return Not(inner) if op == "!" else inner
        if op in _COMPARISONS:
            return self.comparison(op, at, args)
        return as_condition(self.value(node, "the rule"))

    def comparison(self, op: str, at: int, args: list[_Json]) -> Condition:
        between = op in ("<", "<=") and len(args) == 3
        if len(args) != 2 and not between:
            arity = "2 or 3 arguments" if op in ("<", "<=") else "2 arguments"
            self.fail(at, f"'{op}' takes {arity}, got {len(args)}")
        values = [self.value(a, f"an argument of '{op}'") for a in args]
        tree_op = _COMPARISONS[op]
        pairs = list(itertools.pairwise(values))
        for left, right in pairs:
            problem = check_compare(tree_op, left, right)
            if problem:
                self.note(at, problem)
        compares = tuple(Compare(tree_op, left, right) for left, right in pairs)
        return compares[0] if len(compares) == 1 else And(compares)

    def literal(self, node: _Json, value: Any) -> Value:
        try:
            return Literal(value)
        except RuleNodeError as exc:
            self.note(node.offset, str(exc))
            return _PLACEHOLDER

    def value(self, node: _Json, where: str) -> Value:
        if node.kind == "scalar":
            return self.literal(node, node.value)
        if node.kind == "array":
            for item in node.value:
                if item.kind != "scalar":
                    self.fail(item.offset, "list items must be strings, numbers, booleans or null")
            return self.literal(node, tuple(item.value for item in node.value))
        op, at, args = self.operation(node)
        if op in _CONDITION_OPERATORS:
            self.fail(at, f"'{op}' gives true or false, but {where} must be a value")
        if op == "var":
            return self.var(at, args)
        if op in JSONLOGIC_STRING_OPERATORS:
            (argument,) = self.strings(op, at, args, 1, f'{{"{op}": "..."}}')
            name = JSONLOGIC_STRING_OPERATORS[op]
            try:
                return STRING_FUNCTIONS[name](argument)
            except RuleNodeError as exc:
                self.note(args[0].offset, f"'{op}': {exc}")
                return _PLACEHOLDER
        if op in ("count", "sum"):
            return self.window_function(op, at, args)
        if op == "days_since":
            return self.days_since(at, args)
        self.fail(at, f"unsupported operator {op!r}; supported: {_SUPPORTED}")

    def days_since(self, at: int, args: list[_Json]) -> Value:
        example = '{"days_since": {"var": "trait.signup_date"}}'
        if len(args) != 1 or args[0].kind != "object":
            self.fail(at, f"'days_since' takes one trait or context attribute: {example}")
        argument = args[0]
        op, key_at, inner = self.operation(argument)
        if op != "var":
            self.fail(key_at, f"'days_since' takes one trait or context attribute: {example}")
        value = self.var(key_at, inner)
        if value is _PLACEHOLDER:
            return value
        if not isinstance(value, TraitRef | ContextRef):
            self.note(
                inner[0].offset,
                "'days_since' reads a date in a trait or context field, "
                f"not {inner[0].value}; {example}",
            )
            return _PLACEHOLDER
        return DaysSince(value)

    def strings(self, op: str, at: int, args: list[_Json], count: int, example: str) -> list[str]:
        if len(args) != count or any(not isinstance(a.value, str) for a in args):
            self.fail(
                at, f"'{op}' takes {count} string argument{'s' if count > 1 else ''}: {example}"
            )
        return [a.value for a in args]

    def var(self, at: int, args: list[_Json]) -> Value:
        if len(args) > 1:
            self.fail(at, "'var' default values are not supported: a missing value is null")
        if len(args) != 1 or not isinstance(args[0].value, str) or not args[0].value:
            self.fail(at, "'var' takes an attribute path such as \"trait.country\"")
        path = args[0].value
        try:
            return resolve_attribute(path.split("."))
        except RuleNodeError as exc:
            self.note(args[0].offset, str(exc))
            return _PLACEHOLDER

    def event_filter(self, node: _Json) -> tuple[bool, EventFilter | None]:
        """The filter object `{"category": "juicers"}`; (False, None) when it was wrong."""
        members = node.value
        if len(members) != 1 or members[0][2].kind != "scalar":
            self.fail(node.offset, 'a filter is one property and a string: {"category": "juicers"}')
        prop, key_offset, value = members[0]
        if prop not in FILTER_PROPERTIES:
            self.note(
                key_offset, f"events are filtered by {', '.join(FILTER_PROPERTIES)}, not {prop!r}"
            )
            return False, None
        if not isinstance(value.value, str):
            self.fail(value.offset, 'a filter compares with a string: {"category": "juicers"}')
        try:
            return True, EventFilter(prop, value.value)
        except RuleNodeError as exc:
            self.note(value.offset, str(exc))
            return False, None

    def window_function(self, op: str, at: int, args: list[_Json]) -> Value:
        filter_ok, where = True, None
        if args and args[-1].kind == "object":
            filter_ok, where = self.event_filter(args[-1])
            args = args[:-1]
        if op == "count":
            event_type, window = self.strings(
                op, at, args, 2, '{"count": ["purchase", "30d"]} (and a filter object last)'
            )
            prop = ""
        else:
            event_type, prop, window = self.strings(
                op,
                at,
                args,
                3,
                '{"sum": ["purchase", "revenue", "7d"]} (and a filter object last)',
            )
        prop_ok = op == "count" or prop in SUM_PROPERTIES
        if not prop_ok:
            self.note(args[1].offset, f"sum() adds up {', '.join(SUM_PROPERTIES)}, not {prop!r}")
        try:
            days = parse_window_days(window)
        except RuleNodeError as exc:
            self.note(args[-1].offset, str(exc))
            return _PLACEHOLDER
        if not (prop_ok and filter_ok):
            return _PLACEHOLDER
        try:
            if op == "count":
                return EventCount(event_type, days, where)
            return EventSum(event_type, prop, days, where)
        except RuleNodeError as exc:
            self.note(args[0].offset, f"'{op}': {exc}")
            return _PLACEHOLDER


def _parse(text: str) -> tuple[Condition | None, list[RuleError]]:
    if len(text) > MAX_RULE_CHARS:
        return None, [RuleError(1, 1, f"the rule is longer than {MAX_RULE_CHARS} characters")]
    try:
        _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return None, [RuleError(exc.lineno, exc.colno, f"invalid JSON: {exc.msg}")]
    except RecursionError:
        return None, [RuleError(1, 0, f"the rule nests more than {MAX_DEPTH} levels deep")]
    try:
        root, _ = _read_json(text, 0, 0)
    except RecursionError:
        return None, [RuleError(1, 0, f"the rule nests more than {MAX_DEPTH} levels deep")]
    except _BadNumber as bad:
        return None, [RuleError(*position(text, bad.offset), bad.message)]
    reader = _Reader(text)
    try:
        rule: Condition | None = reader.condition(root)
    except _Stop:
        rule = None
    errors = sorted(reader.errors)
    return (None, errors) if errors else (rule, [])


def parse_json_logic(text: str, *, field: str = "segment.rule") -> Condition:
    """Parse a JsonLogic rule (a JSON string); raises RuleSyntaxError."""
    return parsed_or_raise(_parse(text), field)


def validate_json_logic(text: str) -> list[RuleError]:
    """Every problem found in a JsonLogic rule, first position first; [] if valid."""
    return _parse(text)[1]
