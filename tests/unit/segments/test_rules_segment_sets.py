"""Sets of segments: references, ordering, cycles, keys, dependencies."""

from __future__ import annotations

import pytest

from tessera.errors import InvalidArgument
from tessera.segments.domain import (
    SegmentDefinition,
    Subject,
    compile_segments,
    dependencies,
    parse_text,
    validate_segment_key,
)


def segment(key: str, text: str) -> SegmentDefinition:
    return SegmentDefinition(key, parse_text(text))


def test_evaluate__segments__returns_sorted_member_keys() -> None:
    segments = compile_segments(
        [
            segment("zeta", 'trait.country == "FR"'),
            segment("alpha", "trait.age >= 18"),
            segment("mid", 'trait.country == "DE"'),
        ]
    )

    keys = segments.evaluate(Subject(traits={"country": "FR", "age": 40}))

    assert keys == ["alpha", "zeta"]


def test_evaluate__reference_to_segment_defined_later__sees_its_membership() -> None:
    # "a-target" sorts before "z-base", so only the dependency order makes
    # the referenced segment known when the referring one is evaluated.
    segments = compile_segments(
        [
            segment("a-target", 'segment("z-base") and trait.plan == "pro"'),
            segment("z-base", 'trait.country == "FR"'),
            segment("b-outsider", 'not segment("z-base")'),
        ]
    )

    assert segments.evaluate(Subject(traits={"country": "FR", "plan": "pro"})) == [
        "a-target",
        "z-base",
    ]
    assert segments.evaluate(Subject(traits={"plan": "pro"})) == ["b-outsider"]


def test_evaluate__shared_reference__referenced_rule_runs_once() -> None:
    calls: list[str] = []

    class CountingTraits(dict[str, object]):
        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            calls.append(key)
            return super().get(key, default)

    segments = compile_segments(
        [
            segment("base", 'trait.expensive == "yes"'),
            segment("one", 'segment("base") and true'),
            segment("two", 'segment("base") or false'),
            segment("three", 'segment("one") and segment("base")'),
        ]
    )

    keys = segments.evaluate(Subject(traits=CountingTraits(expensive="yes")))

    assert keys == ["base", "one", "three", "two"]
    assert calls == ["expensive"]


@pytest.mark.parametrize(
    ("definitions", "cycle"),
    [
        ([("a", 'segment("a")')], "a -> a"),
        ([("a", 'segment("b")'), ("b", 'segment("a")')], "a -> b -> a"),
        (
            [("a", 'segment("b")'), ("b", 'segment("c")'), ("c", 'segment("a")'), ("d", "true")],
            "a -> b -> c -> a",
        ),
    ],
)
def test_compile_segments__reference_cycle__raises_invalid_argument_naming_it(
    definitions: list[tuple[str, str]], cycle: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        compile_segments([segment(k, t) for k, t in definitions])

    assert caught.value.field == "segment.rule"
    assert cycle in caught.value.message


def test_compile_segments__unknown_reference__raises_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        compile_segments([segment("a", 'segment("ghost") or true')])

    assert caught.value.field == "segment.rule"
    assert "'ghost'" in caught.value.message


def test_compile_segments__duplicate_key__raises_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        compile_segments([segment("a", "true"), segment("a", "false")])

    assert caught.value.field == "segment.key"


def test_compile_segments__long_reference_chain__compiles_without_recursion_error() -> None:
    chain = [segment(f"s{i}", f'segment("s{i + 1}")') for i in range(3000)]
    chain.append(segment("s3000", "true"))

    segments = compile_segments(chain)

    assert len(segments.evaluate(Subject())) == 3001


def test_dependencies__rule__lists_referenced_segment_keys() -> None:
    rule = parse_text('segment("a") and (not segment("b") or segment("a")) and trait.x == 1')

    assert dependencies(rule) == {"a", "b"}


def test_dependents__referenced_segment__lists_direct_and_indirect_users() -> None:
    segments = compile_segments(
        [
            segment("base", "true"),
            segment("mid", 'segment("base")'),
            segment("top", 'segment("mid")'),
            segment("other", "false"),
        ]
    )

    assert segments.dependents("base") == {"mid", "top"}
    assert segments.dependents("top") == frozenset()


@pytest.mark.parametrize("key", ["a", "big-spenders", "vip_2024", "x" * 64, "0"])
def test_validate_segment_key__valid__returns_key(key: str) -> None:
    assert validate_segment_key(key) == key


@pytest.mark.parametrize("key", ["", "Big", "x" * 65, "a b", "é", "a.b", "a/b"])
def test_validate_segment_key__invalid__raises_with_field(key: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_segment_key(key)

    assert caught.value.field == "segment.key"


def test_compile_available__reference_to_missing_segment__only_its_users_left_out() -> None:
    from tessera.segments.domain import SegmentDefinition, Subject, compile_available, parse_rule

    definitions = [
        SegmentDefinition("gold", parse_rule('trait.tier == "gold"')),
        SegmentDefinition("orphan", parse_rule('segment("deleted") and true')),
        SegmentDefinition("orphan-user", parse_rule('segment("orphan")')),
    ]

    compiled, left_out = compile_available(definitions)

    assert left_out == ["orphan", "orphan-user"]
    assert compiled.evaluate(Subject(traits={"tier": "gold"})) == ["gold"]
