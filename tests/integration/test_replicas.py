"""Two replicas of the profile service behind one dns:/// name: Decide's calls spread.

Decide resolves visitors over long-lived IdentifyStream streams; the channel's
balancing places each new stream on the next ready replica, so the streams,
and the Identify messages on them, spread too: at once when both connections
are ready as the streams open, else once a stream is retired and reopened.

In Kubernetes a headless Service gives one DNS name an address per ready
pod, all on the same port, and the decision service's channels balance
calls over them (`tessera.clients`: round_robin). Here the name is
`localhost`, which resolves to both loopback addresses, 127.0.0.1 and ::1
(RFC 6761, section 6.3; gRPC's default c-ares resolver answers both), and
each replica listens on one of them, on the same port. Each replica is a
process of its own, so each counts its calls in its own metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
from support import ServerThread, scrape

from tessera.common.v1 import common_pb2
from tessera.decision.server import DecisionService, DecisionSettings
from tessera.decision.transport import identify_streams
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.suite import free_port, stop_processes, wait_serving

pytestmark = pytest.mark.integration

PROFILES = "tessera.profiles.v1.ProfileService"


def identified(metrics_url: str) -> float:
    """Identify calls a profile replica answered OK."""
    key = frozenset({("grpc_service", PROFILES), ("grpc_method", "Identify"), ("grpc_code", "OK")})
    return scrape(metrics_url).get(("grpc_server_handled_total", key), 0.0)


@pytest.fixture(scope="module")
def profile_replicas(store_env: dict[str, str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Two profile replicas on one port, 127.0.0.1 and ::1; (port, metrics URL by host)."""
    port = free_port()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    metrics: dict[str, str] = {}
    for host in ("127.0.0.1", "::1"):
        metrics_port = free_port()
        env = {
            **os.environ,
            **store_env,
            "TESSERA_HOST": host,
            "TESSERA_PROFILES_PORT": str(port),
            "TESSERA_PROFILES_METRICS_PORT": str(metrics_port),
            "TESSERA_DATA_DIR": tempfile.mkdtemp(prefix="tessera-replica-"),
        }
        processes[host] = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "serve", "profiles"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        assert wait_serving(address, 60, processes[host]), f"replica on {address} did not serve"
        metrics[host] = (
            f"http://[{host}]:{metrics_port}/metrics"
            if ":" in host
            else f"http://{host}:{metrics_port}/metrics"
        )
    yield port, metrics
    stop_processes(processes, 10)


def test_decide__profiles_behind_one_dns_name__calls_spread_over_both_replicas(
    profile_replicas: tuple[int, dict[str, str]],
    segments_server: ServerThread,
    experiments_server: ServerThread,
    store_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stream opened while only one replica's connection is ready goes to
    # that replica, and stays until it is retired at STREAM_MAX_AGE_S (20 s):
    # how the streams spread after a replica starts. Shortened here so the
    # test sees the spread within seconds on a slow machine too.
    monkeypatch.setattr(identify_streams, "STREAM_MAX_AGE_S", 1.0)
    port, metrics = profile_replicas
    settings = DecisionSettings(
        database_url=store_env["TESSERA_DATABASE_URL"],
        profiles_address=f"dns:///localhost:{port}",
        segments_address=segments_server.address,
        experiments_address=experiments_server.address,
    )
    decision = ServerThread(lambda: DecisionService(settings)).start()
    try:
        with decision.channel() as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)

            def decide(visitor: str) -> None:
                stub.Decide(
                    decision_pb2.DecideRequest(
                        identities=[common_pb2.Identity(type="cookie", value=visitor)],
                        placements=["home_hero"],
                    ),
                    timeout=5,
                )

            def sixty() -> tuple[dict[str, float], dict[str, float]]:
                """Identify calls per replica over 60 Decides, and the streams open after."""
                before = {host: identified(url) for host, url in metrics.items()}
                for n in range(60):
                    decide(f"replicas-{n}")
                after = {host: identified(url) for host, url in metrics.items()}
                streams = {
                    host: scrape(url).get(("tessera_identify_streams_open", frozenset()), 0.0)
                    for host, url in metrics.items()
                }
                return {host: after[host] - before[host] for host in metrics}, streams

            give_up = time.monotonic() + 20
            calls, streams = sixty()
            while not (all(c >= 20 for c in calls.values()) and set(streams.values()) == {1.0}):
                if time.monotonic() > give_up:
                    break
                calls, streams = sixty()
    finally:
        decision.stop()

    assert sum(calls.values()) == 60
    # round_robin: every other call; a stream retired and reopened may shift a few.
    assert all(count >= 20 for count in calls.values()), calls
    # Decide's two IdentifyStream streams (TESSERA_PROFILE_STREAMS), one per replica.
    assert streams == {"127.0.0.1": 1.0, "::1": 1.0}, streams
