"""`patient` stubs: admin calls wait out a peer's reconnect instead of failing in the gap."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tessera.clients import patient, peer_channel


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), code.name)


class Flaky:
    """A stub whose `Get` fails with `codes` in turn, then answers with its kwargs."""

    def __init__(self, *codes: grpc.StatusCode) -> None:
        self.codes = list(codes)
        self.calls = 0
        self.name = "flaky"

    async def Get(self, request: str, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        self.calls += 1
        if self.codes:
            raise rpc_error(self.codes.pop(0))
        return request, kwargs


def test_patient__unavailable_twice__third_try_answers_with_the_callers_arguments() -> None:
    flaky = Flaky(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)

    answer = asyncio.run(patient(flaky).Get("request", timeout=5.0))

    assert answer == ("request", {"timeout": 5.0})
    assert flaky.calls == 3


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL],
)
def test_patient__other_error__raised_at_once(code: grpc.StatusCode) -> None:
    flaky = Flaky(code)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        asyncio.run(patient(flaky).Get("request"))

    assert raised.value.code() == code
    assert flaky.calls == 1


def test_patient__peer_stays_away__unavailable_once_the_wait_is_over() -> None:
    flaky = Flaky(*[grpc.StatusCode.UNAVAILABLE] * 100)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        asyncio.run(patient(flaky, wait_s=0.2).Get("request"))

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 2 <= flaky.calls < 100


def test_patient__attribute_that_is_not_a_method__read_through() -> None:
    assert patient(Flaky()).name == "flaky"


def test_patient__streaming_method__passed_through_as_it_is() -> None:
    async def methods() -> tuple[bool, bool]:
        channel = peer_channel("127.0.0.1:1")
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            return patient(stub).Watch is stub.Watch, patient(stub).Check is stub.Check
        finally:
            await channel.close()

    assert asyncio.run(methods()) == (True, False)


async def serve(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    assert bound == port or port == 0
    return server


def test_patient__peer_restarted__call_at_once_after_it_serves_succeeds() -> None:
    async def restarted() -> tuple[grpc.StatusCode, int]:
        first = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), first)
        port = first.add_insecure_port("127.0.0.1:0")
        await first.start()
        channel = peer_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        try:
            await stub.Check(request, timeout=5)
            await first.stop(None)
            with pytest.raises(grpc.aio.AioRpcError) as away:
                await stub.Check(request, timeout=5)
            # The channel now waits to reconnect; the peer returns meanwhile.
            second = await serve(port)
            try:
                answer = await patient(stub).Check(request, timeout=5)
            finally:
                await second.stop(None)
        finally:
            await channel.close()
        return away.value.code(), answer.status

    away, status = asyncio.run(restarted())

    assert away == grpc.StatusCode.UNAVAILABLE
    assert status == health_pb2.HealthCheckResponse.SERVING
