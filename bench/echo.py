"""The echo service: the one-hop floor, served by the same runtime as Tessera.

Run as its own process (`python -m bench.echo`) so it has a GIL and a core of
its own, like each Tessera service; it prints `echo listening on HOST:PORT`
once serving and drains on SIGTERM, exactly as `tessera serve` does.

`--relay-to ADDRESS` makes it the two-hop floor instead: each Echo call is
passed on as a message on one of a few open `EchoStream` calls to the echo at
ADDRESS, and answered with what comes back. That is the shape of a Decide (a
unary call that sends one message on an open stream to the profile service
and waits for its answer: `IdentifyStreams`) with none of the work, so
Decide over it is Tessera's own cost, whatever the machine's speed that day.
"""

from __future__ import annotations

# Served as the services are (`tessera.grpc_setup`): before grpc is imported.
from tessera import grpc_setup

if __name__ == "__main__":
    grpc_setup.for_serving()

# isort: split

import argparse
import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from tessera import server
from tessera.bench.v1 import bench_pb2, bench_pb2_grpc
from tessera.clients import peer_channel, peer_error
from tessera.errors import Unavailable
from tessera.settings import RuntimeSettings


class EchoServicer(bench_pb2_grpc.EchoServiceServicer):
    """Returns the payload unchanged: no work, so its latency is the hop itself."""

    async def Echo(
        self, request: bench_pb2.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bench_pb2.EchoResponse:
        """Echo the payload back."""
        return bench_pb2.EchoResponse(payload=request.payload)

    async def EchoStream(
        self,
        requests: AsyncIterator[bench_pb2.EchoStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bench_pb2.EchoStreamResponse]:
        """Answer each message with its payload, in order."""
        async for request in requests:
            yield bench_pb2.EchoStreamResponse(payload=request.payload)


RELAY_STREAMS = 2
"""Open streams a relay spreads its calls over: the decision service's default
TESSERA_PROFILE_STREAMS."""


class Lane:
    """One open EchoStream; each message's answer goes to the caller that sent it.

    The echo answers a stream's messages in order, so a queue of waiting
    futures pairs them. Writes take turns (a stream takes one write at a time)
    and queue their future in the order they write.
    """

    def __init__(self, open_stream: Callable[[], Any]) -> None:
        self._open_stream = open_stream
        self._call: Any = None
        self._waiting: deque[asyncio.Future[bench_pb2.EchoStreamResponse]] = deque()
        self._turn = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def ask(self, payload: bytes) -> bytes:
        """`payload` sent as one message; the payload that comes back."""
        answer: asyncio.Future[bench_pb2.EchoStreamResponse] = (
            asyncio.get_running_loop().create_future()
        )
        async with self._turn:
            if self._call is None:
                self._call = self._open_stream()
                self._reader = asyncio.create_task(self._read(self._call))
            self._waiting.append(answer)
            try:
                await self._call.write(bench_pb2.EchoStreamRequest(payload=payload))
            except BaseException:
                # Not sent: nothing will answer it.
                if answer in self._waiting:
                    self._waiting.remove(answer)
                answer.cancel()
                raise
        return (await answer).payload

    async def _read(self, call: Any) -> None:
        try:
            async for response in call:
                self._waiting.popleft().set_result(response)
            raise ConnectionError("the echo ended the stream")
        except (grpc.aio.AioRpcError, ConnectionError) as error:
            # A broken stream fails what waits on it; the next call opens another.
            if self._call is call:
                self._call = None
            while self._waiting:
                self._waiting.popleft().set_exception(error)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()


class RelayServicer(EchoServicer):
    """Passes each Echo call on to another echo as a message on an open stream.

    Its own EchoStream is the echo's: only Echo is relayed.
    """

    def __init__(self, lanes: Sequence[Lane]) -> None:
        self._next = itertools.cycle(lanes)

    async def Echo(
        self, request: bench_pb2.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bench_pb2.EchoResponse:
        """The relayed echo's answer; its failure as UNAVAILABLE, as a service's peer's."""
        try:
            payload = await next(self._next).ask(request.payload)
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "the relayed echo") from error
        except ConnectionError as error:
            raise Unavailable(f"the relayed echo: {error}") from error
        return bench_pb2.EchoResponse(payload=payload)


class EchoService:
    """The echo service in the shape `tessera.server.start` expects; a relay with `relay_to`."""

    name: str = "echo"
    full_names: Sequence[str] = (bench_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name,)

    def __init__(self, relay_to: str | None = None) -> None:
        # The same runtime as the services, guard and limits included.
        self.settings = RuntimeSettings()
        self.relay_to = relay_to
        self.channel: grpc.aio.Channel | None = None
        self.lanes: list[Lane] = []

    def add_to(self, grpc_server: grpc.aio.Server) -> None:
        """Register the echo servicer, or the relay."""
        servicer: bench_pb2_grpc.EchoServiceServicer = EchoServicer()
        if self.relay_to is not None:
            # Channels as the services open them to their peers.
            self.channel = peer_channel(self.relay_to)
            stub = bench_pb2_grpc.EchoServiceStub(self.channel)
            self.lanes = [Lane(stub.EchoStream) for _ in range(RELAY_STREAMS)]
            servicer = RelayServicer(self.lanes)
        bench_pb2_grpc.add_EchoServiceServicer_to_server(servicer, grpc_server)

    async def start(self) -> None:
        """Nothing to open: a relay opens its streams with its first calls."""

    async def drain(self) -> None:
        """No long-lived streams of its own to end."""

    async def stop(self) -> None:
        """Close a relay's streams and channel."""
        for lane in self.lanes:
            await lane.close()
        if self.channel is not None:
            await self.channel.close()

    async def check(self) -> None:
        """No store to reach."""


def main(argv: list[str] | None = None) -> None:
    """Serve echo on loopback until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--relay-to",
        metavar="ADDRESS",
        help="pass each Echo call on to the echo at ADDRESS over an open stream",
    )
    args = parser.parse_args(argv)
    asyncio.run(server.run(EchoService(args.relay_to), args.host, args.port, grace=1.0))


if __name__ == "__main__":
    main()
