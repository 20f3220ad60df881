"""The 100-segment benchmark measures what it says: 100 segments, as EvaluateSegments sees them."""

from __future__ import annotations

import datetime as dt

from bench.evaluate import busy_profile, rules
from tessera.common.v1 import common_pb2
from tessera.segments.domain import SegmentDefinition, compile_segments, parse_rule
from tessera.segments.transport.convert import subject_from_profile


def test_rules__one_hundred_distinct_segments__compile_as_one_set() -> None:
    pairs = rules()

    segments = compile_segments(SegmentDefinition(key, parse_rule(text)) for key, text in pairs)

    assert len(pairs) == len({key for key, _ in pairs}) == len(segments) == 100


def test_busy_profile__bounded_history__a_member_of_some_segments_not_all() -> None:
    now = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)
    segments = compile_segments(SegmentDefinition(k, parse_rule(t)) for k, t in rules())
    profile = busy_profile(now)

    members = segments.evaluate(subject_from_profile(profile, common_pb2.CHANNEL_WEB, None, now))

    assert len(profile.event_history.series) == 128  # the profile service's bound
    assert 10 < len(members) < 90
    assert "bought-juicers" in members or "browsed-juicers" in members
