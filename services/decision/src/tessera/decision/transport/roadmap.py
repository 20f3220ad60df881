"""Roadmap check values to protos, and the GetRoadmap request to application values."""

from __future__ import annotations

import datetime as dt

from tessera.common.v1 import common_pb2
from tessera.convert import timestamp_to_datetime
from tessera.decision.application.roadmap import Roadmap
from tessera.decision.domain.roadmap import Collision
from tessera.decision.v1 import decision_pb2


def collision_to_proto(collision: Collision) -> decision_pb2.CampaignCollision:
    """A collision as CreateCampaign, UpdateCampaign and GetRoadmap report it."""
    found, size = collision.overlap, collision.size
    message = decision_pb2.CampaignCollision(
        campaign_key=found.other.key,
        placements=found.placements,
        estimated_overlap=size.members,
        overlap_fraction=size.fraction,
        summary=collision.summary,
        channels=[common_pb2.Channel.ValueType(c) for c in sorted(found.channels)],
        size_note=size.note,
    )
    day = found.first_day
    message.first_day.FromDatetime(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
    return message


def roadmap_query(
    request: decision_pb2.GetRoadmapRequest,
) -> tuple[list[str], dt.datetime | None, dt.datetime | None]:
    """Placements, start and end of a GetRoadmap (None: the default)."""
    return (
        list(request.placements),
        timestamp_to_datetime(request.start_time),
        timestamp_to_datetime(request.end_time),
    )


def roadmap_to_proto(roadmap: Roadmap) -> decision_pb2.GetRoadmapResponse:
    """The answer of a GetRoadmap."""
    reply = decision_pb2.GetRoadmapResponse(
        campaigns=roadmap.campaigns,
        collisions=[
            decision_pb2.RoadmapCollision(
                campaign_key=c.overlap.campaign.key, collision=collision_to_proto(c)
            )
            for c in roadmap.collisions
        ],
        next_page_token=roadmap.next_page_token,
    )
    reply.start_time.FromDatetime(roadmap.start)
    reply.end_time.FromDatetime(roadmap.end)
    return reply
