"""The text notation of rules: a lexer and a recursive-descent parser.

Grammar (keywords are lowercase; `#` starts a comment to the end of a line)::

    rule       := or_expr END
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [compare_op operand]
    compare_op := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in" | "contains"
                | "starts_with"
    operand    := "(" or_expr ")" | literal | list | attribute | call
    list       := "[" [literal ("," literal)*] "]"
    attribute  := NAME ("." NAME)*
    call       := attribute "(" STRING ")"
                | "count" "(" EVENT [filter] "," "within" "=" WINDOW ")"
                | "sum" "(" EVENT "." PROPERTY [filter] "," "within" "=" WINDOW ")"
                | "days_since" "(" attribute ")"
    filter     := "where" NAME "==" STRING

Strings are JSON strings (double quotes, JSON escapes). A syntax error stops
the parse; unknown names and impossible comparisons are recorded and the
parse goes on, so one pass reports all of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import NoReturn

from .durations import parse_duration, parse_window_days
from .errors import RuleError, parsed_or_raise, position
from .nodes import (
    FILTER_PROPERTIES,
    SUM_PROPERTIES,
    Compare,
    CompareOp,
    Condition,
    ContextRef,
    DaysSince,
    EventCount,
    EventFilter,
    EventSum,
    Literal,
    Node,
    Not,
    Or,
    RuleNodeError,
    Scalar,
    TraitRef,
    Value,
    as_condition,
    is_value,
    number_literal,
)
from .nodes import And as AndNode
from .vocabulary import (
    STRING_FUNCTIONS,
    check_compare,
    resolve_attribute,
)

MAX_RULE_CHARS = 65_536
# Deep enough for any rule a person writes, shallow enough that Python's
# recursion limit is never the thing that rejects a rule.
MAX_DEPTH = 64

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_TAIL = re.compile(r"[A-Za-z0-9_]*")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_PUNCTUATION = "()[],.="
_RESERVED = frozenset({"and", "or", "not", "in", "contains", "starts_with"})
_CONSTANTS: dict[str, Scalar] = {"true": True, "false": False, "null": None}
_DECODER = json.JSONDecoder()

# Stands in for a name that failed to resolve, so that parsing can go on
# and report later problems too; "any" typed, so it causes no follow-on
# type errors. It never leaves the parser: any recorded error aborts.
_PLACEHOLDER: Value = TraitRef(("__unresolved__",))


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # word string number window op punctuation-char error end
    text: str
    offset: int
    value: object = None


class _Stop(Exception):
    """Raised after a syntax error has been recorded: parsing cannot go on."""


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _is_letter(ch: str) -> bool:
    """What may start a word: an ASCII letter or '_'."""
    return ch.isascii() and (ch.isalpha() or ch == "_")


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch == '"':
            try:
                value, end = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                tokens.append(
                    _Token(
                        "error",
                        f"invalid string: {exc.msg.lower().removesuffix(' starting at')}",
                        exc.pos,
                    )
                )
                break
            tokens.append(_Token("string", text[i:end], i, value))
            i = end
            continue
        # ASCII only, as the patterns are: str.isdigit() and isalpha() also
        # hold for "²", "٣" and "é", which would reach a pattern that cannot
        # match them; such characters are reported as unexpected below.
        if _is_digit(ch) or (ch == "-" and i + 1 < n and _is_digit(text[i + 1])):
            match = _NUMBER.match(text, i)
            assert match is not None
            end = match.end()
            if end < n and (_is_digit(text[end]) or _is_letter(text[end])):
                # `30d` is a window; anything else glued to a number is a typo.
                tail = _WORD_TAIL.match(text, end)
                assert tail is not None
                word = text[i : tail.end()]
                if not match.group().lstrip("-").isdigit() or ch == "-":
                    tokens.append(_Token("error", f"invalid number {word!r}", i))
                    break
                tokens.append(_Token("window", word, i))
                i = tail.end()
                continue
            literal = match.group()
            try:
                number = number_literal(literal)
            except RuleNodeError as exc:
                tokens.append(_Token("error", str(exc), i))
                break
            tokens.append(_Token("number", literal, i, number))
            i = end
            continue
        if _is_letter(ch):
            match = _WORD.match(text, i)
            assert match is not None
            tokens.append(_Token("word", match.group(), i))
            i = match.end()
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(_Token("op", op, i))
            i += len(op)
            continue
        if ch in _PUNCTUATION:
            tokens.append(_Token(ch, ch, i))
            i += 1
            continue
        hint = "; write 'not' or '!='" if ch == "!" else ""
        hint = "; strings use double quotes" if ch == "'" else hint
        tokens.append(_Token("error", f"unexpected character {ch!r}{hint}", i))
        break
    tokens.append(_Token("end", "", n))
    return tokens


def _describe(token: _Token) -> str:
    return "the end of the rule" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _lex(text)
        self.i = 0
        self.depth = 0
        self.errors: list[RuleError] = []

    # --- plumbing ---

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        if token.kind == "error":
            self.fail(token.offset, token.text)
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def note(self, offset: int, message: str) -> None:
        line, column = position(self.text, offset)
        self.errors.append(RuleError(line, column, message))

    def fail(self, offset: int, message: str) -> NoReturn:
        self.note(offset, message)
        raise _Stop

    def expect(self, kind: str, what: str) -> _Token:
        token = self.peek()
        if token.kind == "error":
            self.fail(token.offset, token.text)
        if token.kind != kind:
            self.fail(token.offset, f"expected {what}, found {_describe(token)}")
        return self.advance()

    def is_word(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "word" and token.text == word

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(token.offset, f"the rule nests more than {MAX_DEPTH} levels deep")

    # --- grammar ---

    def rule(self) -> Condition:
        if self.peek().kind == "end":
            self.fail(self.peek().offset, "the rule is empty")
        node = self.or_expr()
        token = self.peek()
        if token.kind != "end":
            if token.kind == "error":
                self.fail(token.offset, token.text)
            self.fail(
                token.offset,
                f"expected 'and', 'or' or the end of the rule, found {_describe(token)}",
            )
        return as_condition(node)

    def or_expr(self) -> Node:
        self.nest(self.peek())
        operands = [self.and_expr()]
        while self.is_word("or"):
            self.advance()
            operands.append(self.and_expr())
        self.depth -= 1
        if len(operands) == 1:
            return operands[0]
        return Or(tuple(as_condition(o) for o in operands))

    def and_expr(self) -> Node:
        operands = [self.not_expr()]
        while self.is_word("and"):
            self.advance()
            operands.append(self.not_expr())
        if len(operands) == 1:
            return operands[0]
        return AndNode(tuple(as_condition(o) for o in operands))

    def not_expr(self) -> Node:
        if self.is_word("not"):
            token = self.advance()
            self.nest(token)
            operand = self.not_expr()
            self.depth -= 1
            return Not(as_condition(operand))
        return self.comparison()

    def comparison_op(self) -> str | None:
        token = self.peek()
        if token.kind == "op":
            return token.text
        if self.is_word("in") or self.is_word("contains") or self.is_word("starts_with"):
            return token.text
        if self.is_word("not") and self.is_word("in", 1):
            return "not in"
        return None

    def comparison(self) -> Node:
        left_token = self.peek()
        left = self.operand()
        op_token = self.peek()
        op = self.comparison_op()
        if op is None:
            return left
        self.advance()
        if op == "not in":
            self.advance()
        right_token = self.peek()
        right = self.operand()
        for node, token, side in ((left, left_token, "left"), (right, right_token, "right")):
            if not is_value(node):
                self.fail(
                    token.offset,
                    f"the {side} side of '{op}' must be a value, not a condition",
                )
        assert is_value(left) and is_value(right)
        if op == "contains":
            # One spelling in the tree: `a contains b` is `b in a`.
            left, right, op = right, left, "in"
        problem = check_compare(op, left, right)  # type: ignore[arg-type]
        if problem:
            self.note(op_token.offset, problem)
        if self.comparison_op() is not None:
            self.fail(
                self.peek().offset,
                "comparisons cannot be chained; join them with 'and'",
            )
        op_checked: CompareOp = op  # type: ignore[assignment]
        return Compare(op_checked, left, right)  # type: ignore[arg-type]

    def operand(self) -> Node:
        token = self.peek()
        if token.kind == "(":
            self.advance()
            node = self.or_expr()
            self.expect(")", "')'")
            return node
        if token.kind == "[":
            return self.list_literal()
        if token.kind in ("string", "number"):
            self.advance()
            return self.literal(token, token.value)  # type: ignore[arg-type]
        if token.kind == "word":
            if token.text in _CONSTANTS:
                self.advance()
                return self.literal(token, _CONSTANTS[token.text])
            if token.text not in _RESERVED:
                return self.reference()
        if token.kind == "window":
            try:
                parse_duration(token.text)
            except RuleNodeError:
                self.fail(token.offset, f"invalid number {token.text!r}")
            self.fail(token.offset, f"a window such as {token.text!r} goes in within=")
        if token.kind == "error":
            self.fail(token.offset, token.text)
        self.fail(token.offset, f"expected a value, found {_describe(token)}")

    def literal(self, token: _Token, value: Scalar | tuple[Scalar, ...]) -> Value:
        try:
            return Literal(value)
        except RuleNodeError as exc:
            self.note(token.offset, str(exc))
            return _PLACEHOLDER

    def list_literal(self) -> Value:
        start = self.advance()
        items: list[Scalar] = []
        while self.peek().kind != "]":
            if items:
                self.expect(",", "',' or ']'")
            token = self.peek()
            if token.kind in ("string", "number"):
                items.append(token.value)  # type: ignore[arg-type]
            elif token.kind == "word" and token.text in _CONSTANTS:
                items.append(_CONSTANTS[token.text])
            elif token.kind == "end":
                self.fail(token.offset, "expected ']' to close the list")
            else:
                self.advance()  # surfaces a lexer error first, if that is what it is
                self.fail(token.offset, "list items must be strings, numbers, true, false or null")
            self.advance()
        self.advance()
        return self.literal(start, tuple(items))

    def reference(self) -> Value:
        start = self.advance()
        parts = [start.text]
        while self.peek().kind == ".":
            self.advance()
            parts.append(self.expect("word", "a name after '.'").text)
        if self.peek().kind == "(":
            return self.call(start, ".".join(parts))
        try:
            return resolve_attribute(parts)
        except RuleNodeError as exc:
            self.note(start.offset, str(exc))
            return _PLACEHOLDER

    def call(self, start: _Token, name: str) -> Value:
        self.advance()  # (
        if name in STRING_FUNCTIONS:
            argument = self.peek()
            if argument.kind != "string":
                self.advance()
                self.fail(argument.offset, f'{name}() takes one string, e.g. {name}("...")')
            self.advance()
            self.expect(")", f"')' after the argument of {name}()")
            try:
                return STRING_FUNCTIONS[name](argument.value)  # type: ignore[arg-type]
            except RuleNodeError as exc:
                self.note(argument.offset, f"{name}(): {exc}")
                return _PLACEHOLDER
        if name in ("count", "sum"):
            return self.window_function(name)
        if name == "days_since":
            return self.days_since()
        self.note(
            start.offset,
            f"unknown function {name!r}; functions are count, sum, days_since, segment, "
            "has_identity, session.category_views, session.product_views, session.searched, "
            "feature.interest",
        )
        self.skip_arguments()
        return _PLACEHOLDER

    def days_since(self) -> Value:
        example = "as in days_since(trait.signup_date)"
        token = self.peek()
        if token.kind != "word" or token.text in _CONSTANTS or token.text in _RESERVED:
            self.advance()  # surfaces a lexer error first, if that is what it is
            self.fail(token.offset, f"days_since() takes a trait or context attribute, {example}")
        self.advance()
        parts = [token.text]
        while self.peek().kind == ".":
            self.advance()
            parts.append(self.expect("word", "a name after '.'").text)
        self.expect(")", "')' after the argument of days_since()")
        try:
            value = resolve_attribute(parts)
        except RuleNodeError as exc:
            self.note(token.offset, str(exc))
            return _PLACEHOLDER
        if not isinstance(value, TraitRef | ContextRef):
            self.note(
                token.offset,
                f"days_since() reads a date in a trait or context field, not {'.'.join(parts)}; "
                f"{example}",
            )
            return _PLACEHOLDER
        return DaysSince(value)

    def skip_arguments(self) -> None:
        # Skip to the matching ')' so that the rest of the rule is checked too.
        depth = 1
        while depth:
            token = self.advance()
            if token.kind == "end":
                self.fail(token.offset, "expected ')'")
            depth += {"(": 1, ")": -1}.get(token.kind, 0)

    def name_argument(self, what: str) -> tuple[_Token, str]:
        token = self.peek()
        if token.kind not in ("word", "string"):
            self.advance()
            self.fail(token.offset, f"expected {what}, found {_describe(token)}")
        self.advance()
        return token, token.text if token.kind == "word" else str(token.value)

    def event_filter(self) -> tuple[bool, EventFilter | None]:
        """An optional `where <property> == "<value>"`; (False, None) when it was wrong."""
        if not self.is_word("where"):
            return True, None
        self.advance()
        example = 'as in where category == "juicers"'
        prop_token = self.peek()
        if prop_token.kind != "word":
            self.advance()
            self.fail(prop_token.offset, f"expected a property after 'where', {example}")
        self.advance()
        op_token = self.peek()
        if op_token.kind != "op" or op_token.text != "==":
            self.advance()
            self.fail(op_token.offset, f'a filter is <property> == "<value>", {example}')
        self.advance()
        value_token = self.peek()
        if value_token.kind != "string":
            self.advance()
            self.fail(value_token.offset, f"a filter compares with a string, {example}")
        self.advance()
        if prop_token.text not in FILTER_PROPERTIES:
            self.note(
                prop_token.offset,
                f"events are filtered by {', '.join(FILTER_PROPERTIES)}, not {prop_token.text!r}",
            )
            return False, None
        try:
            return True, EventFilter(prop_token.text, value_token.value)  # type: ignore[arg-type]
        except RuleNodeError as exc:
            self.note(value_token.offset, str(exc))
            return False, None

    def window_function(self, name: str) -> Value:
        example = (
            "count(purchase, within=30d)" if name == "count" else "sum(purchase.revenue, within=7d)"
        )
        event_token, event_type = self.name_argument(f"an event type, as in {example}")
        prop = ""
        prop_token = event_token
        if name == "sum":
            self.expect(".", f"'.' and a property, as in {example}")
            prop_token, prop = self.name_argument(f"an event property, as in {example}")
        prop_ok = name == "count" or prop in SUM_PROPERTIES
        if not prop_ok:
            self.note(prop_token.offset, f"sum() adds up {', '.join(SUM_PROPERTIES)}, not {prop!r}")
        filter_ok, where = self.event_filter()
        self.expect(",", f"',' and a window, as in {example}")
        if not self.is_word("within"):
            self.fail(self.peek().offset, f"expected 'within=', as in {example}")
        self.advance()
        self.expect("=", "'=' after 'within'")
        window_token = self.peek()
        if window_token.kind == "number":
            self.fail(
                window_token.offset, "a window needs a unit: d (days), h (hours) or m (minutes)"
            )
        self.expect("window", f"a window in days such as 30d, as in {example}")
        self.expect(")", f"')' to close {name}(")
        try:
            days = parse_window_days(window_token.text)
        except RuleNodeError as exc:
            self.note(window_token.offset, str(exc))
            return _PLACEHOLDER
        if not (prop_ok and filter_ok):
            return _PLACEHOLDER
        try:
            if name == "count":
                return EventCount(event_type, days, where)
            return EventSum(event_type, prop, days, where)
        except RuleNodeError as exc:
            self.note(event_token.offset, f"{name}(): {exc}")
            return _PLACEHOLDER


def _parse(text: str) -> tuple[Condition | None, list[RuleError]]:
    if len(text) > MAX_RULE_CHARS:
        return None, [RuleError(1, 1, f"the rule is longer than {MAX_RULE_CHARS} characters")]
    parser = _Parser(text)
    try:
        rule: Condition | None = parser.rule()
    except _Stop:
        rule = None
    errors = sorted(parser.errors)
    return (None, errors) if errors else (rule, [])


def parse_text(text: str, *, field: str = "segment.rule") -> Condition:
    """Parse a rule in the text notation; raises RuleSyntaxError (all errors)."""
    return parsed_or_raise(_parse(text), field)


def validate_text(text: str) -> list[RuleError]:
    """Every problem found in a text rule, first position first; [] if valid."""
    return _parse(text)[1]
