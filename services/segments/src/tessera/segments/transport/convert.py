"""Segment protos to domain values; a profile message to a rule `Subject`.

The decision service imports these too, so a profile is seen by rules the
same way whether segments are evaluated here or in-process there.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf import struct_pb2

from tessera.common.v1 import common_pb2
from tessera.convert import CHANNEL_NAMES, struct_to_dict
from tessera.errors import InvalidArgument
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.domain import (
    CartLine,
    Condition,
    DailySeries,
    EventHistoryView,
    FeaturesView,
    RfmView,
    SegmentDefinition,
    SessionView,
    Subject,
    parse_rule,
    utc_day,
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


def history_view(history: profiles_pb2.EventHistory, now: dt.datetime) -> EventHistoryView:
    """The profile's daily event series as rules read them, windows ending on `now`'s UTC day."""
    return EventHistoryView(
        today=utc_day(now),
        series={
            (s.event_type, s.filter_property, s.filter_value): DailySeries(
                days=tuple(s.days),
                counts=tuple(s.counts),
                sums={p.property: tuple(p.values) for p in s.sums},
            )
            for s in history.series
        },
    )


def subject_from_profile(
    profile: profiles_pb2.Profile,
    channel: int,
    context: struct_pb2.Struct | None,
    now: dt.datetime | None = None,
) -> Subject:
    """Everything rules can read about this profile in this request, at `now` (default: now).

    The one place a profile message becomes a rule subject, for this service
    and for the decision service evaluating in-process.
    """
    session = profile.session
    features = profile.features
    rfm = features.rfm
    # Someone who never bought has no recency: the contract sends -1 for it,
    # and a profile built by hand may leave it 0; either way it reads as
    # null, so no recency comparison matches them.
    recency = rfm.recency_days if rfm.frequency > 0 and rfm.recency_days >= 0 else None
    return Subject(
        profile_id=profile.profile_id,
        traits=struct_to_dict(profile.traits),
        identity_types=frozenset(identity.type for identity in profile.identities),
        channel=CHANNEL_NAMES.get(common_pb2.Channel.ValueType(channel), ""),
        context=struct_to_dict(context) if context is not None else {},
        session=SessionView(
            page_views=session.page_views,
            time_spent_ms=session.time_spent_ms,
            events=session.events,
            product_views=dict(session.product_views),
            category_views=dict(session.category_views),
            cart=tuple(
                CartLine(
                    product_id=line.product_id,
                    category=line.category,
                    quantity=line.quantity,
                    price=line.price,
                )
                for line in session.cart
            ),
            favorites=tuple(session.favorites),
            searches=tuple(session.searches),
        ),
        features=FeaturesView(
            lifetime_value=features.lifetime_value,
            conversion_probability=features.conversion_probability,
            rfm=RfmView(recency_days=recency, frequency=rfm.frequency, monetary=rfm.monetary),
            interests={i.category: i.score for i in features.interests},
        ),
        history=history_view(profile.event_history, now or dt.datetime.now(dt.UTC)),
    )
