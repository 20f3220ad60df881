"""One answer: EstimateSize counts exactly the profiles EvaluateSegments places in a rule.

A generated population is written the way the profile service writes it
(its own domain code: traits, identities, event history, purchase history,
merges, erasures) and, in the same order, as its change feed (its own feed
messages). Each surviving profile is then evaluated alone, as
EvaluateSegments does (the profile message the service would return,
between visits, `subject_from_profile`, the compiled segments); the feed
builds the projection that EstimateSize reads. For any generated rule the
two member counts are equal, and stay equal when the projection is rebuilt
from the log as it reads after the merges and erasures, and after a round
trip through its stored snapshot.

Amounts are multiples of 1/4, so that sums are exact in binary: a merged
person's same-day amounts may be added in another order by the projection
(docs/segments-size.md, "Exactness").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.profiles.domain.event_history import EventHistory, add_event, merge_event_histories
from tessera.profiles.domain.features import compute_features
from tessera.profiles.domain.history import History, add_to_history, merge_histories
from tessera.profiles.domain.model import EventData, IdentityKey
from tessera.profiles.domain.profile import Profile
from tessera.profiles.storage.feed import FeedRecord
from tessera.profiles.transport.convert import feed_message, profile_message
from tessera.segments.domain import (
    And,
    CategoryViews,
    ChannelRef,
    Compare,
    Condition,
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
    SegmentDefinition,
    SessionField,
    TraitRef,
    Truth,
    compile_segments,
    parse_rule,
)
from tessera.segments.domain.estimate import estimate
from tessera.segments.domain.projection import Projection
from tessera.segments.domain.subject import utc_day
from tessera.segments.transport.convert import projection_record, subject_from_profile

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)
PEOPLE = 8
COUNTRIES = ("FR", "BE", "DE")
CATEGORIES = ("kitchen", "juicers", "garden")
TYPES = ("page_view", "add_to_cart", "purchase")
BASE = parse_rule('trait.country == "FR" or count(purchase, within=30d) > 0')


# --- the population, as the profile service keeps it and as its feed tells it ------


@dataclass
class Person:
    profile_id: str
    order: int
    traits: dict[str, Any] = field(default_factory=dict)
    identity_types: set[str] = field(default_factory=set)
    history: History = field(default_factory=History)
    event_history: EventHistory = field(default_factory=EventHistory)


class World:
    """The profile service's state and its log, written operation by operation."""

    def __init__(self) -> None:
        self.people: dict[str, Person] = {}
        self.alias: dict[str, str] = {}
        self.erased: set[str] = set()
        self.log: list[list[Any]] = []
        """[kind, profile_id, payload] in feed order; merges re-key, erasures delete."""
        self.live: list[FeedRecord] = []
        """The feed as a follower saw it live."""
        self.event_number = 0

    def canonical(self, index: int) -> str | None:
        # The profile service's ids (32 hex digits) and any other string.
        profile_id = f"{index:032x}" if index % 2 else f"p{index}"
        profile_id = self.alias.get(profile_id, profile_id)
        return None if profile_id in self.erased else profile_id

    def person(self, index: int) -> Person | None:
        profile_id = self.canonical(index)
        if profile_id is None:
            return None
        if profile_id not in self.people:
            self.people[profile_id] = Person(profile_id, len(self.people))
            self._snapshot(self.people[profile_id])
        return self.people[profile_id]

    def _record(self, kind: str, profile_id: str, payload: Any) -> None:
        entry = [kind, profile_id, payload]
        self.log.append(entry)
        self.live.append(self._feed_record(len(self.live) + 1, entry))

    def _feed_record(self, sequence: int, entry: list[Any]) -> FeedRecord:
        kind, profile_id, payload = entry
        if kind == "event":
            event = EventData(**{**payload.__dict__, "profile_id": profile_id})
            return FeedRecord(sequence, kind, profile_id, event)
        if kind == "profile":
            traits, types = payload
            return FeedRecord(sequence, kind, profile_id, traits=traits, identity_types=types)
        return FeedRecord(sequence, kind, profile_id, merged_profile_ids=tuple(payload))

    def _snapshot(self, person: Person) -> None:
        self._record(
            "profile",
            person.profile_id,
            (dict(person.traits), tuple(sorted(person.identity_types))),
        )

    def set_profile(self, index: int, traits: dict[str, Any], types: set[str]) -> None:
        person = self.person(index)
        if person is not None:
            person.traits, person.identity_types = dict(traits), set(types)
            self._snapshot(person)

    def track(
        self,
        index: int,
        kind: str,
        days_ago: int,
        seconds: int,
        props: dict[str, Any],
        channel: int,
    ) -> None:
        person = self.person(index)
        if person is None:
            return
        self.event_number += 1
        event = EventData(
            event_id=f"e{self.event_number}",
            type=kind,
            timestamp=NOW - dt.timedelta(days=days_ago, seconds=seconds),
            channel=channel,
            profile_id=person.profile_id,
            properties=props,
        )
        person.history = add_to_history(person.history, event)
        person.event_history = add_event(person.event_history, event, NOW)
        self._record("event", person.profile_id, event)

    def merge(self, a: int, b: int) -> None:
        survivor, merged = self.person(a), self.person(b)
        if survivor is None or merged is None or survivor is merged:
            return
        if merged.order < survivor.order:  # the older profile survives
            survivor, merged = merged, survivor
        survivor.traits = {**merged.traits, **survivor.traits}
        survivor.identity_types |= merged.identity_types
        survivor.history = merge_histories(survivor.history, merged.history)
        survivor.event_history = merge_event_histories(
            survivor.event_history, merged.event_history, NOW
        )
        del self.people[merged.profile_id]
        for alias, target in list(self.alias.items()):
            if target == merged.profile_id:
                self.alias[alias] = survivor.profile_id
        self.alias[merged.profile_id] = survivor.profile_id
        for entry in self.log:  # the log re-keys the merged profile's records
            if entry[1] == merged.profile_id:
                entry[1] = survivor.profile_id
        self._record("merge", survivor.profile_id, [merged.profile_id])
        self._snapshot(survivor)

    def erase(self, index: int) -> None:
        profile_id = self.canonical(index)
        if profile_id is None or profile_id not in self.people:
            return
        aliases = sorted(a for a, t in self.alias.items() if t == profile_id)
        del self.people[profile_id]
        self.erased.update([profile_id, *aliases])
        self.log = [entry for entry in self.log if entry[1] != profile_id]
        self._record("deletion", profile_id, aliases)

    def rebuilt_feed(self) -> list[FeedRecord]:
        """The feed as a follower reading from 0 now would see it."""
        return [self._feed_record(n, entry) for n, entry in enumerate(self.log, 1)]


