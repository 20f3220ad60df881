"""Health tells the truth: a store that cannot be reached makes the service NOT_SERVING."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import ServerThread

from tessera.common.v1 import common_pb2
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.suite import free_port

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RedisProcess:
    """A Redis server of this test's own, on a port of its own, started and stopped at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed on PATH (Debian: apt-get install redis-server)")
    redis = RedisProcess()
    yield redis
    redis.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def track(profiles: profiles_pb2_grpc.ProfileServiceStub, event_id: str) -> grpc.StatusCode:
    event = common_pb2.Event(
        event_id=event_id,
        identities=[common_pb2.Identity(type="cookie", value="health-visitor")],
        type="page_view",
    )
    try:
        profiles.Track(profiles_pb2.TrackRequest(event=event), timeout=5)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return,attr-defined]
    return grpc.StatusCode.OK


def test_health__redis_away_then_back_then_away__follows_the_store(
    redis_process: RedisProcess,
) -> None:
    settings = ProfilesSettings(
        data_dir=tempfile.mkdtemp(prefix="tessera-health-"),
        redis_url=f"redis://127.0.0.1:{redis_process.port}/0",
    )
    server = ServerThread(lambda: ProfilesService(settings)).start()
    channel = server.channel()
    health = health_pb2_grpc.HealthStub(channel)
    profiles = profiles_pb2_grpc.ProfileServiceStub(channel)

    def status() -> int:
        return health.Check(health_pb2.HealthCheckRequest(), timeout=2).status  # type: ignore[no-any-return]

    try:
        away_at_start = status()
        refused = track(profiles, "h-1")
        redis_process.start()
        came_back = wait_for(lambda: status() == SERVING)
        accepted = track(profiles, "h-2")
        redis_process.stop()
        went_away = wait_for(lambda: status() == NOT_SERVING)
        refused_again = track(profiles, "h-3")
    finally:
        channel.close()
        server.stop()

    assert away_at_start == NOT_SERVING
    assert refused == grpc.StatusCode.UNAVAILABLE
    assert came_back
    assert accepted == grpc.StatusCode.OK
    assert went_away
    assert refused_again == grpc.StatusCode.UNAVAILABLE


def test_health__sql_store_reachable__serving(profiles_server: ServerThread) -> None:
    with profiles_server.channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())

    assert reply.status == SERVING


def test_start__redis_away__event_not_stored_in_sql_before_refusal(
    redis_process: RedisProcess,
) -> None:
    data_dir = tempfile.mkdtemp(prefix="tessera-health-")
    away = ProfilesSettings(
        data_dir=data_dir, redis_url=f"redis://127.0.0.1:{redis_process.port}/0"
    )
    server = ServerThread(lambda: ProfilesService(away)).start()
    with server.channel() as channel:
        refused = track(profiles_pb2_grpc.ProfileServiceStub(channel), "h-refused")
    server.stop()
    embedded = ServerThread(lambda: ProfilesService(ProfilesSettings(data_dir=data_dir))).start()
    with embedded.channel() as channel:
        profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
        later = profiles.Track(
            profiles_pb2.TrackRequest(
                event=common_pb2.Event(
                    event_id="h-refused",
                    identities=[common_pb2.Identity(type="cookie", value="health-visitor")],
                    type="page_view",
                )
            ),
            timeout=5,
        )
    embedded.stop()

    assert refused == grpc.StatusCode.UNAVAILABLE
    assert later.duplicate is False
