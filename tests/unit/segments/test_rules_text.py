"""The text notation: what parses to which tree, and where errors are reported."""

from __future__ import annotations

import pytest

from tessera.errors import InvalidArgument
from tessera.segments.domain import (
    And,
    CategoryViews,
    ChannelRef,
    Compare,
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
    RuleError,
    RuleSyntaxError,
    Searched,
    SessionField,
    TraitRef,
    Truth,
    parse_text,
    validate_text,
)


def test_parse__in_list__matches_member() -> None:
    rule = parse_text('trait.country in ["FR", "BE"]')

    assert rule == Compare("in", TraitRef(("country",)), Literal(("FR", "BE")))


def test_parse__brief_example__builds_expected_tree() -> None:
    text = (
        'trait.country in ["FR", "BE"] and session.category_views("juicers") >= 2 '
        'and not (trait.plan == "free")'
    )

    rule = parse_text(text)

    assert rule == And(
        (
            Compare("in", TraitRef(("country",)), Literal(("FR", "BE"))),
            Compare(">=", CategoryViews("juicers"), Literal(2)),
            Not(Compare("==", TraitRef(("plan",)), Literal("free"))),
        )
    )


def test_parse__and_binds_tighter_than_or__groups_and_first() -> None:
    rule = parse_text("trait.a == 1 or trait.b == 2 and trait.c == 3")

    a, b, c = (Compare("==", TraitRef((n,)), Literal(v)) for n, v in (("a", 1), ("b", 2), ("c", 3)))
    assert rule == Or((a, And((b, c))))


def test_parse__not_binds_tighter_than_and__negates_one_operand() -> None:
    rule = parse_text('not segment("a") and segment("b")')

    assert rule == And((Not(Truth(InSegment("a"))), Truth(InSegment("b"))))


def test_parse__parentheses__override_precedence() -> None:
    rule = parse_text('(segment("a") or segment("b")) and segment("c")')

    assert rule == And((Or((Truth(InSegment("a")), Truth(InSegment("b")))), Truth(InSegment("c"))))


def test_parse__not_in__is_its_own_operator() -> None:
    rule = parse_text('channel not in ["store", "call_center"]')

    assert rule == Compare("not in", ChannelRef(), Literal(("store", "call_center")))


def test_parse__contains__is_stored_as_in_with_sides_swapped() -> None:
    rule = parse_text('trait.tags contains "vip"')

    assert rule == Compare("in", Literal("vip"), TraitRef(("tags",)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"a\\"b\\\\c\\n\\u00e9"', 'a"b\\c\né'),
        ("42", 42),
        ("-7", -7),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ('[1, "x", null, 2.5, false]', (1, "x", None, 2.5, False)),
        ("[]", ()),
    ],
)
def test_parse__literals__keep_their_type(text: str, expected: object) -> None:
    rule = parse_text(f"trait.x == {text}")

    assert isinstance(rule, Compare)
    assert isinstance(rule.right, Literal)
    assert rule.right.value == expected
    assert type(rule.right.value) is type(expected)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("trait.address.city", TraitRef(("address", "city"))),
        ("trait.in", TraitRef(("in",))),
        ("context.device.os", ContextRef(("device", "os"))),
        ("channel", ChannelRef()),
        ("identity.email", HasIdentity("email")),
        ('has_identity("crm_id")', HasIdentity("crm_id")),
        ("session.page_views", SessionField("page_views")),
        ("session.cart_value", SessionField("cart_value")),
        ('session.product_views("sku-1")', ProductViews("sku-1")),
        ('session.searched("juicer")', Searched("juicer")),
        ("feature.lifetime_value", FeatureRef(("lifetime_value",))),
        ("feature.rfm.recency_days", FeatureRef(("rfm", "recency_days"))),
        ('feature.interest("kitchen")', Interest("kitchen")),
        ('segment("big-spenders")', InSegment("big-spenders")),
        ("count(purchase, within=30d)", EventCount("purchase", 30)),
        ('count("purchase", within=48h)', EventCount("purchase", 2)),
        ("count(login, within=1440m)", EventCount("login", 1)),
        ("sum(purchase.revenue, within=400d)", EventSum("purchase", "revenue", 400)),
        (
            'count(purchase where category == "juicers", within=90d)',
            EventCount("purchase", 90, EventFilter("category", "juicers")),
        ),
        (
            'sum(purchase.revenue where product_id == "sku-1", within=365d)',
            EventSum("purchase", "revenue", 365, EventFilter("product_id", "sku-1")),
        ),
        (
            'count(purchase where channel == "store", within=7d)',
            EventCount("purchase", 7, EventFilter("channel", "store")),
        ),
    ],
)
def test_parse__attribute_or_function__resolves_to_typed_node(text: str, value: object) -> None:
    rule = parse_text(text)

    assert rule == Truth(value)  # type: ignore[arg-type]