def projection_of(records: list[FeedRecord]) -> Projection:
    projection = Projection()
    converted = [projection_record(feed_message(r)) for r in records]
    projection.apply([r for r in converted if r is not None], len(records), utc_day(NOW))
    return projection


def evaluate_segments_count(world: World, rule: Condition) -> int:
    """Members as EvaluateSegments finds them, one profile message at a time."""
    segments = compile_segments(
        [SegmentDefinition("base", BASE), SegmentDefinition("target", rule)]
    )
    count = 0
    for person in world.people.values():
        message = profile_message(
            Profile(
                profile_id=person.profile_id,
                identities=tuple(IdentityKey(t, "x") for t in sorted(person.identity_types)),
                traits=person.traits,
                session=None,
                features=compute_features(None, person.history, NOW),
                created_at=NOW,
                updated_at=NOW,
                event_history=person.event_history,
            )
        )
        subject = subject_from_profile(message, 0, None, NOW)
        count += "target" in segments.evaluate(subject)
    return count


# --- strategies ------------------------------------------------------------------

quarters = st.integers(0, 400).map(lambda q: q / 4)
scalars = st.one_of(
    st.sampled_from([*COUNTRIES, "juicers", ""]),
    st.integers(-2, 40),
    quarters,
    st.booleans(),
    st.none(),
)
literals = st.one_of(scalars, st.lists(scalars, max_size=3).map(tuple))
trait_values = st.one_of(
    st.sampled_from(COUNTRIES),
    st.integers(0, 40),
    quarters,
    st.booleans(),
    st.lists(st.sampled_from(["a", "b", 1]), max_size=2),
    st.fixed_dictionaries({"city": st.sampled_from(["Paris", "Lyon"])}),
)
traits = st.dictionaries(
    st.sampled_from(["country", "age", "tags", "address", "vip"]), trait_values
)
identity_types = st.sets(st.sampled_from(["cookie", "email", "crm_id"]))
where = st.one_of(
    st.none(),
    st.builds(EventFilter, st.just("category"), st.sampled_from(CATEGORIES)),
    st.builds(EventFilter, st.just("channel"), st.sampled_from(["web", "store"])),
)
windows = st.sampled_from([1, 2, 7, 30, 400])
values = st.one_of(
    st.sampled_from(
        [
            TraitRef(("country",)),
            TraitRef(("age",)),
            TraitRef(("tags",)),
            TraitRef(("vip",)),
            TraitRef(("address", "city")),
            TraitRef(("missing",)),
            HasIdentity("email"),
            HasIdentity("crm_id"),
            FeatureRef(("rfm", "frequency")),
            FeatureRef(("rfm", "monetary")),
            FeatureRef(("rfm", "recency_days")),
            FeatureRef(("lifetime_value",)),
            Interest("kitchen"),
            SessionField("page_views"),
            CategoryViews("juicers"),
            ChannelRef(),
            InSegment("base"),
        ]
    ),
    st.builds(EventCount, st.sampled_from(TYPES), windows, where),
    st.builds(EventSum, st.sampled_from(TYPES), st.just("revenue"), windows, where),
)
ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"])
comparisons = st.one_of(
    st.builds(Compare, ops, values, literals.map(Literal)),
    st.builds(Compare, ops, literals.map(Literal), values),
    st.builds(Compare, ops, values, values),
    st.builds(Truth, values),
)
rules = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=5,
)
person = st.integers(0, PEOPLE - 1)
event_properties = st.fixed_dictionaries(
    {},
    optional={
        "category": st.sampled_from(CATEGORIES),
        "revenue": quarters,
        "product_id": st.sampled_from(["sku-1", "sku-2"]),
    },
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("profile"), person, traits, identity_types),
        st.tuples(
            st.just("event"),
            person,
            st.sampled_from(TYPES),
            st.integers(0, 45),
            st.integers(0, 86_399),
            event_properties,
            st.sampled_from([0, 1, 7]),
        ),
        st.tuples(st.just("merge"), person, person),
        st.tuples(st.just("erase"), person),
    ),
    max_size=40,
)


