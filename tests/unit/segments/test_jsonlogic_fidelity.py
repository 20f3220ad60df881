"""Where Tessera reads a JsonLogic operator, it answers as json-logic-js's published cases say.

Sources of the cases (rule, data, json-logic-js's result), quoted as
published:

- JSONLOGIC_JS: jwadhams/json-logic-js, tests/tests.js, the QUnit tests
  "single operands", "compound logic" and "data-driven";
- SHARED: the shared suite json-logic-js runs (tests.js downloads
  https://jsonlogic.com/tests.json), sections "Non-rules get passed through",
  "Single operator tests", "Truthy and falsy definitions matter in Boolean
  operations" and "Compound Tests" (read as vendored in
  tavrelkate/json-logic-rb, spec/tmp/v2/tests.json).

A Tessera rule is a condition: it holds or not. So a case "agrees" when the
rule holds exactly when json-logic-js's result is truthy (JsonLogic's
truthiness: false, null, 0, "" and [] are falsy). `and` / `or` returning an
operand (`{"or": [3, false]}` is 3) therefore agree by their truthiness.

Data paths: JsonLogic reads `{"var": "a"}` from the data object; Tessera
reads profile attributes by root (`trait.a`), so the data is given as the
profile's traits and each `var` path is read under `trait.`.

Every case where Tessera does not give json-logic-js's answer is listed in
DIFFERENCES, with why, and docs/rules.md ("Differences from json-logic-js")
lists each kind. A case is either evaluated the same, refused when the rule
is saved (with an error saying why), or, only where the data carries mixed
types, answered differently.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tessera.segments.domain import Subject, compile_rule, parse_json_logic, validate

# (rule, data, json-logic-js result), as published.
JSONLOGIC_JS: list[tuple[Any, Any, Any]] = [
    ({"==": [1, 1]}, None, True),
    ({"==": [1, 2]}, None, False),
    ({"===": [1, 1]}, None, True),
    ({"===": [1, 2]}, None, False),
    ({"!=": [1, 2]}, None, True),
    ({"!=": [1, 1]}, None, False),
    ({"!==": [1, 2]}, None, True),
    ({"!==": [1, 1]}, None, False),
    ({">": [2, 1]}, None, True),
    ({">": [1, 1]}, None, False),
    ({">": [1, 2]}, None, False),
    ({">=": [2, 1]}, None, True),
    ({">=": [1, 1]}, None, True),
    ({">=": [1, 2]}, None, False),
    ({"<": [2, 1]}, None, False),
    ({"<": [1, 1]}, None, False),
    ({"<": [1, 2]}, None, True),
    ({"<=": [2, 1]}, None, False),
    ({"<=": [1, 1]}, None, True),
    ({"<=": [1, 2]}, None, True),
    ({"!": [False]}, None, True),
    ({"!": False}, None, True),
    ({"!": [True]}, None, False),
    ({"!": True}, None, False),
    ({"!": 0}, None, True),
    ({"or": [True, True]}, None, True),
    ({"or": [False, True]}, None, True),
    ({"or": [True, False]}, None, True),
    ({"or": [False, False]}, None, False),
    ({"or": [False, False, True]}, None, True),
    ({"or": [False, 3]}, None, 3),
    ({"or": [3, False]}, None, 3),
    ({"or": [3, 4]}, None, 3),
    ({"and": [True, True]}, None, True),
    ({"and": [False, True]}, None, False),
    ({"and": [True, False]}, None, False),
    ({"and": [False, False]}, None, False),
    ({"and": [True, True, False]}, None, False),
    ({"and": [False, 3]}, None, False),
    ({"and": [3, False]}, None, False),
    ({"and": [3, 4]}, None, 4),
    ({"in": ["Spring", "Springfield"]}, None, True),
    ({"in": ["f", "way"]}, None, False),
    ({"in": ["a", ["a", "b"]]}, None, True),
    ({"in": ["c", ["a", "b"]]}, None, False),
    ({"and": [{">": [3, 1]}, True]}, None, True),
    ({"and": [{">": [3, 1]}, False]}, None, False),
    ({"and": [{">": [3, 1]}, {"!": True}]}, None, False),
    ({"and": [{">": [3, 1]}, {"<": [1, 3]}]}, None, True),
    ({"var": ["a"]}, {"a": 1}, 1),
    ({"var": ["a"]}, None, None),
    ({"var": ["b"]}, {"a": 1}, None),
    ({"var": "a"}, {"a": 1}, 1),
    ({"var": "a"}, None, None),
    ({"var": "b"}, {"a": 1}, None),
    ({"var": "a.b"}, {"a": {"b": 1}}, 1),
    ({"var": "a.q"}, {"a": {"b": 1}}, None),
    (
        {"and": [{"<": [{"var": "temp"}, 110]}, {"==": [{"var": "pie.filling"}, "apple"]}]},
        {"temp": 100, "pie": {"filling": "apple"}},
        True,
    ),
    ({"in": [{"var": "pie"}, ["apple", "pumpkin"]]}, {"pie": "apple"}, True),
    ({"in": [{"var": "pie"}, ["cherry", "pumpkin"]]}, {"pie": "apple"}, False),
    ({"in": [{"var": "pie"}, []]}, {"pie": "apple"}, False),
    # Published there too; Tessera's answer differs (DIFFERENCES says how).
    ({"===": [1, "1"]}, None, False),
    ({"!==": [1, "1"]}, None, True),
    ({">": ["2", 1]}, None, True),
    ({">=": ["2", 1]}, None, True),
    ({"<": ["1", 2]}, None, True),
    ({"<=": ["1", 2]}, None, True),
    ({"?:": [True, 1, 2]}, None, 1),
    ({"cat": ["apple", "pie"]}, None, "applepie"),
    ({"%": [3, 2]}, None, 1),
    ({"log": [1]}, None, 1),
    ({"var": 1}, ["apple", "banana", "carrot"], "banana"),
]

SHARED: list[tuple[Any, Any, Any]] = [
    (True, None, True),
    (False, None, False),
    (17, None, 17),
    (3.14, None, 3.14),
    ("apple", None, "apple"),
    (None, None, None),
    (["a", "b"], None, ["a", "b"]),
    ({"<": [1, 2, 3]}, None, True),
    ({"<": [1, 1, 3]}, None, False),
    ({"<": [1, 4, 3]}, None, False),
    ({"<=": [1, 2, 3]}, None, True),
    ({"<=": [1, 4, 3]}, None, False),
    ({"!": 1}, None, False),
    ({"or": [False, False, False]}, None, False),
    ({"or": [False]}, None, False),
    ({"or": [True]}, None, True),
    ({"or": [1, 3]}, None, 1),
    ({"and": [True, True, True]}, None, True),
    ({"and": [False]}, None, False),
    ({"and": [True]}, None, True),
    ({"and": [1, 3]}, None, 3),
    ({"in": ["Bart", ["Bart", "Homer", "Lisa", "Marge", "Maggie"]]}, None, True),
    ({"in": ["Milhouse", ["Bart", "Homer", "Lisa", "Marge", "Maggie"]]}, None, False),
    ({"in": ["i", "team"]}, None, False),
    ({"!": [[]]}, None, True),
    ({"!!": [[]]}, None, False),
    ({"and": [[], True]}, None, []),
    ({"or": [[], True]}, None, True),
    ({"!": [0]}, None, True),
    ({"!!": [0]}, None, False),
    ({"and": [0, True]}, None, 0),
    ({"or": [0, True]}, None, True),
    ({"!": [""]}, None, True),
    ({"!!": [""]}, None, False),
    ({"and": ["", True]}, None, ""),
    ({"or": ["", True]}, None, True),
    ({"!": ["0"]}, None, False),
    ({"!!": ["0"]}, None, True),
    ({"and": ["0", True]}, None, True),
    ({"or": ["0", True]}, None, "0"),
    # Published there too; Tessera's answer differs (DIFFERENCES says how).
    ({"==": [1, "1"]}, None, True),
    ({"!=": [1, "1"]}, None, False),
    ({"===": [0, "0"]}, None, False),
    ({"max": [1, 2, 3]}, None, 3),
    ({"+": [1, 2]}, None, 3),
    ({"if": [True, "apple", "banana"]}, None, "apple"),
    ({"missing": ["a"]}, None, ["a"]),
    ({"merge": [[1], [2]]}, None, [1, 2]),
    ({"substr": ["jsonlogic", 4]}, None, "logic"),
]

# Cases Tessera answers otherwise: json rule -> (how, what to find in the error or its answer).
# "refused": the rule is rejected when saved, the error says why.
DIFFERENCES: dict[str, tuple[str, str]] = {
    # No type coercion: a number never equals or orders with a string. Two
    # constants of different types could never compare true in Tessera, so
    # the rule is refused rather than saved as a constant.
    '{"===": [1, "1"]}': ("refused", "compares a number (1) with a string"),
    '{"!==": [1, "1"]}': ("refused", "compares a number (1) with a string"),
    '{"==": [1, "1"]}': ("refused", "compares a number (1) with a string"),
    '{"!=": [1, "1"]}': ("refused", "compares a number (1) with a string"),
    '{"===": [0, "0"]}': ("refused", "compares a number (0) with a string"),
    '{">": ["2", 1]}': ("refused", 'compares a string ("2") with a number'),
    '{">=": ["2", 1]}': ("refused", 'compares a string ("2") with a number'),
    '{"<": ["1", 2]}': ("refused", 'compares a string ("1") with a number'),
    '{"<=": ["1", 2]}': ("refused", 'compares a string ("1") with a number'),
    # A rule is a condition: operators that compute values are not read.
    '{"?:": [true, 1, 2]}': ("refused", "unsupported operator '?:'"),
    '{"cat": ["apple", "pie"]}': ("refused", "unsupported operator 'cat'"),
    '{"%": [3, 2]}': ("refused", "unsupported operator '%'"),
    '{"log": [1]}': ("refused", "unsupported operator 'log'"),
    '{"max": [1, 2, 3]}': ("refused", "unsupported operator 'max'"),
    '{"+": [1, 2]}': ("refused", "unsupported operator '+'"),
    '{"if": [true, "apple", "banana"]}': ("refused", "unsupported operator 'if'"),
    '{"missing": ["a"]}': ("refused", "unsupported operator 'missing'"),
    '{"merge": [[1], [2]]}': ("refused", "unsupported operator 'merge'"),
    '{"substr": ["jsonlogic", 4]}': ("refused", "unsupported operator 'substr'"),
    # Attributes are named paths (trait.a), not indexes into the data.
    '{"var": 1}': ("refused", "'var' takes an attribute path"),
}


def _trait_paths(rule: Any) -> Any:
    """The rule with every `var` path read under `trait.`."""
    if isinstance(rule, dict):
        out = {}
        for op, args in rule.items():
            if op == "var" and isinstance(args, str):
                out[op] = f"trait.{args}"
            elif op == "var" and isinstance(args, list) and args and isinstance(args[0], str):
                out[op] = [f"trait.{args[0]}", *args[1:]]
            else:
                out[op] = _trait_paths(args)
        return out
    if isinstance(rule, list):
        return [_trait_paths(item) for item in rule]
    return rule


def _truthy(value: Any) -> bool:
    """JsonLogic's truthiness (jsonlogic.com/truthy.html): false, null, 0, "" and [] are falsy."""
    if isinstance(value, list):
        return len(value) > 0
    return bool(value)