def test_parse__rule_over_several_lines_with_comment__parses() -> None:
    text = 'trait.plan == "pro"   # paying customers\n  and\n  channel == "web"\n'

    rule = parse_text(text)

    assert rule == And(
        (
            Compare("==", TraitRef(("plan",)), Literal("pro")),
            Compare("==", ChannelRef(), Literal("web")),
        )
    )


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("", 1, 1, "empty"),
        ("trait.a ==", 1, 11, "expected a value"),
        ("trait.a == 1 ==  2", 1, 14, "cannot be chained"),
        ("trait.a == 1 and\n  (trait.b == 2", 2, 16, "expected ')'"),
        ("trait.a == 'x'", 1, 12, "double quotes"),
        ('trait.a == 1\n\n   and "open', 3, 8, "unterminated string"),
        ('trait.a == "bad \\q escape"', 1, 17, "invalid \\escape"),
        ("trait.a == 1 trait.b", 1, 14, "expected 'and', 'or'"),
        ("count(purchase, within=30)", 1, 24, "needs a unit"),
        ("count(purchase)", 1, 15, "window"),
        ("count(purchase, within=30y)", 1, 24, "invalid window"),
        ('count(purchase where category = "a", within=1d)', 1, 31, "a filter is"),
        ("count(purchase where category == 3, within=1d)", 1, 34, "compares with a string"),
        ('count(purchase where == "a", within=1d)', 1, 22, "a property after 'where'"),
        ('count(purchase where category == "a" within=1d)', 1, 38, "',' and a window"),
        ("trait.a in [trait.b]", 1, 13, "list items"),
        ("(trait.a == 1) == true", 1, 1, "must be a value"),
        ("trait.a == 12abc", 1, 12, "invalid number"),
        ("trait.a ! = 1", 1, 9, "'!'"),
        ("trait.", 1, 7, "a name after '.'"),
        # Letters and digits beyond ASCII are not part of the notation.
        ("trait.pays == é", 1, 15, "unexpected character 'é'"),
        ("trait.x² == 1", 1, 8, "unexpected character '²'"),
        ("trait.a == ٣", 1, 12, "unexpected character '٣'"),
        ("trait.a == 1é", 1, 13, "unexpected character 'é'"),
    ],
)
def test_validate__syntax_error__reports_exact_line_and_column(
    text: str, line: int, column: int, fragment: str
) -> None:
    errors = validate_text(text)

    assert errors, text
    assert (errors[0].line, errors[0].column) == (line, column), errors[0]
    assert fragment in errors[0].message


def test_validate__windows_beyond_history_and_unknown_filters__all_reported_in_place() -> None:
    text = (
        'count(purchase where colour == "red", within=500d) > 0\n'
        "  and sum(purchase.points, within=12h) > 1\n"
        '  and count(page_view where channel == "website", within=7d) > 0'
    )

    errors = validate_text(text)

    assert [(e.line, e.column) for e in errors] == [(1, 22), (1, 46), (2, 20), (2, 35), (3, 40)]
    assert "filtered by category, product_id, channel, not 'colour'" in errors[0].message
    assert "kept for 400 days" in errors[1].message
    assert "adds up revenue, price, quantity, duration_ms, not 'points'" in errors[2].message
    assert "not a whole number of days" in errors[3].message
    assert "unknown channel 'website'" in errors[4].message


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("trait", 1, "'trait' needs a name"),
        ("sesion.page_views > 1", 1, "unknown attribute 'sesion.page_views'"),
        ('foo("x")', 1, "unknown function 'foo'"),
        ("session.pageviews > 1", 1, "session fields are"),
        ("session.category_views > 1", 1, "is a function"),
        ("feature.rfm.age > 1", 1, "unknown attribute 'feature.rfm.age'"),
        ('segment("Big Spenders")', 9, "segment key"),
        ('session.page_views == "many"', 20, "never changes"),
        ('channel == "website"', 9, "unknown channel 'website'"),
        ('segment("a") > 1', 14, "is a bool"),
        ('session.page_views in ["a"]', 20, "holding a string"),
    ],
)
def test_validate__unknown_name_or_impossible_comparison__is_an_error(
    text: str, column: int, fragment: str
) -> None:
    errors = validate_text(text)

    assert len(errors) == 1, errors
    assert (errors[0].line, errors[0].column) == (1, column)
    assert fragment in errors[0].message


def test_validate__several_semantic_errors__reports_each_in_order() -> None:
    text = 'sesion.page_views > 1 and\nfoo("x") == 2 and trait == 3 and trait.a == ('

    errors = validate_text(text)

    assert [(e.line, e.column) for e in errors] == [(1, 1), (2, 1), (2, 19), (2, 46)]
    assert "expected a value" in errors[-1].message


def test_validate__valid_rule__returns_no_errors() -> None:
    assert validate_text('trait.country in ["FR"] and count(purchase, within=30d) == 0') == []


def test_parse_text__invalid_rule__raises_invalid_argument_with_all_errors() -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        parse_text("trait and sesion.x", field="rule.text")

    error = caught.value
    assert isinstance(error, InvalidArgument)
    assert error.field == "rule.text"
    assert error.errors == [
        RuleError(1, 1, "'trait' needs a name: trait.<name>"),
        RuleError(1, 11, error.errors[1].message),
    ]
    assert error.message.startswith("line 1, column 1: ")


def test_parse__deeply_nested_rule__is_rejected_not_crashing() -> None:
    errors = validate_text("(" * 500 + "true" + ")" * 500)

    assert len(errors) == 1
    assert "nests more than" in errors[0].message


def test_validate_text__integer_of_5000_digits__positioned_error_naming_the_digit_limit() -> None:
    errors = validate_text("trait.a == 1 or\n  trait.b > " + "9" * 5000)

    assert [(e.line, e.column) for e in errors] == [(2, 13)]
    assert "at most 32 digits" in errors[0].message


def test_parse_text__number_beyond_a_double__invalid_argument() -> None:
    with pytest.raises(RuleSyntaxError) as raised:
        parse_text("trait.a < 1e400")

    assert raised.value.errors[0].column == 11
    assert "finite" in raised.value.errors[0].message


@pytest.mark.parametrize("literal", ["9" * 32, "-" + "9" * 32, "0." + "1" * 31, "1.5e308"])
def test_parse_text__number_at_the_limit__is_a_literal(literal: str) -> None:
    rule = parse_text(f"trait.a < {literal}")

    assert rule == Compare(
        "<",
        TraitRef(("a",)),
        Literal(float(literal) if "." in literal or "e" in literal else int(literal)),
    )
