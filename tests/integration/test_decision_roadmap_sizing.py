"""The roadmap check when sizing cannot be had: the write succeeds, the size is unknown.

A segment service of this module's own, with its projection switched off
(TESSERA_PROJECTION=false: EstimateSize answers FAILED_PRECONDITION), and
then stopped altogether (UNAVAILABLE).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from conftest import _settings
from support import ServerThread

from tessera.common.v1 import common_pb2
from tessera.decision.server import DecisionService, DecisionSettings
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.segments.server import SegmentsService, SegmentsSettings

pytestmark = pytest.mark.integration


@dataclass
class Unsized:
    segments: ServerThread
    decision: ServerThread
    channel: grpc.Channel
    segments_up: bool = True

    def stop_segments(self) -> None:
        self.segments.stop()
        self.segments_up = False


@pytest.fixture
def unsized(
    store_env: dict[str, str], profiles_server: ServerThread, experiments_server: ServerThread
) -> Iterator[Unsized]:
    settings = _settings(store_env)
    segments = ServerThread(
        lambda: SegmentsService(
            SegmentsSettings(**settings, profiles_address=profiles_server.address, projection=False)
        )
    ).start()
    peers = {
        "profiles_address": profiles_server.address,
        "segments_address": segments.address,
        "experiments_address": experiments_server.address,
    }
    decision = ServerThread(
        lambda: DecisionService(DecisionSettings(**settings, **peers, roadmap_timeout_s=1.0))
    ).start()
    channel = decision.channel()
    running = Unsized(segments, decision, channel)
    yield running
    channel.close()
    decision.stop()
    if running.segments_up:
        segments.stop()


def create(stub: decision_pb2_grpc.DecisionServiceStub, placement: str) -> Any:
    message = decision_pb2.Campaign(
        key=f"unsized-{uuid.uuid4().hex[:8]}",
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=[placement],
        status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
    )
    message.variants.add(key="treatment", weight=1)
    return stub.CreateCampaign(decision_pb2.CreateCampaignRequest(campaign=message), timeout=10)


def test_create_campaign__estimate_size_refused__stored_and_collision_size_unknown(
    unsized: Unsized,
) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(unsized.channel)
    placement = f"hero-{uuid.uuid4().hex[:8]}"
    first = create(stub, placement)

    second = create(stub, placement)

    (collision,) = second.collisions
    assert collision.campaign_key == first.campaign.key
    assert (collision.estimated_overlap, collision.overlap_fraction) == (-1, -1.0)
    assert collision.size_note.startswith("segments: FAILED_PRECONDITION: ")
    assert "TESSERA_PROJECTION=false" in collision.size_note
    assert "overlap size unknown (segments: FAILED_PRECONDITION" in collision.summary
    stored = stub.GetCampaign(decision_pb2.GetCampaignRequest(key=second.campaign.key))
    assert stored.campaign.version == 1


def test_update_campaign__segment_service_down__stored_and_collision_size_unknown(
    unsized: Unsized,
) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(unsized.channel)
    placement = f"hero-{uuid.uuid4().hex[:8]}"
    first = create(stub, placement)
    second = create(stub, placement).campaign
    unsized.stop_segments()
    second.priority = 7

    updated = stub.UpdateCampaign(
        decision_pb2.UpdateCampaignRequest(campaign=second, expected_version=1), timeout=10
    )

    (collision,) = updated.collisions
    assert updated.campaign.version == 2
    assert collision.campaign_key == first.campaign.key
    assert collision.estimated_overlap == -1
    assert collision.size_note.startswith(("segments: UNAVAILABLE", "segments: DEADLINE_EXCEEDED"))
