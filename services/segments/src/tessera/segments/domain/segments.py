"""Sets of segments: references between them, compiled evaluation, keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tessera.errors import InvalidArgument

from .compiler import CompiledRule, compile_rule
from .nodes import (
    SEGMENT_KEY,
    Condition,
    InSegment,
    Node,
    walk,
)
from .subject import Subject


def validate_segment_key(key: str) -> str:
    """Return `key` if it is 1..64 of a-z, 0-9, "_" and "-"; else InvalidArgument."""
    if not isinstance(key, str) or not SEGMENT_KEY.match(key):
        raise InvalidArgument(
            f"{key!r} is not a segment key: use 1 to 64 lowercase letters, digits, '_' or '-'",
            field="segment.key",
        )
    return key


def dependencies(rule: Node) -> set[str]:
    """Keys of the segments a rule refers to with `segment("key")`."""
    return {node.key for node in walk(rule) if isinstance(node, InSegment)}


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    """A segment as the evaluator needs it: its key and its rule tree."""

    key: str
    rule: Condition


class CompiledSegments:
    """A consistent set of segments, compiled and ordered for evaluation.

    Build it with `compile_segments`. Immutable: a changed definition means a
    new `CompiledSegments`, which can replace the old one atomically.
    """

    __slots__ = ("_dependents", "_order", "_predicates", "_sorted_keys", "definitions")

    def __init__(
        self,
        definitions: dict[str, SegmentDefinition],
        order: list[tuple[str, CompiledRule]],
        dependents: dict[str, frozenset[str]],
    ) -> None:
        self.definitions = definitions
        self._order = tuple(order)
        # The rules' own closures, called without the CompiledRule wrapper.
        self._predicates = tuple((key, rule.predicate) for key, rule in order)
        self._sorted_keys = tuple(sorted(definitions))
        self._dependents = dependents

    @property
    def keys(self) -> tuple[str, ...]:
        """Every segment key, sorted."""
        return self._sorted_keys

    def __len__(self) -> int:
        return len(self._sorted_keys)

    def __contains__(self, key: object) -> bool:
        return key in self.definitions

    def memberships(self, subject: Subject) -> dict[str, bool]:
        """Membership of the subject in every segment, each computed once."""
        result: dict[str, bool] = {}
        for key, predicate in self._predicates:
            result[key] = predicate(subject, result)
        return result

    def evaluate(self, subject: Subject) -> list[str]:
        """Sorted keys of the segments the subject is a member of."""
        result = self.memberships(subject)
        return [key for key in self._sorted_keys if result[key]]

    def dependents(self, key: str) -> frozenset[str]:
        """Keys of the segments whose rules use `segment(key)`, directly or not."""
        return self._dependents.get(key, frozenset())


def compile_segments(definitions: Iterable[SegmentDefinition]) -> CompiledSegments:
    """Compile a set of segments, ordered so a referenced segment comes first.

    Raises InvalidArgument (field "segment.key") for a duplicate or malformed
    key, and (field "segment.rule") for a reference to a segment not in the
    set or a cycle of references, naming the segments involved.
    """
    by_key: dict[str, SegmentDefinition] = {}
    for definition in definitions:
        validate_segment_key(definition.key)
        if definition.key in by_key:
            raise InvalidArgument(
                f"segment {definition.key!r} is defined twice", field="segment.key"
            )
        by_key[definition.key] = definition

    uses = {key: dependencies(d.rule) for key, d in by_key.items()}
    for key in sorted(uses):
        unknown = sorted(uses[key] - by_key.keys())
        if unknown:
            raise InvalidArgument(
                f"segment {key!r} refers to unknown segment {unknown[0]!r}",
                field="segment.rule",
            )

    order = _topological_order(uses)
    compiled = [(key, compile_rule(by_key[key].rule)) for key in order]
    return CompiledSegments(by_key, compiled, _transitive_dependents(uses, order))


def _topological_order(uses: dict[str, set[str]]) -> list[str]:
    # Depth-first, iterative (long reference chains must not hit the
    # recursion limit), visiting keys in sorted order so the result is stable.
    done: set[str] = set()
    order: list[str] = []
    for root in sorted(uses):
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        pending = [iter(sorted(uses[root]))]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                pending.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                order.append(node)
                continue
            if child in done:
                continue
            if child in on_path:
                cycle = [*path[path.index(child) :], child]
                raise InvalidArgument(
                    "segments refer to each other in a cycle: " + " -> ".join(cycle),
                    field="segment.rule",
                )
            path.append(child)
            on_path.add(child)
            pending.append(iter(sorted(uses[child])))
    return order


def _transitive_dependents(
    uses: dict[str, set[str]], order: list[str]
) -> dict[str, frozenset[str]]:
    # In topological order every user comes after what it uses, so walking
    # the order backwards sees a segment's dependents complete before it.
    direct: dict[str, set[str]] = {key: set() for key in uses}
    for key, used in uses.items():
        for target in used:
            direct[target].add(key)
    result: dict[str, frozenset[str]] = {}
    for key in reversed(order):
        closure = set(direct[key])
        for user in direct[key]:
            closure |= result[user]
        result[key] = frozenset(closure)
    return result


def compile_available(
    definitions: Iterable[SegmentDefinition],
) -> tuple[CompiledSegments, list[str]]:
    """Compile every segment whose references resolve; name the ones left out.

    For the evaluating side (the segment service's cache, the decision
    service's watch): one segment it cannot use, such as one that refers to
    a segment it has not received, must not stop it from using the others.
    A segment left out is simply not matched. Writes are checked strictly
    with `compile_segments`.
    """
    by_key = {d.key: d for d in definitions}
    usable = set(by_key)
    while True:
        broken = {key for key in usable if dependencies(by_key[key].rule) - usable}
        if not broken:
            break
        usable -= broken
    left_out = sorted(set(by_key) - usable)
    return compile_segments(by_key[key] for key in sorted(usable)), left_out
