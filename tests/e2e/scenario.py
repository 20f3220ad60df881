"""Building blocks of the end-to-end scenarios, in the product's words."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cookie(value: str | None = None) -> common_pb2.Identity:
    return common_pb2.Identity(type="cookie", value=value or uuid.uuid4().hex)


def email(address: str | None = None) -> common_pb2.Identity:
    return common_pb2.Identity(
        type="email", value=address or f"{uuid.uuid4().hex[:10]}@example.com"
    )


def segment(tessera: Any, key: str, rule: str) -> None:
    tessera.segments.CreateSegment(
        segments_pb2.CreateSegmentRequest(
            segment=segments_pb2.Segment(key=key, name=key, rule=segments_pb2.Rule(text=rule))
        )
    )


def campaign(
    tessera: Any,
    key: str,
    placements: list[str],
    audience: list[str],
    priority: int = 0,
    conflict_group: str = "",
    payload: dict[str, Any] | None = None,
) -> decision_pb2.Campaign:
    message = decision_pb2.Campaign(
        key=key,
        name=key,
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=placements,
        audience_segment_keys=audience,
        priority=priority,
        conflict_group=conflict_group,
        status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
    )
    variant = message.variants.add(key="treatment", weight=1)
    variant.payload.update(payload or {"title": key})
    created: decision_pb2.Campaign = tessera.decision.CreateCampaign(
        decision_pb2.CreateCampaignRequest(campaign=message)
    ).campaign
    return created


def visitor(tessera: Any, *identities: common_pb2.Identity, **traits: Any) -> str:
    profile_id: str = tessera.profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=identities)
    ).profile.profile_id
    if traits:
        request = profiles_pb2.UpdateTraitsRequest(profile_id=profile_id)
        request.traits.update(traits)
        tessera.profiles.UpdateTraits(request)
    return profile_id


def track(
    tessera: Any, profile_id: str, kind: str, ago: dt.timedelta | None = None, **properties: Any
) -> None:
    event = common_pb2.Event(
        event_id=uuid.uuid4().hex, profile_id=profile_id, type=kind, channel=common_pb2.CHANNEL_WEB
    )
    if ago is not None:
        event.timestamp.FromDatetime(dt.datetime.now(dt.UTC) - ago)
    event.properties.update(properties)
    tessera.profiles.Track(profiles_pb2.TrackRequest(event=event))


def decide(
    tessera: Any,
    *identities: common_pb2.Identity,
    placements: list[str],
    channel: int = common_pb2.CHANNEL_WEB,
) -> decision_pb2.DecideResponse:
    reply: decision_pb2.DecideResponse = tessera.decision.Decide(
        decision_pb2.DecideRequest(identities=identities, channel=channel, placements=placements),
        timeout=5,
    )
    return reply


def eventually(check: Callable[[], T], timeout_s: float = 5.0) -> T:
    """The first truthy result of `check`; definitions reach replicas within a second."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)
