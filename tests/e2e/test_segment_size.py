"""EstimateSize on a live suite: one answer with EvaluateSegments, restarts, erasure.

A suite of its own (four processes) on a PostgreSQL database of its own, so
the segment service's projection holds exactly the people made here. Driven
through the generated clients and the `tessera segments size` command.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from conftest import Clients, clients_for
from scenario import cookie, segment, track, visitor

from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2
from tessera.suite import START_ORDER, Suite, free_port, start_suite, stop_processes, wait_serving

DAYS = dt.timedelta(days=1)
RULE = (
    'trait.country in ["FR", "BE"] and count(purchase where category == "juicers", within=90d) >= 1'
)


@pytest.fixture(scope="module")
def own_env(postgres_url: str, store_env: dict[str, str]) -> Iterator[dict[str, str]]:
    name = f"tessera_size_{uuid.uuid4().hex[:12]}"
    base, _ = postgres_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env = {
        **store_env,
        "TESSERA_DATABASE_URL": f"{base}/{name}",
        "TESSERA_KEY_PREFIX": store_env["TESSERA_KEY_PREFIX"] + "size:",
        "TESSERA_DATA_DIR": tempfile.mkdtemp(prefix="tessera-size-"),
        "TESSERA_PROJECTION_ERASURE_SNAPSHOT_S": "0.1",
    }
    for service in START_ORDER:
        env[f"TESSERA_{service.upper()}_PORT"] = str(free_port())
        env[f"TESSERA_{service.upper()}_METRICS_PORT"] = "0"
    yield env
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def own_suite(own_env: dict[str, str]) -> Iterator[Suite]:
    running = start_suite(own_env)
    yield running
    running.stop()


def _restart_segments(suite: Suite, env: dict[str, str]) -> int:
    """Stop the segment service (SIGTERM, it drains) and start it again; its exit code."""
    code = stop_processes({"segments": suite.processes["segments"]}, suite.grace_s)["segments"]
    suite.processes["segments"] = subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", "serve", "segments"],
        env={**os.environ, **env},
        start_new_session=True,
    )
    assert wait_serving(suite.addresses["segments"], 60, suite.processes["segments"])
    return code


def _estimate(tessera: Clients, request: Any, total: int, timeout: float = 30) -> Any:
    """EstimateSize once the projection holds `total` profiles and stopped moving."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        try:
            reply = tessera.segments.EstimateSize(request, timeout=5)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                raise
            reply = None
        if reply is not None and reply.total == total:
            if previous is not None and previous.as_of_sequence == reply.as_of_sequence:
                return reply
            previous = reply
        else:
            previous = None
        assert time.monotonic() < deadline, f"projection did not reach {total}: {reply}"
        time.sleep(0.3)


def _members_by_evaluation(tessera: Clients, people: list[str], key: str) -> int:
    return sum(
        key
        in tessera.segments.EvaluateSegments(
            segments_pb2.EvaluateSegmentsRequest(profile_id=profile_id)
        ).segment_keys
        for profile_id in people
    )


def test_estimate_size__live_suite__agrees_survives_restart_and_honours_erasure(
    own_suite: Suite, own_env: dict[str, str]
) -> None:
    clients, channels = clients_for(own_suite)
    try:
        tessera = clients
        people = []
        for country, bought in [
            ("FR", [(2, 80.0), (20, 40.0)]),
            ("FR", [(120, 99.0)]),  # outside 90 days
            ("BE", [(5, 25.0)]),
            ("DE", [(1, 60.0)]),  # another country
            ("FR", []),
            ("BE", [(10, 15.0)]),
        ]:
            person = visitor(tessera, cookie(), country=country)
            for days, revenue in bought:
                track(tessera, person, "purchase", days * DAYS, category="juicers", revenue=revenue)
            people.append(person)
        segment(tessera, "juicer-buyers", RULE)
        request = segments_pb2.EstimateSizeRequest(segment_key="juicer-buyers")

        sized = _estimate(tessera, request, len(people))
        evaluated = _members_by_evaluation(tessera, people, "juicer-buyers")
        shown = subprocess.run(
            [
                sys.executable,
                "-m",
                "tessera.cli",
                "segments",
                "size",
                "juicer-buyers",
                "--address",
                own_suite.addresses["segments"],
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

        exit_code = _restart_segments(own_suite, own_env)
        resumed = _estimate(tessera, request, len(people))

        tessera.profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=people[0]))
        after_erasure = _estimate(tessera, request, len(people) - 1)
        exit_after = _restart_segments(own_suite, own_env)
        restarted = _estimate(tessera, request, len(people) - 1)
    finally:
        for channel in channels:
            channel.close()

    assert sized.members == evaluated == 3
    # Goal purchase in 30 days (the default): members 0, 2 and 5; 80 + 40 + 25 + 15.
    assert (sized.converters, sized.revenue) == (3, 160.0)
    assert shown.returncode == 0, shown.stderr
    assert "members" in shown.stdout and "50.0% of 6" in shown.stdout
    assert exit_code == 0 and exit_after == 0
    assert resumed.members == 3 and resumed.as_of_sequence >= sized.as_of_sequence
    assert after_erasure.members == 2
    assert (after_erasure.converters, after_erasure.revenue) == (2, 40.0)
    assert restarted.members == 2 and restarted.total == 5
