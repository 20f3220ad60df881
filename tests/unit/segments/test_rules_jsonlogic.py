"""The JsonLogic notation: same trees as the text notation, positioned errors."""

from __future__ import annotations

import pytest

from tessera.segments.domain import (
    And,
    Compare,
    Literal,
    TraitRef,
    parse_json_logic,
    parse_rule,
    parse_text,
    validate,
    validate_json_logic,
)

EQUIVALENT = [
    ('trait.country in ["FR", "BE"]', '{"in": [{"var": "trait.country"}, ["FR", "BE"]]}'),
    ('trait.city in "Springfield"', '{"in": [{"var": "trait.city"}, "Springfield"]}'),
    (
        'trait.country in ["FR", "BE"] and session.category_views("juicers") >= 2 '
        'and not (trait.plan == "free")',
        """{"and": [
             {"in": [{"var": "trait.country"}, ["FR", "BE"]]},
             {">=": [{"category_views": "juicers"}, 2]},
             {"!": {"==": [{"var": "trait.plan"}, "free"]}}
           ]}""",
    ),
    ('trait.plan == "pro"', '{"===": [{"var": "trait.plan"}, "pro"]}'),
    ("trait.age != 3", '{"!==": [{"var": "trait.age"}, 3]}'),
    ("trait.age != 3", '{"!=": [{"var": ["trait.age"]}, 3]}'),
    ("1 < trait.age and trait.age < 10", '{"<": [1, {"var": "trait.age"}, 10]}'),
    ("1 <= trait.age and trait.age <= 10", '{"<=": [1, {"var": "trait.age"}, 10]}'),
    ("feature.lifetime_value > 100.5", '{">": [{"var": "feature.lifetime_value"}, 100.5]}'),
    ("feature.rfm.frequency >= 2", '{">=": [{"var": "feature.rfm.frequency"}, 2]}'),
    (
        'segment("vip") or has_identity("email")',
        '{"or": [{"segment": "vip"}, {"has_identity": "email"}]}',
    ),
    ("identity.email", '{"var": "identity.email"}'),
    ('segment("vip")', '{"!!": [{"segment": ["vip"]}]}'),
    ("trait.vip", '{"!!": {"var": "trait.vip"}}'),
    ("not trait.vip", '{"!": [{"var": "trait.vip"}]}'),
    ('session.searched("juicer")', '{"searched": "juicer"}'),
    ('session.product_views("sku-1") > 0', '{">": [{"product_views": "sku-1"}, 0]}'),
    ('feature.interest("kitchen") >= 0.5', '{">=": [{"interest": "kitchen"}, 0.5]}'),
    ("count(purchase, within=30d) == 0", '{"==": [{"count": ["purchase", "30d"]}, 0]}'),
    (
        "sum(purchase.revenue, within=7d) > 100",
        '{">": [{"sum": ["purchase", "revenue", "7d"]}, 100]}',
    ),
    (
        'count(purchase where category == "juicers", within=90d) >= 2',
        '{">=": [{"count": ["purchase", "90d", {"category": "juicers"}]}, 2]}',
    ),
    (
        'sum(purchase.revenue where channel == "store", within=365d) > 100',
        '{">": [{"sum": ["purchase", "revenue", "365d", {"channel": "store"}]}, 100]}',
    ),
    (
        'channel == "web" and context.device == "mobile"',
        '{"and": [{"==": [{"var": "channel"}, "web"]},'
        ' {"==": [{"var": "context.device"}, "mobile"]}]}',
    ),
    ("session.page_views > 3", '{"and": [{">": [{"var": "session.page_views"}, 3]}]}'),
    ("true", "true"),
]


@pytest.mark.parametrize(("text", "json_logic"), EQUIVALENT)
def test_json_logic__same_rule_as_text__gives_same_tree(text: str, json_logic: str) -> None:
    assert parse_json_logic(json_logic) == parse_text(text)


def test_parse_rule__object__is_read_as_json_logic() -> None:
    rule = parse_rule('  {"==": [{"var": "trait.a"}, 1]}')

    assert rule == Compare("==", TraitRef(("a",)), Literal(1))


def test_json_logic__between__expands_to_two_comparisons() -> None:
    rule = parse_json_logic('{"<": [0, {"var": "trait.score"}, 5]}')

    assert rule == And(
        (
            Compare("<", Literal(0), TraitRef(("score",))),
            Compare("<", TraitRef(("score",)), Literal(5)),
        )
    )


