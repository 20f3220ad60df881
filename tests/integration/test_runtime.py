"""The shared runtime: health, reflection, error mapping, graceful shutdown."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import ServerThread

from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

pytestmark = pytest.mark.integration


def test_health__running_service__serving_overall_and_by_name(
    profiles_server: ServerThread,
) -> None:
    with profiles_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = health.Check(health_pb2.HealthCheckRequest())
        named = health.Check(
            health_pb2.HealthCheckRequest(service="tessera.profiles.v1.ProfileService")
        )

    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert named.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection__lists_service_health_and_reflection(profiles_server: ServerThread) -> None:
    with profiles_server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for reply in replies for s in reply.list_services_response.service}

    assert {
        "tessera.profiles.v1.ProfileService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


def test_errors__invalid_argument__carries_bad_request_field_violation(
    profiles: profiles_pb2_grpc.ProfileServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        profiles.Identify(profiles_pb2.IdentifyRequest())

    trailers = dict(raised.value.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("identities", "at least one identity is required")
    ]


def test_shutdown__stop__health_not_serving_then_refuses_calls(store_env: dict[str, str]) -> None:
    settings = {k.removeprefix("TESSERA_").lower(): v for k, v in store_env.items()}
    server = ServerThread(lambda: ProfilesService(ProfilesSettings(**settings))).start()
    channel = server.channel()
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert server.running is not None

    server.call(server.running.health.enter_graceful_shutdown())
    draining = health.Check(health_pb2.HealthCheckRequest())
    server.stop()

    assert draining.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as raised:
        health.Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_start__port_taken_by_another_server__refuses_to_start() -> None:
    import asyncio

    from bench.echo import EchoService
    from tessera import server as runtime

    async def both() -> None:
        first = await runtime.start(EchoService(), "127.0.0.1", 0)
        try:
            with pytest.raises((OSError, RuntimeError)):
                await runtime.start(EchoService(), "127.0.0.1", first.port)
        finally:
            await first.stop(0)

    asyncio.run(both())


def test_sigterm__call_in_flight__finishes_within_grace_and_process_exits_zero(
    tmp_path: object,
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import threading
    import uuid

    from tessera.common.v1 import common_pb2
    from tessera.suite import free_port, wait_serving

    port = free_port()
    env = {
        **os.environ,
        "TESSERA_PROFILES_PORT": str(port),
        "TESSERA_DATA_DIR": str(tmp_path),
        "TESSERA_DATABASE_URL": "",
        "TESSERA_REDIS_URL": "",
        "TESSERA_GRACE_PERIOD_S": "10",
    }
    process = subprocess.Popen([sys.executable, "-m", "tessera.cli", "serve", "profiles"], env=env)
    try:
        assert wait_serving(f"127.0.0.1:{port}", 30, process)  # type: ignore[arg-type]
        release = threading.Event()
        visitor = [common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)]

        def events():  # type: ignore[no-untyped-def]
            for index in range(2):
                yield profiles_pb2.TrackStreamRequest(
                    event=common_pb2.Event(
                        event_id=uuid.uuid4().hex, identities=visitor, type="page_view"
                    )
                )
                if index == 0:
                    release.wait(10)

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            in_flight = profiles_pb2_grpc.ProfileServiceStub(channel).TrackStream.future(events())
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            release.set()
            reply = in_flight.result(timeout=10)

        assert (reply.accepted, reply.rejected) == (2, 0)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_shutdown__call_arriving_while_another_drains__unavailable_not_cancelled(
    store_env: dict[str, str],
) -> None:
    import threading

    from tessera.common.v1 import common_pb2

    settings = {k.removeprefix("TESSERA_").lower(): v for k, v in store_env.items()}
    server = ServerThread(lambda: ProfilesService(ProfilesSettings(**settings))).start()
    channel = server.channel()
    profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
    release = threading.Event()

    def events():  # a TrackStream held open until released: a call under way at shutdown
        yield profiles_pb2.TrackStreamRequest(
            event=common_pb2.Event(
                event_id="drain-1",
                identities=[common_pb2.Identity(type="cookie", value="drain")],
                type="page_view",
            )
        )
        release.wait(10)

    under_way = profiles.TrackStream.future(events())
    time.sleep(0.3)
    stopping = threading.Thread(target=server.stop, kwargs={"grace": 5.0})
    stopping.start()
    time.sleep(0.3)

    with pytest.raises(grpc.RpcError) as raised:
        profiles.Identify(
            profiles_pb2.IdentifyRequest(
                identities=[common_pb2.Identity(type="cookie", value="x")]
            ),
            timeout=2,
        )
    release.set()
    finished = under_way.result(timeout=10)
    stopping.join(10)
    channel.close()

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (raised.value.details() or "")
    assert finished.accepted == 1
