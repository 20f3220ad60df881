"""The echo service: the one-hop floor, served by the same runtime as Tessera.

Run as its own process (`python -m bench.echo`) so it has a GIL and a core of
its own, like each Tessera service; it prints `echo listening on HOST:PORT`
once serving and drains on SIGTERM, exactly as `tessera serve` does.
"""

from __future__ import annotations

# Served as the services are (`tessera.grpc_setup`): before grpc is imported.
from tessera import grpc_setup

if __name__ == "__main__":
    grpc_setup.for_serving()

# isort: split

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import grpc

from tessera import server
from tessera.bench.v1 import bench_pb2, bench_pb2_grpc
from tessera.settings import RuntimeSettings


class EchoServicer(bench_pb2_grpc.EchoServiceServicer):
    """Returns the payload unchanged: no work, so its latency is the hop itself."""

    async def Echo(
        self, request: bench_pb2.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bench_pb2.EchoResponse:
        """Echo the payload back."""
        return bench_pb2.EchoResponse(payload=request.payload)


class EchoService:
    """The echo service in the shape `tessera.server.start` expects."""

    name: str = "echo"
    full_names: Sequence[str] = (bench_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name,)

    def __init__(self) -> None:
        # The same runtime as the services, guard and limits included.
        self.settings = RuntimeSettings()

    def add_to(self, grpc_server: grpc.aio.Server) -> None:
        """Register the echo servicer."""
        bench_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer(), grpc_server)

    async def start(self) -> None:
        """Nothing to open."""

    async def drain(self) -> None:
        """No long-lived streams to end."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def check(self) -> None:
        """No store to reach."""


def main(argv: list[str] | None = None) -> None:
    """Serve echo on loopback until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(server.run(EchoService(), args.host, args.port, grace=1.0))


if __name__ == "__main__":
    main()
