"""Campaign writes that span the decision and experiment services, with real servers.

The experiment server is this module's own, so a test can stop it the way
an outage would, while the decision service keeps running.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from conftest import _settings
from support import ServerThread

from tessera.common.v1 import common_pb2
from tessera.decision.server import DecisionService, DecisionSettings
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.experiments.server import ExperimentsService, ExperimentsSettings
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

pytestmark = pytest.mark.integration


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Outage:
    """The experiment service, which a test may stop, and a decision service over it."""

    def __init__(
        self, store_env: dict[str, str], profiles: ServerThread, segments: ServerThread
    ) -> None:
        settings = _settings(store_env)
        self.experiments_server = ServerThread(
            lambda: ExperimentsService(
                ExperimentsSettings(**settings, profiles_address=profiles.address)
            )
        ).start()
        peers = {
            "profiles_address": profiles.address,
            "segments_address": segments.address,
            "experiments_address": self.experiments_server.address,
        }
        self.decision_server = ServerThread(
            lambda: DecisionService(DecisionSettings(**settings, **peers))
        ).start()
        self.channels = [
            self.decision_server.channel(),
            self.experiments_server.channel(),
            segments.channel(),
        ]
        self.decision = decision_pb2_grpc.DecisionServiceStub(self.channels[0])
        self.experiments = experiments_pb2_grpc.ExperimentServiceStub(self.channels[1])
        self.segments = segments_pb2_grpc.SegmentServiceStub(self.channels[2])
        self.experiments_up = True

    def stop_experiments(self) -> None:
        self.experiments_server.stop()
        self.experiments_up = False

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        self.decision_server.stop()
        if self.experiments_up:
            self.experiments_server.stop()


@pytest.fixture
def outage(
    store_env: dict[str, str], profiles_server: ServerThread, segments_server: ServerThread
) -> Iterator[Outage]:
    running = Outage(store_env, profiles_server, segments_server)
    yield running
    running.close()


def running_campaign(outage: Outage, placement: str, title: str) -> decision_pb2.Campaign:
    """A running campaign for everyone whose treatment takes all the traffic."""
    everyone = key("everyone")
    outage.segments.CreateSegment(
        segments_pb2.CreateSegmentRequest(
            segment=segments_pb2.Segment(
                key=everyone, name=everyone, rule=segments_pb2.Rule(text="true")
            )
        )
    )
    message = decision_pb2.Campaign(
        key=key("promo"),
        name="promo",
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=[placement],
        audience_segment_keys=[everyone],
        status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
        control_variant_key="control",
    )
    message.variants.add(key="treatment", weight=1).payload.update({"title": title})
    message.variants.add(key="control", weight=0)
    created: decision_pb2.Campaign = outage.decision.CreateCampaign(
        decision_pb2.CreateCampaignRequest(campaign=message)
    ).campaign
    return created


def shown_title(outage: Outage, placement: str) -> str:
    reply = outage.decision.Decide(
        decision_pb2.DecideRequest(
            identities=[common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)],
            channel=common_pb2.CHANNEL_WEB,
            placements=[placement],
        ),
        timeout=5,
    )
    return str(dict(reply.decisions[0].payload).get("title", ""))


def test_update_campaign__experiment_service_stopped__unavailable_and_campaign_as_it_was(
    outage: Outage,
) -> None:
    placement = key("hero")
    created = running_campaign(outage, placement, "first")
    assert shown_title(outage, placement) == "first"
    changed = decision_pb2.Campaign()
    changed.CopyFrom(created)
    changed.variants[0].payload.update({"title": "second"})

    outage.stop_experiments()
    with pytest.raises(grpc.RpcError) as raised:
        outage.decision.UpdateCampaign(
            decision_pb2.UpdateCampaignRequest(campaign=changed, expected_version=created.version),
            timeout=30,
        )

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    stored = outage.decision.GetCampaign(decision_pb2.GetCampaignRequest(key=created.key)).campaign
    assert stored.version == created.version
    assert dict(stored.variants[0].payload) == {"title": "first"}
    assert shown_title(outage, placement) == "first"


def test_delete_campaign__experiment_service_stopped__unavailable_and_campaign_still_decides(
    outage: Outage,
) -> None:
    placement = key("hero")
    created = running_campaign(outage, placement, "first")

    outage.stop_experiments()
    with pytest.raises(grpc.RpcError) as raised:
        outage.decision.DeleteCampaign(
            decision_pb2.DeleteCampaignRequest(key=created.key), timeout=30
        )

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    stored = outage.decision.GetCampaign(decision_pb2.GetCampaignRequest(key=created.key)).campaign
    assert stored.version == created.version
    assert shown_title(outage, placement) == "first"


def test_create_campaign__experiment_service_stopped__unavailable_and_nothing_stored(
    outage: Outage,
) -> None:
    placement = key("hero")
    created = running_campaign(outage, placement, "first")
    fresh = decision_pb2.Campaign()
    fresh.CopyFrom(created)
    fresh.key = key("later")

    outage.stop_experiments()
    with pytest.raises(grpc.RpcError) as raised:
        outage.decision.CreateCampaign(
            decision_pb2.CreateCampaignRequest(campaign=fresh), timeout=30
        )

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as missing:
        outage.decision.GetCampaign(decision_pb2.GetCampaignRequest(key=fresh.key))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_update_campaign__experiment_service_up__experiment_follows_the_new_version(
    outage: Outage,
) -> None:
    placement = key("hero")
    created = running_campaign(outage, placement, "first")
    changed = decision_pb2.Campaign()
    changed.CopyFrom(created)
    changed.variants[0].payload.update({"title": "second"})
    changed.variants[0].weight = 3.0

    updated = outage.decision.UpdateCampaign(
        decision_pb2.UpdateCampaignRequest(campaign=changed, expected_version=created.version)
    ).campaign

    assert updated.version == created.version + 1
    assert shown_title(outage, placement) == "second"
    experiment = outage.experiments.GetExperiment(
        experiments_pb2.GetExperimentRequest(key=created.experiment_key)
    ).experiment
    assert [v.weight for v in experiment.variants] == [3.0, 0.0]


def test_get_campaign__no_schedule_times__start_and_end_unset_not_epoch(outage: Outage) -> None:
    created = running_campaign(outage, key("hero"), "first")
    zero_times = decision_pb2.Campaign()
    zero_times.CopyFrom(created)
    zero_times.key = key("zeros")
    # What a client that always sends its Timestamp fields sends for "no limit".
    zero_times.schedule.start_time.SetInParent()
    zero_times.schedule.end_time.SetInParent()
    outage.decision.CreateCampaign(decision_pb2.CreateCampaignRequest(campaign=zero_times))

    for campaign_key in (created.key, zero_times.key):
        stored = outage.decision.GetCampaign(
            decision_pb2.GetCampaignRequest(key=campaign_key)
        ).campaign
        experiment = outage.experiments.GetExperiment(
            experiments_pb2.GetExperimentRequest(key=stored.experiment_key)
        ).experiment

        assert not stored.schedule.HasField("start_time")
        assert not stored.schedule.HasField("end_time")
        assert not experiment.HasField("start_time")
        assert not experiment.HasField("end_time")


def test_create_campaign__key_of_55_characters__its_64_character_experiment_created(
    outage: Outage,
) -> None:
    created = running_campaign(outage, key("hero"), "first")
    longest = decision_pb2.Campaign()
    longest.CopyFrom(created)
    longest.key = key("k" * 46)  # 46 + "-" + 8 hex digits = 55

    stored = outage.decision.CreateCampaign(
        decision_pb2.CreateCampaignRequest(campaign=longest)
    ).campaign
    experiment = outage.experiments.GetExperiment(
        experiments_pb2.GetExperimentRequest(key=stored.experiment_key)
    ).experiment

    assert len(stored.key) == 55
    assert experiment.key == "campaign-" + stored.key
    assert len(experiment.key) == 64
