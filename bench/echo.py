"""The echo service: the one-hop floor, served by the same runtime as Tessera.

Run as its own process (`python -m bench.echo`) so it has a GIL and a core of
its own, like each Tessera service; it prints `echo listening on HOST:PORT`
once serving and drains on SIGTERM, exactly as `tessera serve` does.

`--relay-to ADDRESS` makes it the two-hop floor instead: each Echo call is
passed on as a message on one of a few open `EchoStream` calls to the echo at
ADDRESS, and answered with what comes back. That is the shape of a Decide (a
unary call that sends one message on an open stream to the profile service
and waits for its answer: `IdentifyStreams`) with none of the work, so
Decide over it is Tessera's own cost, and moves less with the machine's
speed than Decide over echo.
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


class _Stream:
    """One open EchoStream call and the answers waited for on it, oldest first."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.waiting: deque[asyncio.Future[bench_pb2.EchoStreamResponse]] = deque()


class Lane:
    """A place in the relay's rotation: one open EchoStream at a time.

    The echo answers a stream's messages in order, so a queue of waiting
    futures pairs them. Writes take turns (a call takes one write at a time)
    and queue their future in the order they write. A caller that gives up
    (its deadline) leaves its future in the queue, cancelled: its answer
    still comes, and is dropped. A stream that breaks, or whose write fails
    or is cancelled (gRPC then cancels the whole call), is retired: what
    waits on it fails, and the next call opens a new one.
    """

    def __init__(self, open_stream: Callable[[], Any]) -> None:
        self._open_stream = open_stream
        self._stream: _Stream | None = None
        self._turn = asyncio.Lock()
        self._readers: set[asyncio.Task[None]] = set()

    async def ask(self, payload: bytes) -> bytes:
        """`payload` sent as one message; the payload that comes back."""
        answer: asyncio.Future[bench_pb2.EchoStreamResponse] = (
            asyncio.get_running_loop().create_future()
        )
        async with self._turn:
            stream = self._stream
            if stream is None:
                stream = self._stream = _Stream(self._open_stream())
                reader = asyncio.create_task(self._read(stream))
                self._readers.add(reader)
                reader.add_done_callback(self._readers.discard)
            stream.waiting.append(answer)
            try:
                await stream.call.write(bench_pb2.EchoStreamRequest(payload=payload))
            except asyncio.CancelledError:
                answer.cancel()
                self._retire(stream, ConnectionError("a write to the echo was cancelled"))
                raise
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
                # Failed with the stream: `answer` fails with it, below.
                self._retire(stream, ConnectionError(f"the stream to the echo broke: {error!r}"))
        return (await answer).payload

    async def _read(self, stream: _Stream) -> None:
        error: Exception = ConnectionError("the stream to the echo ended")
        try:
            async for response in stream.call:
                if not stream.waiting:
                    error = ConnectionError("the echo answered a message it was not sent")
                    break
                waiter = stream.waiting.popleft()
                if not waiter.done():  # done: its caller gave up on it
                    waiter.set_result(response)
        except grpc.aio.AioRpcError as broke:
            error = broke
        finally:
            self._retire(stream, error)

    def _retire(self, stream: _Stream, error: Exception) -> None:
        if self._stream is stream:
            self._stream = None
        stream.call.cancel()
        while stream.waiting:
            waiter = stream.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    async def close(self) -> None:
        """Retire the open stream and stop reading."""
        if self._stream is not None:
            self._retire(self._stream, ConnectionError("the relay is stopping"))
        for reader in list(self._readers):
            reader.cancel()


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