def build(ops_: list[tuple[Any, ...]]) -> World:
    world = World()
    for index in range(PEOPLE):
        world.person(index)
    for op in ops_:
        if op[0] == "profile":
            world.set_profile(op[1], op[2], op[3])
        elif op[0] == "event":
            world.track(*op[1:])
        elif op[0] == "merge":
            world.merge(op[1], op[2])
        else:
            world.erase(op[1])
    return world


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, rules)
def test_estimate__any_rule_any_population__members_equal_evaluate_segments(
    ops_: list[tuple[Any, ...]], rule: Condition
) -> None:
    world = build(ops_)
    expected = evaluate_segments_count(world, rule)
    segments = {"base": BASE}

    live = projection_of(world.live)
    rebuilt = projection_of(world.rebuilt_feed())
    stored = Projection.from_bytes(live.to_bytes())

    for projection in (live, rebuilt, stored):
        result = estimate(projection, rule, segments, NOW)
        assert result.members == expected
        assert result.total == len(world.people)


def test_estimate__session_and_request_attributes__named_with_reason_and_counted_at_rest() -> None:
    world = build([("profile", 0, {"country": "FR"}, {"cookie"})])
    rule = parse_rule(
        'trait.country == "FR" and session.page_views == 0 and channel == null '
        "and not (feature.conversion_probability > 0)"
    )

    result = estimate(projection_of(world.live), rule, {}, NOW)

    assert result.members == 1
    assert [item.attribute for item in result.left_out] == [
        "session.page_views",
        "channel",
        "feature.conversion_probability",
    ]
    assert "between visits" in result.left_out[0].reason


def test_estimate__goal_value__conversion_rate_and_revenue_per_member_over_the_window() -> None:
    world = build(
        [
            ("profile", 0, {"plan": "pro"}, set()),
            ("profile", 1, {"plan": "pro"}, set()),
            ("profile", 2, {"plan": "free"}, set()),
            ("event", 0, "purchase", 3, 0, {"revenue": 40.0}, 1),
            ("event", 0, "purchase", 5, 0, {"revenue": 20.0}, 1),
            ("event", 1, "purchase", 40, 0, {"revenue": 99.0}, 1),  # outside 30 days
            ("event", 2, "purchase", 1, 0, {"revenue": 7.0}, 1),  # not a member
        ]
    )

    result = estimate(projection_of(world.live), parse_rule('trait.plan == "pro"'), {}, NOW)

    assert (result.members, result.total, result.converters) == (2, PEOPLE, 1)
    assert result.revenue == 60.0
    assert result.conversion_rate == 0.5
    assert result.revenue_per_member == 30.0
    assert (result.goal_event_type, result.window_days) == ("purchase", 30)


def test_projection__erasure__nothing_of_the_person_left_after_settle() -> None:
    world = build(
        [
            ("profile", 0, {"name": "Ada Lovelace"}, {"email"}),
            ("event", 0, "purchase", 1, 0, {"revenue": 12.5, "category": "kitchen"}, 1),
            ("erase", 0),
        ]
    )
    records = [projection_record(feed_message(r)) for r in world.live]
    projection = Projection()
    projection.apply([r for r in records[:-1] if r is not None], len(records) - 1, utc_day(NOW))
    projection.settle()  # the person's history is settled before the erasure comes
    projection.apply([r for r in records[-1:] if r is not None], len(records), utc_day(NOW))
    assert projection.holds_erased
    projection.settle()

    assert "Ada Lovelace" not in projection.traits["name"].values
    assert projection.purchases.n == 0
    assert all(not np.any(series.rows[: series.n] == 0) for series in projection.series.values())
    assert "p0" not in projection.index
    assert 0 not in {row for _, row in projection.index.items()}
    assert b"Ada Lovelace" not in projection.to_bytes()
