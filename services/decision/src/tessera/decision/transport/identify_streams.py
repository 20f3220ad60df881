"""Identify over a few long-lived streams to the profile service (`IdentifyStream`).

Every Decide resolves its visitor with the profile service. As a unary call
that is a whole gRPC call on both sides; a message on a stream already open
costs a quarter to a half of one (bench/README.md, `python -m bench.hops`).
`IdentifyStreams` keeps N streams open and sends each Identify as one
message on the next of them in turn, tagged with a `request_id`; a reader
per stream hands each answer to the future waiting for that id, in whatever
order the answers come.

It is called exactly like the stub's `Identify` (`await
streams.Identify(request, timeout=...)`) and fails like it: an answer's error
and a stream that breaks become the `grpc.aio.AioRpcError` the unary call
would have raised, a request not answered within its timeout becomes
DEADLINE_EXCEEDED, so the decision service's fail-open (docs/decide.md,
"Degraded modes") sees no difference.

- A stream that breaks (its server drained, the peer went away) fails the
  requests waiting on it with its status; the next request on that lane
  opens a new one. A stream that broke before answering anything is
  reopened only after a backoff (doubling from RECONNECT_INITIAL_MS, capped
  at RECONNECT_MAX_MS, as the channels' own reconnects); meanwhile that
  lane's requests use the unary call, so a returning peer is used again
  within the cap.
- A profile service that does not know the RPC (an older version during a
  rolling upgrade) answers UNIMPLEMENTED: that lane uses the unary call for
  UNIMPLEMENTED_RETRY_S, then tries a stream again.
- Streams are opened on the peer's channel like any call, so its
  `round_robin` balancing places successive streams on successive profile
  replicas (docs/decide.md, "Speed"). A stream is retired after
  STREAM_MAX_AGE_S (the server answers what it has, then ends it) and its
  lane opens a new one: streams follow replicas coming and going, and leave
  a connection the server ages out before it is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import grpc

from tessera import metrics, tracing
from tessera.clients import RECONNECT_INITIAL_MS, RECONNECT_MAX_MS
from tessera.profiles.v1 import profiles_pb2

PEER = "tessera.profiles.v1.ProfileService"
"""The peer's full service name, as the `grpc_client_*` metrics label it."""

METHOD = "Identify"
"""A stream request is timed under the unary method's name: it is the same question."""

STREAM_MAX_AGE_S = 20.0
"""A stream older than this is retired at its next request and a new one opened.

Below the profile service's `grpc.max_connection_age_grace_ms` (30 s): a
connection told to go away (every 5 minutes) is left by its streams before
the server cuts it, so no request waiting on one fails for it."""

UNIMPLEMENTED_RETRY_S = 30.0
"""How long a lane whose server lacks IdentifyStream uses the unary call before trying again."""

TRACED_AS = f"/{PEER}/{METHOD}"
"""With tracing on, a stream request's client span is named as the unary call's would be."""

_UNTRACED = contextlib.nullcontext("")
"""While tracing is off: no span, no traceparent, and no generator to enter per request."""

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class StreamCall(Protocol):
    """What a lane needs of an open `IdentifyStream` call (grpc.aio's StreamStreamCall)."""

    async def write(self, request: profiles_pb2.IdentifyStreamRequest) -> None:
        """Send one request."""

    def __aiter__(self) -> AsyncIterator[profiles_pb2.IdentifyStreamResponse]:
        """The answers, until the stream ends; raises AioRpcError when it ends not OK."""

    def cancel(self) -> bool:
        """End the stream from this side."""

    async def done_writing(self) -> None:
        """Tell the server no more requests come; it answers the rest and ends OK."""


class UnaryIdentify(Protocol):
    """The stub's unary Identify."""

    def __call__(
        self, request: profiles_pb2.IdentifyRequest, *, timeout: float | None = None
    ) -> Awaitable[profiles_pb2.IdentifyResponse]:
        """Identify in one unary call."""


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a unary call ending with `code` and `details` would raise."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class _Stream:
    """One open IdentifyStream call and the requests waiting on it."""

    def __init__(self, call: StreamCall, opened_at: float) -> None:
        self.call = call
        self.opened_at = opened_at
        self.pending: dict[int, asyncio.Future[profiles_pb2.IdentifyResponse]] = {}
        self.writing = asyncio.Lock()
        """One write at a time on a call (gRPC allows no more)."""
        self.answered = False
        """Whether it answered anything (a healthy stream, if it breaks later)."""


class _Lane:
    """A place in the rotation: its current stream and its backoff after a break."""

    def __init__(self) -> None:
        self.stream: _Stream | None = None
        self.failures = 0
        """Streams in a row that broke before answering: the backoff grows with them."""
        self.unary_until = 0.0
        """Until this instant (monotonic) the lane's requests use the unary call."""


