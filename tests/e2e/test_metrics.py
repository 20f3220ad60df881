"""Every service serves Prometheus metrics, and they move with the traffic."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from conftest import Clients
from prometheus_client.parser import text_string_to_metric_families

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