CASES = [pytest.param(*case, id=json.dumps(case[0])) for case in [*JSONLOGIC_JS, *SHARED]]


@pytest.mark.parametrize(("rule", "data", "expected"), CASES)
def test_json_logic__published_case__same_answer_or_a_listed_difference(
    rule: Any, data: Any, expected: Any
) -> None:
    written = json.dumps(rule)
    text = json.dumps(_trait_paths(rule))
    errors = validate(text, "json_logic")

    if written in DIFFERENCES:
        how, reason = DIFFERENCES[written]
        assert how == "refused"
        assert errors, f"{written} is listed as refused but was accepted"
        assert reason in errors[0].message, errors
        return
    assert errors == [], f"{written} was refused: {errors}"
    subject = Subject(traits=data if isinstance(data, dict) else {})
    holds = compile_rule(parse_json_logic(text))(subject)
    assert holds is _truthy(expected), f"{written} with {data}: json-logic-js gives {expected!r}"


def test_differences__every_listed_case_is_a_published_case() -> None:
    published = {json.dumps(rule) for rule, _, _ in [*JSONLOGIC_JS, *SHARED]}

    assert set(DIFFERENCES) <= published


@pytest.mark.parametrize(
    ("rule", "data", "json_logic_js", "tessera"),
    [
        # The published {"==": [1, "1"]} (true in json-logic-js), its "1"
        # coming from the data: Tessera never converts, so it is false.
        ({"==": [{"var": "a"}, "1"]}, {"a": 1}, True, False),
        ({"!=": [{"var": "a"}, "1"]}, {"a": 1}, False, True),
        # The published {">": ["2", 1]}: a string never orders with a number.
        ({">": [{"var": "a"}, 1]}, {"a": "2"}, True, False),
        # JsonLogic's documented {"==": [0, false]} (jsonlogic.com/operations.html).
        ({"==": [{"var": "a"}, False]}, {"a": 0}, True, False),
    ],
)
def test_json_logic__mixed_types_in_the_data__no_coercion_unlike_json_logic_js(
    rule: Any, data: Any, json_logic_js: bool, tessera: bool
) -> None:
    text = json.dumps(_trait_paths(rule))

    holds = compile_rule(parse_json_logic(text))(Subject(traits=data))

    assert holds is tessera
    assert holds is not json_logic_js
