"""A rule printed in canonical text and parsed again is the same rule."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tessera.segments.domain import (
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
    Searched,
    SessionField,
    TraitRef,
    Truth,
    Value,
    parse_text,
    print_rule,
)
from tessera.segments.domain.nodes import (
    CHANNELS,
    COMPARE_OPS,
    FEATURE_PATHS,
    MAX_WINDOW_DAYS,
    SESSION_FIELDS,
    SUM_PROPERTIES,
)
from tessera.segments.domain.vocabulary import check_compare, kind_of

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
TEXTS = st.text(min_size=1, max_size=8)
KEYS = st.from_regex(r"[a-z0-9_-]{1,10}", fullmatch=True)
WINDOWS = st.integers(1, MAX_WINDOW_DAYS)
FILTERS: st.SearchStrategy[EventFilter | None] = st.one_of(
    st.none(),
    st.builds(EventFilter, st.sampled_from(["category", "product_id"]), TEXTS),
    st.builds(EventFilter, st.just("channel"), st.sampled_from(CHANNELS)),
)

NUMBERS: st.SearchStrategy[Any] = st.one_of(
    st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False)
)
STRINGS = st.text(max_size=10)
SCALARS: st.SearchStrategy[Any] = st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS)
LISTS = st.lists(SCALARS, max_size=4).map(tuple)

REFERENCES: st.SearchStrategy[Value] = st.one_of(
    st.lists(NAMES, min_size=1, max_size=3).map(lambda p: TraitRef(tuple(p))),
    st.lists(NAMES, min_size=1, max_size=3).map(lambda p: ContextRef(tuple(p))),
    st.just(ChannelRef()),
    st.sampled_from(sorted(SESSION_FIELDS)).map(SessionField),
    st.sampled_from(sorted(FEATURE_PATHS)).map(FeatureRef),
    TEXTS.map(CategoryViews),
    TEXTS.map(ProductViews),
    TEXTS.map(Searched),
    TEXTS.map(Interest),
    TEXTS.map(HasIdentity),
    KEYS.map(InSegment),
    st.builds(EventCount, NAMES, WINDOWS, FILTERS),
    st.builds(EventSum, NAMES, st.sampled_from(SUM_PROPERTIES), WINDOWS, FILTERS),
    st.lists(NAMES, min_size=1, max_size=2).map(lambda p: DaysSince(TraitRef(tuple(p)))),
    st.lists(NAMES, min_size=1, max_size=2).map(lambda p: DaysSince(ContextRef(tuple(p)))),
)
VALUES: st.SearchStrategy[Value] = st.one_of(REFERENCES, st.one_of(SCALARS, LISTS).map(Literal))


def literal_for(left: Value, op: str) -> st.SearchStrategy[Value]:
    """Literals that make a sensible right-hand side for `left op ...`."""
    if isinstance(left, ChannelRef):
        channels = st.sampled_from(CHANNELS)
        if op in ("in", "not in"):
            return st.lists(channels, max_size=3).map(lambda c: Literal(tuple(c)))
        return channels.map(Literal)
    kind = kind_of(left)
    by_kind: dict[str, st.SearchStrategy[Any]] = {
        "number": NUMBERS,
        "string": STRINGS,
        "bool": st.booleans(),
    }
    scalar = by_kind.get(kind, SCALARS)
    if op == "starts_with":
        return STRINGS.map(Literal)
    if op in ("in", "not in"):
        return st.one_of(st.lists(scalar, max_size=4).map(tuple), STRINGS).map(Literal)
    if op in ("<", "<=", ">", ">="):
        return (scalar if kind != "any" else st.one_of(NUMBERS, STRINGS)).map(Literal)
    return st.one_of(scalar, st.none()).map(Literal)


@st.composite
def comparisons(draw: st.DrawFn) -> Compare:
    op = draw(st.sampled_from(COMPARE_OPS))
    left = draw(VALUES)
    right = draw(st.one_of(literal_for(left, op), REFERENCES))
    # The parser rejects comparisons that can never make sense, so the
    # round trip is only promised for trees that pass the same check.
    assume(check_compare(op, left, right) is None)
    return Compare(op, left, right)


CONDITIONS: st.SearchStrategy[Condition] = st.recursive(
    st.one_of(comparisons(), VALUES.map(Truth)),
    lambda inner: st.one_of(
        inner.map(Not),
        st.lists(inner, min_size=2, max_size=4).map(lambda ops: And(tuple(ops))),
        st.lists(inner, min_size=2, max_size=4).map(lambda ops: Or(tuple(ops))),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(CONDITIONS)
def test_print_rule__then_parse_text__gives_the_same_tree(rule: Condition) -> None:
    printed = print_rule(rule)

    parsed = parse_text(printed)

    assert parsed == rule, printed
    # Dataclass equality lets 1 == 1.0 == True; repr tells the types apart.
    assert repr(parsed) == repr(rule), printed


@given(CONDITIONS)
def test_print_rule__is_stable__printing_the_parsed_rule_gives_the_same_text(
    rule: Condition,
) -> None:
    printed = print_rule(rule)

    assert print_rule(parse_text(printed)) == printed


def test_print_rule__nested_same_operator__keeps_parentheses() -> None:
    a, b, c = (Truth(InSegment(k)) for k in "abc")
    rule = Or((a, Or((b, c))))

    assert print_rule(rule) == 'segment("a") or (segment("b") or segment("c"))'
    assert parse_text(print_rule(rule)) == rule


def test_print_rule__windows__print_in_days_with_their_filter() -> None:
    rule = parse_text(
        'count(a, within=48h) > sum(b.revenue where category == "x\\"y", within=1440m)'
    )

    assert print_rule(rule) == (
        'count(a, within=2d) > sum(b.revenue where category == "x\\"y", within=1d)'
    )