class IdentifyStreams:
    """Identify, sent as messages on `streams` long-lived IdentifyStream calls in turn.

    `open_stream` opens one call (the stub's `IdentifyStream()`); `unary` is
    the stub's `Identify`, used with `streams` = 0, while a lane backs off,
    and against a server without the RPC.
    """

    def __init__(
        self,
        open_stream: Callable[[], StreamCall],
        unary: UnaryIdentify,
        streams: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_stream = open_stream
        self._unary = unary
        self._lanes = [_Lane() for _ in range(max(0, streams))]
        self._turn = itertools.count()
        self._ids = itertools.count(1)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        """Readers, and the ends of retired streams: kept until done, ended by close()."""
        self._calls: set[StreamCall] = set()
        """Calls not yet ended, current and retired."""

    async def Identify(
        self, request: profiles_pb2.IdentifyRequest, *, timeout: float | None = None
    ) -> profiles_pb2.IdentifyResponse:
        """Identify on the next stream in turn, answered as the unary call would be."""
        if not self._lanes:
            return await self._unary(request, timeout=timeout)
        lane = self._lanes[next(self._turn) % len(self._lanes)]
        if lane.unary_until > self._clock():
            return await self._unary(request, timeout=timeout)
        started = time.perf_counter()
        code = "OK"
        try:
            return await self._on(lane, request, timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                code = error.code().name
                raise
            # An older profile service: this request, and the lane's for a
            # while, go as unary calls (timed there).
            code = ""
            left = None if timeout is None else max(0.0, timeout - (time.perf_counter() - started))
            return await self._unary(request, timeout=left)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            if code:
                metrics.record_peer_call(PEER, METHOD, code, time.perf_counter() - started)

    async def _on(
        self, lane: _Lane, request: profiles_pb2.IdentifyRequest, timeout: float | None
    ) -> profiles_pb2.IdentifyResponse:
        stream = lane.stream
        if stream is not None and self._clock() - stream.opened_at >= STREAM_MAX_AGE_S:
            self._retire(lane, stream)
            stream = None
        if stream is None:
            stream = self._open(lane)
        request_id = next(self._ids)
        answer: asyncio.Future[profiles_pb2.IdentifyResponse] = (
            asyncio.get_running_loop().create_future()
        )
        stream.pending[request_id] = answer
        # The span outside the deadline: it ends with the status the caller gets.
        with (
            tracing.stream_request_span(TRACED_AS) if tracing.enabled() else _UNTRACED
        ) as traceparent:
            try:
                async with asyncio.timeout(timeout):
                    async with stream.writing:
                        await stream.call.write(
                            profiles_pb2.IdentifyStreamRequest(
                                request_id=request_id, request=request, traceparent=traceparent
                            )
                        )
                    return await answer
            except TimeoutError:
                raise rpc_error(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded (IdentifyStream)"
                ) from None
            except asyncio.InvalidStateError:
                # Written after the stream ended: its reader fails the rest.
                raise rpc_error(
                    grpc.StatusCode.UNAVAILABLE, "the IdentifyStream ended; retry"
                ) from None
            finally:
                stream.pending.pop(request_id, None)

    def _open(self, lane: _Lane) -> _Stream:
        stream = _Stream(self._open_stream(), self._clock())
        lane.stream = stream
        self._calls.add(stream.call)
        self._spawn(self._read(lane, stream), "identify-stream:read")
        return stream

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retire(self, lane: _Lane, stream: _Stream) -> None:
        """Send no more on `stream`: the server answers what it has and ends it OK.

        Streams are retired before the profile service's connections age out
        (STREAM_MAX_AGE_S), so no request is cut off with its connection, and
        new streams follow DNS and the balancing to replicas added since.
        """
        lane.stream = None

        async def finish() -> None:
            with contextlib.suppress(Exception):  # already ended: its reader has seen why
                async with stream.writing:
                    await stream.call.done_writing()

        self._spawn(finish(), "identify-stream:retire")

    async def _read(self, lane: _Lane, stream: _Stream) -> None:
        """Hand each answer to its request; when the stream ends, fail what still waits."""
        code, details = grpc.StatusCode.UNAVAILABLE, "the IdentifyStream ended"
        try:
            async for response in stream.call:
                if not stream.answered:
                    stream.answered = True
                    lane.failures = 0
                waiting = stream.pending.get(response.request_id)
                if waiting is None or waiting.done():
                    continue  # timed out meanwhile
                if response.HasField("error"):
                    error = response.error
                    waiting.set_exception(
                        rpc_error(_CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.message)
                    )
                else:
                    waiting.set_result(response.response)
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or error.code().name
        finally:
            self._calls.discard(stream.call)
            self._broke(lane, stream, code, details)

    def _broke(self, lane: _Lane, stream: _Stream, code: grpc.StatusCode, details: str) -> None:
        if lane.stream is stream:
            lane.stream = None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                lane.unary_until = self._clock() + UNIMPLEMENTED_RETRY_S
            elif not stream.answered:
                lane.failures += 1
                backoff_ms = min(RECONNECT_MAX_MS, RECONNECT_INITIAL_MS * 2 ** (lane.failures - 1))
                lane.unary_until = self._clock() + backoff_ms / 1000
        for waiting in stream.pending.values():
            if not waiting.done():
                waiting.set_exception(rpc_error(code, details))

    async def close(self) -> None:
        """End every stream (the service stops)."""
        for call in list(self._calls):
            call.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
