"""Findings of the outside probe, each sent again through the generated clients.

Each case once answered INTERNAL or UNKNOWN (or stored what it should not);
now every one is refused at the edge with INVALID_ARGUMENT or
RESOURCE_EXHAUSTED naming the field, on PostgreSQL and Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from conftest import Clients
from google.protobuf import struct_pb2

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2
from tessera.experiments.v1 import experiments_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2
from tessera.suite import Suite

pytestmark = pytest.mark.e2e


def refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""  # type: ignore[attr-defined]
    raise AssertionError("the call was accepted")


def nan_struct() -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({"ok": 1, "bad": math.nan})
    return struct


def cookie(value: str) -> common_pb2.Identity:
    return common_pb2.Identity(type="cookie", value=value)


def test_identify__ten_thousand_identities__refused_fast_with_the_limit_and_nothing_stored(
    tessera: Clients,
):
    identities = [cookie(f"many-{i}") for i in range(10_000)]

    started = time.monotonic()
    code, details = refusal(
        lambda: tessera.profiles.Identify(
            profiles_pb2.IdentifyRequest(identities=identities), timeout=5
        )
    )
    took = time.monotonic() - started

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("identities:") and "at most 32" in details
    assert took < 2
    assert (
        refusal(
            lambda: tessera.profiles.GetProfile(
                profiles_pb2.GetProfileRequest(identity=cookie("many-0")), timeout=5
            )
        )[0]
        == grpc.StatusCode.NOT_FOUND
    )


@pytest.mark.parametrize(
    ("name", "call"),
    [
        (
            "traits",
            lambda t: t.profiles.UpdateTraits(
                profiles_pb2.UpdateTraitsRequest(profile_id="p", traits=nan_struct())
            ),
        ),
        (
            "event.properties",
            lambda t: t.profiles.Track(
                profiles_pb2.TrackRequest(
                    event=common_pb2.Event(
                        event_id="nan-1",
                        identities=[cookie("nan")],
                        type="page_view",
                        properties=nan_struct(),
                    )
                )
            ),
        ),
        (
            "context",
            lambda t: t.decision.Decide(
                decision_pb2.DecideRequest(
                    identities=[cookie("nan")], placements=["home"], context=nan_struct()
                )
            ),
        ),
        (
            "campaign.variants[0].payload",
            lambda t: t.decision.CreateCampaign(
                decision_pb2.CreateCampaignRequest(
                    campaign=decision_pb2.Campaign(
                        key="nan-campaign",
                        variants=[decision_pb2.CampaignVariant(key="a", payload=nan_struct())],
                    )
                )
            ),
        ),
        (
            "experiment.variants[0].payload",
            lambda t: t.experiments.CreateExperiment(
                experiments_pb2.CreateExperimentRequest(
                    experiment=experiments_pb2.Experiment(
                        key="nan-experiment",
                        variants=[experiments_pb2.Variant(key="a", payload=nan_struct())],
                    )
                )
            ),
        ),
        (
            "profile.traits",
            lambda t: t.segments.EvaluateSegments(
                segments_pb2.EvaluateSegmentsRequest(
                    profile=profiles_pb2.Profile(profile_id="p", traits=nan_struct())
                )
            ),
        ),
    ],
)
def test_struct_with_nan__any_rpc__invalid_argument_naming_the_path(
    tessera: Clients, name: str, call: Callable[[Clients], Any]
):
    code, details = refusal(lambda: call(tessera))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{name}.bad: must be a finite number")


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(-62_135_596_801, 0), (253_402_300_800, 0), (0, -1)]
)
def test_track__timestamp_out_of_protobuf_range__invalid_argument(
    tessera: Clients, seconds: int, nanos: int
):
    event = common_pb2.Event(event_id="ts-1", identities=[cookie("ts")], type="page_view")
    event.timestamp.seconds = seconds
    event.timestamp.nanos = nanos

    good = common_pb2.Event(
        event_id=f"ts-good-{seconds}", identities=[cookie("ts")], type="page_view"
    )

    unary = refusal(lambda: tessera.profiles.Track(profiles_pb2.TrackRequest(event=event)))
    counts = tessera.profiles.TrackStream(
        iter([profiles_pb2.TrackStreamRequest(event=e) for e in (event, good)])
    )

    assert unary[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert unary[1].startswith("event.timestamp:")
    # In a stream, the refused message is counted and the good one after it stored.
    assert (counts.accepted, counts.rejected) == (1, 1)


def test_experiment_and_campaign_writes__time_out_of_range__invalid_argument(tessera: Clients):
    experiment = experiments_pb2.Experiment(key="far-future")
    experiment.end_time.seconds = 10**12
    campaign = decision_pb2.Campaign(key="far-future")
    campaign.schedule.start_time.nanos = 2_000_000_000

    experiment_refusal = refusal(
        lambda: tessera.experiments.CreateExperiment(
            experiments_pb2.CreateExperimentRequest(experiment=experiment)
        )
    )
    campaign_refusal = refusal(
        lambda: tessera.decision.CreateCampaign(
            decision_pb2.CreateCampaignRequest(campaign=campaign)
        )
    )

    assert experiment_refusal[0] == campaign_refusal[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert experiment_refusal[1].startswith("experiment.end_time:")
    assert campaign_refusal[1].startswith("campaign.schedule.start_time:")


@pytest.mark.parametrize(
    ("field", "call"),
    [
        (
            "profile_id",
            lambda t: t.profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id="a\x00b")),
        ),
        (
            "identity.value",
            lambda t: t.profiles.GetProfile(
                profiles_pb2.GetProfileRequest(identity=cookie("a\x00b"))
            ),
        ),
        ("key", lambda t: t.segments.GetSegment(segments_pb2.GetSegmentRequest(key="a\x00b"))),
        (
            "key",
            lambda t: t.experiments.GetExperiment(
                experiments_pb2.GetExperimentRequest(key="a\x00")
            ),
        ),
        ("key", lambda t: t.decision.GetCampaign(decision_pb2.GetCampaignRequest(key="\x00"))),
    ],
)
def test_lookup__nul_character_on_postgresql__invalid_argument(
    tessera: Clients, field: str, call: Callable[[Clients], Any]
):
    code, details = refusal(lambda: call(tessera))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == f"{field}: must not contain a NUL character"


def test_get_profile__invalid_utf8__invalid_argument_without_python_internals(suite: Suite):
    with grpc.insecure_channel(suite.addresses["profiles"]) as channel:
        raw = channel.unary_unary(
            "/tessera.profiles.v1.ProfileService/GetProfile",
            request_serializer=None,
            response_deserializer=None,
        )
        # Field 1 (profile_id), two bytes that are not UTF-8.
        code, details = refusal(lambda: raw(b"\x0a\x02\xff\xfe", timeout=5))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("request: the request cannot be decoded")
    assert "Error" not in details.split("(")[0]


def test_track_stream__undecodable_message_amid_good_ones__counted_rejected(suite: Suite):
    good = profiles_pb2.TrackStreamRequest(
        event=common_pb2.Event(
            event_id="stream-good-1", identities=[cookie("stream-bytes")], type="page_view"
        )
    ).SerializeToString()
    # TrackStreamRequest.event (field 1) holding an Event whose event_id is not UTF-8.
    bad = b"\x0a\x04\x0a\x02\xff\xfe"
    with grpc.insecure_channel(suite.addresses["profiles"]) as channel:
        raw = channel.stream_unary(
            "/tessera.profiles.v1.ProfileService/TrackStream",
            request_serializer=None,
            response_deserializer=profiles_pb2.TrackStreamResponse.FromString,
        )
        counts = raw(iter([bad, good]), timeout=5)

    assert (counts.accepted, counts.rejected) == (1, 1)
