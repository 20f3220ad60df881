"""The relay (the two-hop floor): each Echo call answered with its own payload, via the echo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import grpc
import pytest

from bench.run import echo_process, echo_server
from tessera.bench.v1 import bench_pb2, bench_pb2_grpc


async def echo_all(address: str, payloads: list[bytes], timeout: float = 10) -> list[bytes]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = bench_pb2_grpc.EchoServiceStub(channel)
        answers = await asyncio.gather(
            *(stub.Echo(bench_pb2.EchoRequest(payload=p), timeout=timeout) for p in payloads)
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
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


def test_relay__a_caller_gives_up_on_a_slow_echo__later_calls_on_every_stream_answered() -> None:
    with echo_process() as (echo, echo_pid), echo_server(relay_to=echo) as relay:
        assert asyncio.run(echo_all(relay, [b"warm"] * 4)) == [b"warm"] * 4
        os.kill(echo_pid, signal.SIGSTOP)  # answers nothing until continued
        try:
            with pytest.raises(grpc.aio.AioRpcError) as late:
                asyncio.run(echo_all(relay, [b"too late"] * 2, timeout=0.5))
        finally:
            os.kill(echo_pid, signal.SIGCONT)
        # The echo now answers the messages nobody waits for any more.
        payloads = [f"after {i}".encode() for i in range(50)]
        answers = asyncio.run(echo_all(relay, payloads))

    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert answers == payloads
