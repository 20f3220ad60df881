"""Segment protos to domain values; a profile message to a rule `Subject`.

The decision service imports these too, so a profile is seen by rules the
same way whether segments are evaluated here or in-process there.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2

from tessera.channels import CHANNEL_NAMES
from tessera.common.v1 import common_pb2
from tessera.convert import struct_to_dict
from tessera.errors import InvalidArgument
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.domain import (
    CartLine,
    Condition,
    EventHistoryView,
    FeaturesView,
    RfmView,
    SegmentDefinition,
    SessionView,
    Subject,
    parse_rule,
    utc_day,
)
from tessera.segments.domain.estimate import (
    DEFAULT_GOAL_EVENT_TYPE,
    DEFAULT_WINDOW_DAYS,
    Estimate,
)
from tessera.segments.domain.nodes import MAX_WINDOW_DAYS, SUM_PROPERTIES
from tessera.segments.domain.projection import (
    Erasure,
    Merge,
    ProfileChange,
    Record,
    event_seen,
)
from tessera.segments.v1 import segments_pb2


def rule_from_proto(rule: segments_pb2.Rule, field: str = "segment.rule") -> Condition:
    """Parse a Rule message in whichever notation it is written."""
    notation = rule.WhichOneof("rule")
    if notation == "text":
        return parse_rule(rule.text, "text", field=f"{field}.text")
    if notation == "json_logic":
        return parse_rule(rule.json_logic, "json_logic", field=f"{field}.json_logic")
    raise InvalidArgument("set text or json_logic", field=field)


def segment_from_proto(segment: segments_pb2.Segment) -> SegmentDefinition:
    """The evaluator's view of a segment message."""
    return SegmentDefinition(segment.key, rule_from_proto(segment.rule))


SeriesKey = tuple[str, str, str]
_DOUBLE_MAX = sys.float_info.max


class _MessageSeries:
    """One EventSeries message read where it lies: `DailySeries`'s reads, without a copy.

    Copying a series' columns out of the message costs more than the few
    window reads a call makes of it (bench.evaluate), so windows search and
    sum the message's own packed columns.
    """

    __slots__ = ("_counts", "_days", "_message")

    def __init__(self, message: profiles_pb2.EventSeries) -> None:
        self._message = message
        self._days = message.days
        self._counts = message.counts

    def count_since(self, first_day: int) -> int:
        """Events on `first_day` and every day after it."""
        return sum(self._counts[bisect_left(self._days, first_day) :])

    def sum_since(self, prop: str, first_day: int) -> float:
        """The sum of `prop` on `first_day` and every day after it; a finite double."""
        for sums in self._message.sums:
            if sums.property == prop:
                total = sum(sums.values[bisect_left(self._days, first_day) :])
                return min(max(total, -_DOUBLE_MAX), _DOUBLE_MAX)
        return 0.0


class _SeriesOfMessage(Mapping[SeriesKey, _MessageSeries]):
    """The event series of a profile message, as rules read them, without converting them all.

    A busy profile carries about 130 series and a call reads a few dozen:
    converting every one to `DailySeries` cost about 900 µs per call
    (bench.evaluate), far more than evaluating 100 segments. The first read
    indexes the messages by key; each series read is wrapped, not copied.
    """

    __slots__ = ("_index", "_messages", "_read")

    def __init__(self, messages: Sequence[profiles_pb2.EventSeries]) -> None:
        self._messages = messages
        self._index: dict[SeriesKey, profiles_pb2.EventSeries] | None = None
        self._read: dict[SeriesKey, _MessageSeries | None] = {}

    def _indexed(self) -> dict[SeriesKey, profiles_pb2.EventSeries]:
        if self._index is None:
            self._index = {
                (s.event_type, s.filter_property, s.filter_value): s for s in self._messages
            }
        return self._index

    def get(self, key: SeriesKey, default: Any = None) -> Any:
        """The series under `key`; `default` when the profile has none."""
        try:
            series = self._read[key]
        except KeyError:
            message = self._indexed().get(key)
            series = self._read[key] = None if message is None else _MessageSeries(message)
        return default if series is None else series

    def __getitem__(self, key: SeriesKey) -> _MessageSeries:
        series = self.get(key)
        if series is None:
            raise KeyError(key)
        return series  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[SeriesKey]:
        return iter(self._indexed())

    def __len__(self) -> int:
        return len(self._messages)


def history_view(history: profiles_pb2.EventHistory, now: dt.datetime) -> EventHistoryView:
    """The profile's daily event series as rules read them, windows ending on `now`'s UTC day.

    Series are read from the message as rules need them: it must not change meanwhile.
    """
    return EventHistoryView(today=utc_day(now), series=_SeriesOfMessage(history.series))


_NO_SESSION = SessionView()
"""The view of an empty session (nothing set), shared: rules only read it."""


def session_view(session: profiles_pb2.Session) -> SessionView:
    """The hot session as rules read it.

    Most visitors a Decide sees have little or nothing in their session:
    an empty one, or an empty map or list in it, is not read field by
    field (each read of a protobuf map or list builds a wrapper).
    """
    if not session.ListFields():
        return _NO_SESSION
    product_views = session.product_views
    category_views = session.category_views
    cart = session.cart
    return SessionView(
        page_views=session.page_views,
        time_spent_ms=session.time_spent_ms,
        events=session.events,
        product_views=dict(product_views) if product_views else {},
        category_views=dict(category_views) if category_views else {},
        cart=tuple(
            CartLine(
                product_id=line.product_id,
                category=line.category,
                quantity=line.quantity,
                price=line.price,
            )
            for line in cart
        )
        if cart
        else (),
        favorites=tuple(session.favorites),
        searches=tuple(session.searches),
    )


def subject_from_profile(
    profile: profiles_pb2.Profile,
    channel: int,
    context: struct_pb2.Struct | None,
    now: dt.datetime | None = None,
) -> Subject:
    """Everything rules can read about this profile in this request, at `now` (default: now).

    The one place a profile message becomes a rule subject, for this service
    and for the decision service evaluating in-process (once per Decide).
    """
    features = profile.features
    rfm = features.rfm
    # Someone who never bought has no recency: the contract sends -1 for it,
    # and a profile built by hand may leave it 0; either way it reads as
    # null, so no recency comparison matches them.
    frequency = rfm.frequency
    recency_days = rfm.recency_days
    recency = recency_days if frequency > 0 and recency_days >= 0 else None
    interests = features.interests
    return Subject(
        profile_id=profile.profile_id,
        traits=struct_to_dict(profile.traits),
        identity_types=frozenset([identity.type for identity in profile.identities]),
        channel=CHANNEL_NAMES.get(common_pb2.Channel.ValueType(channel), ""),
        context=struct_to_dict(context) if context is not None and context.fields else {},
        session=session_view(profile.session),
        features=FeaturesView(
            lifetime_value=features.lifetime_value,
            conversion_probability=features.conversion_probability,
            rfm=RfmView(recency_days=recency, frequency=frequency, monetary=rfm.monetary),
            interests={i.category: i.score for i in interests} if interests else {},
        ),
        history=history_view(profile.event_history, now or dt.datetime.now(dt.UTC)),
    )


def _plain(value: struct_pb2.Value) -> Any:
    """One Struct value as struct_to_dict reads it (whole numbers as int)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind in ("struct_value", "list_value"):
        return struct_to_dict(struct_pb2.Struct(fields={"v": value}))["v"]
    return None


EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
"""An event type, as the profile service accepts it."""

# What the projection reads of an event's properties: the filter and summed ones.
_READ_PROPERTIES = ("category", "product_id", *SUM_PROPERTIES)


def projection_record(message: profiles_pb2.StreamEventsResponse) -> Record | None:
    """A record of the profile change feed as the projection takes it (None: not its kind)."""
    kind = message.WhichOneof("record")
    if kind == "event":
        event = message.event
        fields = event.properties.fields
        properties = {name: _plain(fields[name]) for name in _READ_PROPERTIES if name in fields}
        stamp = event.timestamp
        return event_seen(
            event.profile_id,
            event.type,
            stamp.seconds * 1_000_000 + stamp.nanos // 1000,
            CHANNEL_NAMES.get(event.channel, ""),
            properties,
        )
    if kind == "profile":
        profile = message.profile
        return ProfileChange(
            profile.profile_id, struct_to_dict(profile.traits), tuple(profile.identity_types)
        )
    if kind == "merge":
        return Merge(message.merge.survivor_profile_id, message.merge.merged_profile_id)
    if kind == "deletion":
        deletion = message.deletion
        return Erasure(deletion.profile_id, tuple(deletion.merged_profile_ids))
    return None


def goal_window(goal_event_type: str, window_days: int) -> tuple[str, int]:
    """An EstimateSize request's goal and window, defaults applied; INVALID_ARGUMENT naming them."""
    goal = goal_event_type or DEFAULT_GOAL_EVENT_TYPE
    window = window_days or DEFAULT_WINDOW_DAYS
    if not EVENT_TYPE.match(goal):
        raise InvalidArgument(
            "must be an event type: lowercase letters, digits and '_', starting with a letter "
            "(at most 64)",
            field="goal_event_type",
        )
    if not 1 <= window <= MAX_WINDOW_DAYS:
        raise InvalidArgument(
            f"must be from 1 to {MAX_WINDOW_DAYS} days (0 for {DEFAULT_WINDOW_DAYS})",
            field="window_days",
        )
    return goal, window


def estimate_response(result: Estimate) -> segments_pb2.EstimateSizeResponse:
    """The answer to EstimateSize."""
    return segments_pb2.EstimateSizeResponse(
        members=result.members,
        total=result.total,
        fraction=result.fraction,
        conversion_rate=result.conversion_rate,
        revenue_per_member=result.revenue_per_member,
        converters=result.converters,
        revenue=result.revenue,
        goal_event_type=result.goal_event_type,
        window_days=result.window_days,
        as_of_sequence=result.as_of_sequence,
        left_out=[
            segments_pb2.LeftOut(attribute=item.attribute, reason=item.reason)
            for item in result.left_out
        ],
    )
