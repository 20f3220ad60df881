"""Evaluating compiled rules against subjects, including missing values.

Subjects here are typed values built in the test: the point is the
compiler's semantics. The event-window cases (`test_evaluate__window...`)
build an `EventHistoryView` by hand to pin the day arithmetic of windows
and filters; that production fills it from tracked events is proved through
the generated clients (tests/e2e/test_event_windows.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.segments.domain import (
    CartLine,
    Compare,
    DailySeries,
    EventHistoryView,
    FeaturesView,
    Literal,
    RfmView,
    SessionView,
    Subject,
    TraitRef,
    compile_rule,
    parse_json_logic,
    parse_text,
    values_equal,
)

SHOPPER = Subject(
    profile_id="p-1",
    traits={
        "country": "FR",
        "plan": "pro",
        "age": 34,
        "score": 2.5,
        "vip": True,
        "tags": ["gold", "newsletter"],
        "address": {"city": "Lyon", "zip": "69001"},
        "signup": "2024-03-01",
        "nothing": None,
    },
    identity_types=frozenset({"cookie", "email"}),
    channel="web",
    context={"device": "mobile", "location": {"country": "FR"}, "page": "/juicers"},
    session=SessionView(
        page_views=7,
        time_spent_ms=120_000,
        events=12,
        product_views={"sku-1": 3},
        category_views={"juicers": 2, "blenders": 1},
        cart=(
            CartLine(product_id="sku-1", category="juicers", quantity=2, price=49.5),
            CartLine(product_id="sku-9", category="cups", quantity=1, price=5.0),
        ),
        favorites=("sku-1",),
        searches=("Cold Press Juicer", "citrus"),
    ),
    features=FeaturesView(
        lifetime_value=420.0,
        conversion_probability=0.31,
        rfm=RfmView(recency_days=14, frequency=3, monetary=380.0),
        interests={"kitchen": 0.8},
    ),
)
NOBODY = Subject()


def matches(text: str, subject: Subject = SHOPPER) -> bool:
    return compile_rule(parse_text(text))(subject)


@pytest.mark.parametrize(
    "text",
    [
        'trait.country in ["FR", "BE"]',
        'trait.country == "FR" and trait.plan != "free"',
        "trait.age >= 34 and trait.age < 35",
        "trait.age == 34.0",
        "trait.score > 2",
        "trait.vip",
        "trait.vip == true",
        'trait.tags contains "gold"',
        '"gol" not in trait.tags',
        'trait.address.city == "Lyon"',
        'trait.signup >= "2024-01-01"',
        'trait.country in "FRANCE"',
        "trait.nothing == null",
        "trait.missing == null",
        'trait.missing != "x"',
        'trait.missing not in ["x"]',
        'channel == "web"',
        'context.device == "mobile" and context.location.country == "FR"',
        'has_identity("email") and identity.cookie and not has_identity("crm_id")',
        "session.page_views == 7 and session.events == 12",
        "session.time_spent_ms > 60000",
        "session.cart_size == 3",
        "session.cart_value == 104.0",
        "session.favorites == 1 and session.searches == 2",
        'session.category_views("juicers") >= 2 and session.category_views("tv") == 0',
        'session.product_views("sku-1") == 3',
        'session.searched("juicer") and not session.searched("blender")',
        "feature.lifetime_value > 400 and feature.conversion_probability < 0.5",
        "feature.rfm.recency_days <= 14 and feature.rfm.frequency == 3",
        "feature.rfm.monetary > 300",
        'feature.interest("kitchen") > 0.5 and feature.interest("garden") == 0',
        "true",
        "not false",
    ],
)
def test_evaluate__rule_true_for_shopper__matches(text: str) -> None:
    assert matches(text) is True


@pytest.mark.parametrize(
    "text",
    [
        'trait.country in ["DE", "BE"]',
        'trait.plan == "free"',
        "trait.age > 34",
        'trait.age == "34"',
        "trait.vip == 1",
        "trait.country < 5",
        'trait.tags contains "silver"',
        'trait.address.city.name == "Lyon"',
        'channel == "app"',
        'has_identity("crm_id")',
        "session.cart_size > 3",
        'session.searched("blender")',
        "trait.nothing",
        "false",
        "0",
        '""',
        "[]",
    ],
)
def test_evaluate__rule_false_for_shopper__does_not_match(text: str) -> None:
    assert matches(text) is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('trait.plan == "free"', False),
        ('trait.plan != "free"', True),
        ("trait.age < 3", False),
        ("trait.age >= 3", False),
        ('trait.plan in ["free"]', False),
        ('trait.plan not in ["free"]', True),
        ("trait.plan == null", True),
        ("trait.plan != null", False),
        ('trait.tags contains "x"', False),
        ("trait.vip", False),
        ("not trait.vip", True),
        ('channel == "web"', False),
        ("channel == null", True),
        ('context.device == "mobile"', False),
        ("feature.lifetime_value > 0", False),
        ("feature.lifetime_value <= 0", False),
        ("feature.lifetime_value == null", True),
        ("session.page_views == 0", True),
        ("session.cart_size == 0 and session.cart_value == 0", True),
        ('session.category_views("juicers") == 0', True),
        ('feature.interest("kitchen") == 0', True),
        ("count(purchase, within=30d) == 0", True),
        ("sum(purchase.revenue, within=7d) == 0", True),
        ('has_identity("email")', False),
        ('segment("vip")', False),
    ],
)
def test_evaluate__empty_subject__missing_values_follow_documented_semantics(
    text: str, expected: bool
) -> None:
    assert matches(text, NOBODY) is expected


TODAY = 20_000
"""A UTC day number (2024-10-04); windows end on it."""
HISTORY = EventHistoryView(
    today=TODAY,
    series={
        ("purchase", "", ""): DailySeries(
            days=(TODAY - 30, TODAY - 29, TODAY),
            counts=(1, 2, 1),
            sums={"revenue": (100.0, 50.0, 7.5)},
        ),
        ("purchase", "category", "juicers"): DailySeries(
            days=(TODAY - 29,), counts=(1,), sums={"revenue": (30.0,)}
        ),
        ("page_view", "channel", "app"): DailySeries(days=(TODAY - 1, TODAY), counts=(4, 5)),
    },
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # within=30d is today and the 29 days before: TODAY - 29 is in, TODAY - 30 out.
        ("count(purchase, within=30d) == 3", True),
        ("count(purchase, within=31d) == 4", True),
        ("count(purchase, within=1d) == 1", True),
        ("count(purchase, within=29d) == 1", True),
        ("sum(purchase.revenue, within=30d) == 57.5", True),
        ("sum(purchase.revenue, within=400d) == 157.5", True),
        ("sum(purchase.price, within=400d) == 0", True),
        ('count(purchase where category == "juicers", within=30d) == 1', True),
        ('count(purchase where category == "juicers", within=29d) == 0', True),
        ('sum(purchase.revenue where category == "juicers", within=90d) == 30', True),
        ('count(purchase where category == "tv", within=400d) == 0', True),
        ('count(page_view where channel == "app", within=2d) == 9', True),
        ('count(page_view where channel == "web", within=2d) == 0', True),
        ("count(page_view, within=2d) == 0", True),  # only a filtered series exists
        ("count(purchase, within=30d) > 3", False),
    ],
)
def test_evaluate__window_over_typed_history__counts_today_and_the_days_before(
    text: str, expected: bool
) -> None:
    assert matches(text, Subject(history=HISTORY)) is expected


def test_evaluate__window_on_another_day__moves_with_today() -> None:
    tomorrow = EventHistoryView(today=TODAY + 1, series=HISTORY.series)

    assert matches("count(purchase, within=30d) == 1", Subject(history=tomorrow))
    assert matches("count(purchase, within=30d) == 3", Subject(history=HISTORY))


def test_evaluate__bad_shaped_data__never_raises_and_is_false() -> None:
    # Traits are free-form, so they can be any shape; session and features
    # are typed now, so their oddities are odd values (NaN, zero, empty).
    odd = Subject(
        traits={"address": "not a dict", "n": float("nan")},
        session=SessionView(
            cart=(CartLine(product_id="junk", category="", quantity=0, price=float("nan")),),
            category_views={"x": 0},
            searches=("",),
        ),
        features=FeaturesView(
            lifetime_value=0.0,
            conversion_probability=0.0,
            rfm=RfmView(recency_days=-1.0, frequency=0, monetary=0.0),
            interests={"kitchen": float("nan")},
        ),
    )
    rule = parse_text(
        'trait.address.city == "Lyon" or trait.n > 0 or session.cart_size > 0 '
        'or session.cart_value > 0 or session.category_views("x") > 0 '
        'or session.searched("3") or feature.interest("kitchen") > 0'
    )

    assert compile_rule(rule)(odd) is False


def test_evaluate__segment_reference__reads_memberships() -> None:
    rule = compile_rule(parse_text('segment("vip") and not segment("churned")'))

    assert rule(NOBODY, {"vip": True}) is True
    assert rule(NOBODY, {"vip": True, "churned": True}) is False


def test_evaluate__json_logic_and_text_forms__agree_on_subjects() -> None:
    text = compile_rule(
        parse_text('trait.country in ["FR"] and session.category_views("juicers") >= 2')
    )
    json_logic = compile_rule(
        parse_json_logic(
            '{"and": [{"in": [{"var": "trait.country"}, ["FR"]]},'
            ' {">=": [{"category_views": "juicers"}, 2]}]}'
        )
    )

    for subject in (SHOPPER, NOBODY, Subject(traits={"country": "FR"})):
        assert text(subject) is json_logic(subject)
    assert text(SHOPPER) is True


JSON_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 2.5, -1.5]),
    st.sampled_from(["", "a", "b", "ab", "FR"]),
)
LITERALS: st.SearchStrategy[Any] = st.one_of(
    JSON_VALUES, st.lists(JSON_VALUES, max_size=3).map(tuple), st.sampled_from(["a", "ab", "xab"])
)


@given(
    op=st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]),
    data=JSON_VALUES,
    constant=LITERALS,
)
def test_evaluate__literal_fast_paths__agree_with_generic_comparison(
    op: str, data: Any, constant: Any
) -> None:
    # `trait.a op <literal>` takes a specialised path; `trait.a op trait.b`
    # takes the generic one. Both must implement the same semantics.
    subject = Subject(
        traits={"a": data, "b": list(constant) if isinstance(constant, tuple) else constant}
    )
    fast = compile_rule(Compare(op, TraitRef(("a",)), Literal(constant)))  # type: ignore[arg-type]
    generic = compile_rule(Compare(op, TraitRef(("a",)), TraitRef(("b",))))  # type: ignore[arg-type]
    mirrored = compile_rule(Compare(op, Literal(data), TraitRef(("b",))))  # type: ignore[arg-type]

    assert fast(subject) is generic(subject) is mirrored(subject)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (False, 0, False),
        ("1", 1, False),
        (None, None, True),
        (None, 0, False),
        ([1, "a"], (1.0, "a"), True),
        ([1], [True], False),
    ],
)
def test_values_equal__strict_types__only_numbers_mix(a: object, b: object, expected: bool) -> None:
    assert values_equal(a, b) is expected
