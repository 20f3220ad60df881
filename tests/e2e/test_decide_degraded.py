"""Decide with a peer away: answers in time with defaults, serves what it can, recovers fast.

These tests stop and restart services, so they run on a suite of their own
(its own PostgreSQL database and Redis key prefix), never the session's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from conftest import Clients, clients_for
from scenario import campaign, cookie, eventually, segment, unique, visitor

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.suite import Suite, free_port, start_suite, wait_serving

pytestmark = pytest.mark.e2e

PROFILE_DOWN = "profile service unavailable: default experience"


@pytest.fixture(scope="module")
def own_suite(postgres_url: str, redis_url: str) -> Iterator[Suite]:
    """A suite on a database of its own, for tests that stop its services."""
    name = f"tessera_degraded_{uuid.uuid4().hex[:12]}"
    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env = {
        "TESSERA_DATABASE_URL": postgres_url.rsplit("/", 1)[0] + f"/{name}",
        "TESSERA_REDIS_URL": redis_url,
        "TESSERA_KEY_PREFIX": f"tessera-degraded-{uuid.uuid4().hex[:12]}:",
        "TESSERA_DATA_DIR": tempfile.mkdtemp(prefix="tessera-degraded-"),
    }
    running = start_suite(env, free_ports=True)
    try:
        yield running
    finally:
        running.stop()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def clients(own_suite: Suite) -> Iterator[Clients]:
    made, channels = clients_for(own_suite)
    yield made
    for channel in channels:
        channel.close()


def ask(
    stub: decision_pb2_grpc.DecisionServiceStub,
    identity: common_pb2.Identity,
    placements: list[str],
    timeout: float = 2.0,
) -> tuple[decision_pb2.DecideResponse, float]:
    """One Decide as a web backend sends it, and the seconds it took."""
    started = time.monotonic()
    reply: decision_pb2.DecideResponse = stub.Decide(
        decision_pb2.DecideRequest(
            identities=[identity], channel=common_pb2.CHANNEL_WEB, placements=placements
        ),
        timeout=timeout,
    )
    return reply, time.monotonic() - started


def personalised(clients: Clients, identity: common_pb2.Identity, placement: str) -> bool:
    reply, _ = ask(clients.decision, identity, [placement])
    return bool(reply.decisions[0].campaign_key)


def test_decide__profile_service_stopped__defaults_in_time__personalised_within_1s_of_return(
    own_suite: Suite, clients: Clients
) -> None:
    everyone, placement = unique("all"), unique("hero")
    segment(clients, everyone, "true")
    key = campaign(clients, unique("welcome"), [placement], [everyone]).key
    person = cookie()
    visitor(clients, person)
    assert eventually(lambda: personalised(clients, person, placement))

    assert own_suite.stop_one("profiles") == 0
    try:
        down, took = ask(clients.decision, person, [placement, "footer"], timeout=2.0)
        # Long enough for gRPC's default reconnect backoff (1 s, 1.6 s, 2.6 s,
        # 4.1 s ..., jittered) to be waiting seconds when the peer returns.
        for _ in range(6):
            time.sleep(1.0)
            ask(clients.decision, person, [placement])
    finally:
        own_suite.start_one("profiles")
    serving_at = time.monotonic()
    while not personalised(clients, person, placement) and time.monotonic() - serving_at < 10:
        time.sleep(0.02)
    back_after = time.monotonic() - serving_at

    assert took < 2.0
    assert down.profile_id == ""
    assert [(d.placement, d.campaign_key, list(d.reasons)) for d in down.decisions] == [
        (placement, "", [PROFILE_DOWN]),
        ("footer", "", [PROFILE_DOWN]),
    ]
    assert back_after < 1.0, f"personalised again {back_after:.2f} s after profiles was SERVING"
    again, _ = ask(clients.decision, person, [placement])
    assert again.decisions[0].campaign_key == key


def test_decide__profile_service_hangs__defaults_within_the_deadline(
    own_suite: Suite, clients: Clients
) -> None:
    everyone, placement = unique("all"), unique("slow")
    segment(clients, everyone, "true")
    campaign(clients, unique("slow"), [placement], [everyone])
    person = cookie()
    visitor(clients, person)
    assert eventually(lambda: personalised(clients, person, placement))

    profiles = own_suite.processes["profiles"]
    # Stopped, not killed: connections stay open and calls go unanswered.
    os.kill(profiles.pid, signal.SIGSTOP)
    try:
        reply, took = ask(clients.decision, person, [placement], timeout=1.5)
    finally:
        os.kill(profiles.pid, signal.SIGCONT)

    # TESSERA_DECIDE_DEADLINE_S (0.5 s) bounds the Identify call.
    assert took < 1.5
    assert reply.decisions[0].campaign_key == ""
    assert list(reply.decisions[0].reasons) == [PROFILE_DOWN]
    assert eventually(lambda: personalised(clients, person, placement))


def test_decision_replica__started_with_segments_stopped__serves_what_needs_no_segment(
    own_suite: Suite, clients: Clients
) -> None:
    gold, gold_place, all_place = unique("gold"), unique("gold-hero"), unique("all-hero")
    segment(clients, gold, 'trait.tier == "gold"')
    gold_key = campaign(clients, unique("gold-offer"), [gold_place], [gold]).key
    all_key = campaign(clients, unique("for-all"), [all_place], []).key
    person = cookie()
    visitor(clients, person, tier="gold")
    assert eventually(lambda: personalised(clients, person, gold_place))

    port = free_port()
    env = {
        **own_suite.env,
        "TESSERA_DECISION_PORT": str(port),
        "TESSERA_DECISION_METRICS_PORT": str(free_port()),
        "TESSERA_DECIDE_START_WAIT_S": "0.5",
    }
    assert own_suite.stop_one("segments") == 0
    replica = subprocess.Popen([sys.executable, "-m", "tessera.cli", "serve", "decision"], env=env)
    try:
        try:
            assert wait_serving(f"127.0.0.1:{port}", 30, replica)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = decision_pb2_grpc.DecisionServiceStub(channel)
                without, _ = ask(stub, person, [gold_place, all_place])
        finally:
            own_suite.start_one("segments")
        serving_at = time.monotonic()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            with_segments = eventually(
                lambda: ask(stub, person, [gold_place])[0].decisions[0].campaign_key
            )
        back_after = time.monotonic() - serving_at
    finally:
        replica.terminate()
        exit_code = replica.wait(15)

    on_gold, on_all = without.decisions
    assert on_all.campaign_key == all_key
    assert on_gold.campaign_key == ""
    assert list(on_gold.reasons) == [
        f"skipped {gold_key}: audience segment not loaded ({gold})",
        "default experience",
    ]
    assert with_segments == gold_key
    assert back_after < 1.0, f"segment campaign served {back_after:.2f} s after segments was back"
    assert exit_code == 0


def test_create_campaign__just_after_segments_returns__succeeds(
    own_suite: Suite, clients: Clients
) -> None:
    gold = unique("gold")
    segment(clients, gold, 'trait.tier == "gold"')
    assert own_suite.stop_one("segments") == 0
    try:
        # Checking the audience needs segments: refused while it is away, and
        # the decision service's channel to it is left waiting to reconnect.
        with pytest.raises(grpc.RpcError) as away:
            campaign(clients, unique("while-away"), [unique("away")], [gold])
    finally:
        own_suite.start_one("segments")
    # Segments is SERVING; the channel sees it only at its next reconnect
    # attempt, up to half a second on. The change waits for it.
    created = campaign(clients, unique("back"), [unique("back")], [gold])

    assert away.value.code() == grpc.StatusCode.UNAVAILABLE
    assert list(created.audience_segment_keys) == [gold]


def test_decide_rpc_mode__segments_then_experiments_stopped__serves_what_needs_neither(
    own_suite: Suite, clients: Clients
) -> None:
    gold, gold_place, all_place = unique("gold"), unique("gold-rpc"), unique("all-rpc")
    segment(clients, gold, 'trait.tier == "gold"')
    gold_key = campaign(clients, unique("gold-rpc"), [gold_place], [gold]).key
    all_key = campaign(clients, unique("all-rpc"), [all_place], []).key
    person = cookie()
    visitor(clients, person, tier="gold")
    port = free_port()
    env = {
        **own_suite.env,
        "TESSERA_EVALUATION": "rpc",
        "TESSERA_DECISION_PORT": str(port),
        "TESSERA_DECISION_METRICS_PORT": str(free_port()),
    }
    replica = subprocess.Popen([sys.executable, "-m", "tessera.cli", "serve", "decision"], env=env)
    try:
        assert wait_serving(f"127.0.0.1:{port}", 30, replica)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            places = [gold_place, all_place]
            assert eventually(
                lambda: all(d.campaign_key for d in ask(stub, person, places)[0].decisions)
            )
            assert own_suite.stop_one("segments") == 0
            try:
                no_segments, took_segments = ask(stub, person, places)
                assert own_suite.stop_one("experiments") == 0
                try:
                    neither, took_neither = ask(stub, person, places)
                finally:
                    own_suite.start_one("experiments")
            finally:
                own_suite.start_one("segments")
    finally:
        replica.terminate()
        exit_code = replica.wait(15)

    on_gold, on_all = no_segments.decisions
    assert on_all.campaign_key == all_key
    assert on_gold.campaign_key == ""
    assert list(on_gold.reasons) == [
        f"skipped {gold_key}: segment service unavailable ({gold})",
        "default experience",
    ]
    assert list(no_segments.segment_keys) == []
    assert no_segments.profile_id
    on_gold, on_all = neither.decisions
    assert (on_gold.campaign_key, on_all.campaign_key) == ("", "")
    assert list(on_all.reasons) == [
        f"skipped {all_key}: experiment service unavailable",
        "default experience",
    ]
    assert took_segments < 2.0 and took_neither < 2.0
    assert exit_code == 0
