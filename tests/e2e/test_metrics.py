"""Every service serves Prometheus metrics, and they move with the traffic."""

from __future__ import annotations

import time
import urllib.request
import uuid

import grpc
import pytest
from conftest import Clients
from prometheus_client.parser import text_string_to_metric_families
from scenario import campaign

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.suite import Suite

pytestmark = pytest.mark.e2e


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def handled(samples: dict, service: str, method: str, code: str) -> float:
    key = frozenset({("grpc_service", service), ("grpc_method", method), ("grpc_code", code)})
    return samples.get(("grpc_server_handled_total", key), 0.0)


def test_metrics__every_service__serves_grpc_server_metrics(suite: Suite):
    for name in ("decision", "profiles", "segments", "experiments"):
        samples = scrape(suite.metrics[name])

        assert any(metric == "grpc_server_handled_total" for metric, _ in samples), name


def test_metrics__calls_and_errors__counters_and_histogram_move(suite: Suite, tessera: Clients):
    profiles = "tessera.profiles.v1.ProfileService"
    before = scrape(suite.metrics["profiles"])
    tessera.profiles.Identify(
        profiles_pb2.IdentifyRequest(
            identities=[common_pb2.Identity(type="cookie", value="metrics-1")]
        )
    )
    with pytest.raises(grpc.RpcError):
        tessera.profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id="no-such"))
    tessera.decision.Decide(
        decision_pb2.DecideRequest(
            identities=[common_pb2.Identity(type="cookie", value="metrics-1")],
            placements=["home_hero"],
        )
    )

    after = scrape(suite.metrics["profiles"])
    decision = scrape(suite.metrics["decision"])

    assert handled(after, profiles, "GetProfile", "NOT_FOUND") == (
        handled(before, profiles, "GetProfile", "NOT_FOUND") + 1
    )
    # Identify: the one above and the one Decide made.
    assert (
        handled(after, profiles, "Identify", "OK")
        >= handled(before, profiles, "Identify", "OK") + 2
    )
    count = (
        "grpc_server_handling_seconds_count",
        frozenset({("grpc_service", profiles), ("grpc_method", "Identify")}),
    )
    assert after[count] >= before.get(count, 0) + 2
    assert handled(decision, "tessera.decision.v1.DecisionService", "Decide", "OK") >= 1
    held = {
        dict(labels)["kind"]: value
        for (metric, labels), value in decision.items()
        if metric == "tessera_definitions"
    }
    assert set(held) >= {"segment", "experiment"}


def total(samples: dict, metric: str, **labels: str) -> float:
    """The sum of `metric` over the samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (name, key), v in samples.items() if name == metric and wanted <= key)


def test_metrics__fan_out_definition_lookups_and_feed__move_with_decide_and_track(
    suite: Suite, tessera: Clients
):
    profiles = "tessera.profiles.v1.ProfileService"
    slot = f"metrics-slot-{uuid.uuid4().hex[:6]}"
    before = scrape(suite.metrics["decision"])
    campaign(tessera, f"metrics-{uuid.uuid4().hex[:6]}", [slot], audience=[])
    visitor = common_pb2.Identity(type="cookie", value=f"metrics-{uuid.uuid4().hex}")

    # The campaign's experiment reaches the decision replica over its watch
    # stream: until then a lookup misses, then it hits.
    deadline = time.monotonic() + 10
    while True:
        reply = tessera.decision.Decide(
            decision_pb2.DecideRequest(identities=[visitor], placements=[slot])
        )
        after = scrape(suite.metrics["decision"])
        hits = total(after, "tessera_definition_lookups_total", kind="experiment", result="hit")
        if reply.decisions[0].campaign_key and hits > total(
            before, "tessera_definition_lookups_total", kind="experiment", result="hit"
        ):
            break
        assert time.monotonic() < deadline, "Decide never looked its experiment up"
        time.sleep(0.1)
    tessera.profiles.Track(
        profiles_pb2.TrackRequest(
            event=common_pb2.Event(
                event_id=uuid.uuid4().hex, identities=[visitor], type="page_view"
            )
        )
    )
    deadline = time.monotonic() + 10
    while total(scrape(suite.metrics["profiles"]), "tessera_feed_head_sequence") < 1:
        assert time.monotonic() < deadline, "the feed's head never showed"
        time.sleep(0.1)

    for metric in ("grpc_client_handled_total", "grpc_client_handling_seconds_count"):
        labels = {"grpc_service": profiles, "grpc_method": "Identify"}
        if metric == "grpc_client_handled_total":
            labels["grpc_code"] = "OK"
        assert total(after, metric, **labels) >= total(before, metric, **labels) + 1, metric
    assert total(after, "grpc_client_handling_seconds_bucket", grpc_service=profiles) > 0
