"""Decide resolving visitors over IdentifyStream (the default) and over unary Identify.

The session's decision replica runs with TESSERA_PROFILE_STREAMS at its
default (2); a second replica beside it runs with 0. Both must give the
same decisions, across a login merge.
"""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from conftest import Clients
from scenario import campaign, cookie, eventually, segment, unique, visitor
from test_metrics import scrape

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.suite import Suite, free_port, wait_serving

pytestmark = pytest.mark.e2e

OPEN = ("tessera_identify_streams_open", frozenset())


def identify_calls(samples: dict, code: str = "OK") -> float:
    labels = frozenset(
        {
            ("grpc_service", "tessera.profiles.v1.ProfileService"),
            ("grpc_method", "Identify"),
            ("grpc_code", code),
        }
    )
    return samples.get(("grpc_client_handled_total", labels), 0.0)


def decide(
    stub: decision_pb2_grpc.DecisionServiceStub, placement: str, *identities: common_pb2.Identity
) -> decision_pb2.DecideResponse:
    reply: decision_pb2.DecideResponse = stub.Decide(
        decision_pb2.DecideRequest(
            identities=identities, channel=common_pb2.CHANNEL_WEB, placements=[placement]
        ),
        timeout=5,
    )
    return reply


def test_decide__streams_on_and_off__same_decisions_across_a_login_merge(
    suite: Suite, tessera: Clients
) -> None:
    members, placement = unique("streamed"), unique("stream-hero")
    segment(tessera, members, 'trait.tier == "gold"')
    key = campaign(tessera, unique("gold-offer"), [placement], [members]).key
    anonymous, user = cookie(), common_pb2.Identity(type="user_id", value=unique("user"))
    gold = visitor(tessera, user, tier="gold")
    decisions_before = scrape(suite.metrics["decision"])

    # Streams on: an anonymous visit, then the login that merges it into gold.
    assert eventually(lambda: decide(tessera.decision, placement, user).decisions[0].campaign_key)
    anonymous_reply = decide(tessera.decision, placement, anonymous)
    merged = decide(tessera.decision, placement, anonymous, user)
    again = decide(tessera.decision, placement, anonymous)

    assert anonymous_reply.decisions[0].campaign_key == ""
    assert merged.profile_id == gold and merged.decisions[0].campaign_key == key
    assert again.profile_id == gold and again.decisions[0].campaign_key == key
    # TESSERA_PROFILE_STREAMS' default; a stream retired for its age ends a moment later.
    assert eventually(lambda: scrape(suite.metrics["profiles"])[OPEN] == 2)
    assert identify_calls(scrape(suite.metrics["decision"])) >= identify_calls(decisions_before) + 3

    # Streams off: a replica of its own, on the same peers.
    port, metrics_port = free_port(), free_port()
    env = {
        **suite.env,
        "TESSERA_DECISION_PORT": str(port),
        "TESSERA_DECISION_METRICS_PORT": str(metrics_port),
        "TESSERA_PROFILE_STREAMS": "0",
    }
    replica = subprocess.Popen([sys.executable, "-m", "tessera.cli", "serve", "decision"], env=env)
    try:
        assert wait_serving(f"127.0.0.1:{port}", 30, replica)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = decision_pb2_grpc.DecisionServiceStub(channel)
            first = eventually(
                lambda: (r := decide(unary, placement, anonymous)).decisions[0].campaign_key and r
            )
            newcomer = decide(unary, placement, cookie())
        unary_metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        still_open = scrape(suite.metrics["profiles"])[OPEN]
    finally:
        replica.terminate()
        assert replica.wait(15) == 0

    assert first.profile_id == gold and first.decisions[0].campaign_key == key
    assert newcomer.profile_id and newcomer.decisions[0].campaign_key == ""
    assert identify_calls(unary_metrics) >= 2
    assert still_open == 2  # the unary replica opened none