@pytest.mark.parametrize(
    ("source", "line", "column", "fragment"),
    [
        ('{"==": [1, 2}', 1, 13, "invalid JSON"),
        ("", 1, 1, "invalid JSON"),
        ('{"and": [\n  {"if": [true, 1, 2]}\n]}', 2, 4, "unsupported operator 'if'"),
        ('{"==": [1]}', 1, 2, "'==' takes 2 arguments, got 1"),
        ('{">": [1, 2, 3]}', 1, 2, "'>' takes 2 arguments, got 3"),
        ('{"<": [1, 2, 3, 4]}', 1, 2, "'<' takes 2 or 3 arguments"),
        ('{"!": [true, false]}', 1, 2, "'!' takes exactly one argument"),
        ('{"and": []}', 1, 2, "'and' needs at least one argument"),
        ('{"==": [1, 2], "!=": [1, 2]}', 1, 1, "exactly one operator key"),
        ('{"==": [{"var": "trait.a"}, {"and": [true, true]}]}', 1, 30, "'and' gives true or false"),
        ('{"var": ["trait.a", 0]}', 1, 2, "'var' default values are not supported"),
        ('{"var": 3}', 1, 2, "'var' takes an attribute path"),
        ('{"segment": 3}', 1, 2, "'segment' takes 1 string argument"),
        ('{"count": ["purchase"]}', 1, 2, "'count' takes 2 string arguments"),
        ('{"count": ["purchase", "30"]}', 1, 24, "invalid window '30'"),
        ('{"count": ["purchase", "30d", {"a": "b", "c": "d"}]}', 1, 31, "a filter is one"),
        ('{"count": ["purchase", "30d", {"colour": "red"}]}', 1, 32, "filtered by category"),
        ('{"count": ["purchase", "401d"]}', 1, 24, "kept for 400 days"),
        ('{"count": ["purchase", "90m"]}', 1, 24, "not a whole number of days"),
        ('{"sum": ["purchase", "points", "7d"]}', 1, 22, "adds up revenue"),
        ('{"count": ["purchase", "30d", {"category": 1}]}', 1, 44, "compares with a string"),
        ('{"in": [{"var": "trait.a"}, [[1]]]}', 1, 30, "list items"),
        (
            '{"==": [{"var": "sesion.page_views"}, 1]}',
            1,
            17,
            "unknown attribute 'sesion.page_views'",
        ),
        ('{"==": [{"var": "channel"}, "website"]}', 1, 2, "unknown channel 'website'"),
        ('{"<": [{"segment": "a"}, 1]}', 1, 2, "is a bool"),
        ('{"==": [1, NaN]}', 1, 12, "not finite"),
    ],
)
def test_validate_json_logic__bad_rule__names_operator_at_its_position(
    source: str, line: int, column: int, fragment: str
) -> None:
    errors = validate_json_logic(source)

    assert errors, source
    assert (errors[0].line, errors[0].column) == (line, column), errors[0]
    assert fragment in errors[0].message


def test_validate__json_logic_with_two_unknown_vars__reports_both() -> None:
    source = '{"and": [{"var": "trait"}, {"var": "foo.bar"}]}'

    errors = validate(source)

    assert [(e.line, e.column) for e in errors] == [(1, 18), (1, 36)]


def test_validate_json_logic__deep_nesting__is_rejected_not_crashing() -> None:
    source = '{"!": ' * 200 + "true" + "}" * 200

    errors = validate_json_logic(source)

    assert len(errors) == 1
    assert "nests more than" in errors[0].message


def test_validate_json_logic__integer_of_5000_digits__positioned_error_naming_the_digit_limit() -> (
    None
):
    errors = validate_json_logic('{">":\n [{"var": "trait.a"}, ' + "9" * 5000 + "]}")

    assert [(e.line, e.column) for e in errors] == [(2, 23)]
    assert "at most 32 digits" in errors[0].message


def test_validate_json_logic__number_beyond_a_double__positioned_error() -> None:
    errors = validate_json_logic('{"<": [{"var": "trait.a"}, 1e400]}')

    assert [(e.line, e.column) for e in errors] == [(1, 28)]
    assert "finite" in errors[0].message


def test_parse_json_logic__33_digit_string__stays_a_string() -> None:
    rule = parse_json_logic('{"==": [{"var": "trait.a"}, "' + "9" * 33 + '"]}')

    assert rule == Compare("==", TraitRef(("a",)), Literal("9" * 33))
