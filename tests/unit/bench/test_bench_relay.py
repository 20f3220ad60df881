"""The relay (the two-hop floor): each Echo call answered with its own payload, via the echo."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from bench.run import echo_server
from tessera.bench.v1 import bench_pb2, bench_pb2_grpc


async def echo_all(address: str, payloads: list[bytes]) -> list[bytes]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = bench_pb2_grpc.EchoServiceStub(channel)
        answers = await asyncio.gather(
            *(stub.Echo(bench_pb2.EchoRequest(payload=p), timeout=10) for p in payloads)
        )
    return [answer.payload for answer in answers]


def test_relay__many_calls_at_once__each_answered_with_its_own_payload() -> None:
    payloads = [f"call {i}".encode() for i in range(200)]

    with echo_server() as echo, echo_server(relay_to=echo) as relay:
        answers = asyncio.run(echo_all(relay, payloads))

    assert answers == payloads


def test_relay__echo_gone__calls_fail_at_once_not_at_their_deadline() -> None:
    with contextlib.ExitStack() as echo_running:
        echo = echo_running.enter_context(echo_server())
        with echo_server(relay_to=echo) as relay:
            before = asyncio.run(echo_all(relay, [b"before"]))
            echo_running.close()
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                asyncio.run(echo_all(relay, [b"after"]))

    assert before == [b"before"]
    assert gone.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED
