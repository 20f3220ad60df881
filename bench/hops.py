"""What one exchange costs in grpc.aio: a unary call against a message on a long-lived stream.

`python -m bench.hops` starts a bare grpc.aio server in a process of its own
(generic handlers, bytes in and out: no Tessera code, no interceptors), then
from this process makes `--calls` unary calls one at a time, and as many
round trips (write, then read the echo) on one bidirectional stream. Each
is printed with its mean wall time, the CPU the server and this client
spent per exchange (`/proc/<pid>/stat`) and their context switches per
exchange (every thread's, `/proc/<pid>/task/*/status`), in `--rounds`
alternating rounds. `GRPC_EXPERIMENTS=-event_engine_client,-event_engine_listener
python -m bench.hops` measures gRPC core without its EventEngine endpoints
(docs/decide.md, "Speed").

It sizes the one lever left on Decide's path (README, "Where a Decide's time
goes"): the call to the profile service is a unary call per Decide.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from bench.proc import context_switches, cpu_seconds

SERVICE = "tessera.bench.Hops"


async def serve() -> None:
    """Serve `Unary` and `Stream`, both echoing bytes; print the port; run until killed."""

    async def unary(request: bytes, context: object) -> bytes:
        return request

    async def stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def per_exchange(
    exchange: Callable[[], Awaitable[object]], calls: int, server_pid: int
) -> tuple[float, float, float, float, float]:
    """Per exchange: mean wall, server and client CPU (µs), server and client switches."""
    for _ in range(calls // 10):
        await exchange()
    client_pid = os.getpid()
    server, client = cpu_seconds(server_pid), cpu_seconds(client_pid)
    server_switches, client_switches = context_switches(server_pid), context_switches(client_pid)
    started = time.perf_counter()
    for _ in range(calls):
        await exchange()
    wall = time.perf_counter() - started
    return (
        1e6 * wall / calls,
        1e6 * (cpu_seconds(server_pid) - server) / calls,
        1e6 * (cpu_seconds(client_pid) - client) / calls,
        (context_switches(server_pid) - server_switches) / calls,
        (context_switches(client_pid) - client_switches) / calls,
    )


async def measure(port: int, server_pid: int, calls: int, rounds: int) -> None:
    payload = b"x" * 128
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        call = channel.stream_stream(f"/{SERVICE}/Stream")()

        async def one_unary() -> object:
            return await unary(payload, timeout=5)

        async def one_message() -> object:
            await call.write(payload)
            return await call.read()

        print(f"GRPC_EXPERIMENTS={os.environ.get('GRPC_EXPERIMENTS', '')!r}")
        print(
            f"{'':18} {'wall µs':>8} {'server CPU µs':>14} {'client CPU µs':>14}"
            f" {'server switches':>16} {'client switches':>16}"
        )
        for _ in range(rounds):
            for name, exchange in (("unary call", one_unary), ("stream message", one_message)):
                wall, server, client, server_cs, client_cs = await per_exchange(
                    exchange, calls, server_pid
                )
                print(
                    f"{name:18} {wall:8.0f} {server:14.0f} {client:14.0f}"
                    f" {server_cs:16.1f} {client_cs:16.1f}",
                    flush=True,
                )
        await call.done_writing()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="exchanges of each kind a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve())
        return 0
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.hops", "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(measure(port, server.pid, args.calls, args.rounds))
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
