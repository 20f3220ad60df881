"""One server bootstrap for every Tessera service.

`start` builds a grpc.aio server with the service's servicers, the standard
health service and server reflection, and returns it with its bound port
(port 0 picks a free one, as tests do). `run` serves until SIGTERM or SIGINT,
then drains: health goes NOT_SERVING at once so load balancers and probes
stop sending, in-flight calls get the grace period, and the process exits 0.

Domain errors become gRPC status codes here and nowhere else, and every
request passes the guard (`tessera.guard`) before its handler runs
(`ErrorInterceptor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis import exceptions as redis_errors
from sqlalchemy import exc as sqlalchemy_errors

from tessera import guard, metrics, tracing
from tessera.errors import InvalidArgument, ResourceExhausted, TesseraError
from tessera.settings import RuntimeSettings, host_port

log = logging.getLogger("tessera.server")

# What a store raises when it cannot be reached (down, restarting, network
# cut, pool exhausted): the call may succeed later, so UNAVAILABLE, which
# clients retry, not INTERNAL. SQLite's "database is locked" is an
# OperationalError too, and retrying is right for it as well.
STORE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    sqlalchemy_errors.OperationalError,
    sqlalchemy_errors.InterfaceError,
    sqlalchemy_errors.TimeoutError,
)

HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 2.0

SERVER_OPTIONS = [
    # Off: with it on, a second copy of a service would share the port
    # silently (two suites, two in-process hot stores, sessions split).
    # The workers of one service (TESSERA_WORKERS) turn it on on purpose.
    ("grpc.so_reuseport", 0),
    # Clients reconnect (and so resolve DNS again) at least every 5 minutes,
    # so replicas added by an autoscaler receive calls without a restart.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


class Service(Protocol):
    """What a service hands the runtime: its servicers and its lifecycle."""

    name: str
    """Short name: profiles, segments, experiments, decision."""

    full_names: Sequence[str]
    """Fully qualified gRPC service names, for health and reflection."""

    settings: RuntimeSettings
    """The service's settings; the runtime reads the request limits from them."""

    def add_to(self, server: grpc.aio.Server) -> None:
        """Register the servicers on `server`."""

    async def start(self) -> None:
        """Open stores and background tasks; called before serving."""

    async def drain(self) -> None:
        """End long-lived streams (watches) so shutdown need not wait them out."""

    async def stop(self) -> None:
        """Flush and close; called after the server stopped."""

    async def check(self) -> None:
        """Raise when a store the service needs cannot be reached (for health)."""


@dataclass
class Running:
    """A started server."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service: Service
    gate: Gate
    monitor: asyncio.Task[None] | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING, finish in-flight calls, close stores.

        From the first moment of shutdown a new call is answered UNAVAILABLE
        (which clients retry on another replica) rather than accepted and then
        cut off as CANCELLED (which they do not retry); calls under way get
        the grace period to finish before the server stops.
        """
        if self.stopped.is_set():
            return
        self.stopped.set()
        started = asyncio.get_running_loop().time()
        self.gate.close()
        if self.monitor is not None:
            self.monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.monitor
        await self.health.enter_graceful_shutdown()
        await self.service.drain()
        await self.gate.emptied(grace)
        left = (
            None
            if grace is None
            else max(0.0, grace - (asyncio.get_running_loop().time() - started))
        )
        await self.server.stop(left)
        await self.service.stop()


class Gate:
    """Counts the calls under way and, once closed, turns new ones away."""

    # Health and reflection keep answering during shutdown: probes must see
    # NOT_SERVING, not an error.
    ALWAYS_OPEN = ("/grpc.health.", "/grpc.reflection.")

    def __init__(self) -> None:
        self.closing = False
        self.unreachable = ""
        """Why a store is unreachable, while it is: calls are refused meanwhile."""
        self.checked = False
        self._under_way = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_arrival = 0.0

    def close(self) -> None:
        """Refuse every call that arrives from now on."""
        self.closing = True

    async def emptied(self, timeout: float | None, quiet_s: float = 0.1) -> None:
        """Wait until no call is under way and none arrived for `quiet_s`, or `timeout`.

        Calls already queued in gRPC's core when the server stops are cut off
        as CANCELLED; waiting for a quiet moment lets the gate answer them
        UNAVAILABLE first, while clients move to other replicas.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            while True:
                left = None if deadline is None else deadline - loop.time()
                await asyncio.wait_for(self._idle.wait(), left)
                quiet_for = loop.time() - self._last_arrival
                if quiet_for >= quiet_s:
                    return
                if deadline is not None and loop.time() + quiet_s - quiet_for > deadline:
                    return
                await asyncio.sleep(quiet_s - quiet_for)

    @contextlib.asynccontextmanager
    async def admit(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> AsyncIterator[None]:
        """Hold the call open while it runs; answer UNAVAILABLE once closing."""
        if method.startswith(self.ALWAYS_OPEN):
            yield
            return
        refused = self.arrive()
        if refused:
            await context.abort(grpc.StatusCode.UNAVAILABLE, refused)
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def arrive(self) -> str:
        """A call arrived: why it is refused (UNAVAILABLE), or "" when it may run."""
        self._last_arrival = asyncio.get_running_loop().time()
        if self.closing:
            return "the server is shutting down; retry another replica"
        return self.unreachable

    def enter(self) -> None:
        """A call admitted starts running: held open until `leave`."""
        self._under_way += 1
        self._idle.clear()

    def leave(self) -> None:
        """A call `enter` admitted is done."""
        self._under_way -= 1
        if self._under_way == 0:
            self._idle.set()


@contextlib.asynccontextmanager
async def _observed(
    context: grpc.aio.ServicerContext[Any, Any], method: str
) -> AsyncIterator[None]:
    """Count the call and time it by the status it ends with; its server span when tracing."""
    started = time.perf_counter()
    code = "OK"
    metadata = list(context.invocation_metadata() or ()) if tracing.enabled() else None
    with tracing.server_span(method, metadata):
        try:
            yield
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException:
            # Every answer that is not OK leaves here as AbortError with the code set.
            code = (context.code() or grpc.StatusCode.UNKNOWN).name
            raise
        finally:
            metrics.record_rpc(method, code, time.perf_counter() - started)
            tracing.mark_failed(code)


def _status_code(error: TesseraError) -> grpc.StatusCode:
    code: grpc.StatusCode = getattr(grpc.StatusCode, error.code_name, grpc.StatusCode.INTERNAL)
    return code


def _details(error: TesseraError, code: grpc.StatusCode) -> tuple[tuple[str, bytes], ...]:
    """google.rpc.Status with a BadRequest field violation, for clients that read it."""
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name, code_pb2.UNKNOWN), message=str(error)
    )
    if error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.message
        )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)


# Generic in the type stubs only, so named as a string.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps `TesseraError` raised by any servicer to its gRPC status.

    Every request is decoded and checked by the guard first, with `limits`.

    Anything else is logged with its traceback and answered INTERNAL without
    internals in the message.
    """

    def __init__(self, limits: guard.Limits, gate: Gate) -> None:
        self._wrapped: dict[str, Handler] = {}
        self._limits = limits
        self._gate = gate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = _wrap(handler, method, self._limits, self._gate)
        self._wrapped[method] = wrapped
        return wrapped


@contextlib.asynccontextmanager
async def _status_of_errors(
    context: grpc.aio.ServicerContext[Any, Any], method: str
) -> AsyncIterator[None]:
    """Answer a TesseraError with its status; anything unexpected with INTERNAL."""
    try:
        yield
    except TesseraError as error:
        code = _status_code(error)
        await context.abort(code, str(error), trailing_metadata=_details(error, code))
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception as error:
        await context.abort(*error_status(error, method))


def error_status(error: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message a handler's error is answered with.

    A `TesseraError` keeps its code and its message naming the field; a store
    that cannot be reached is UNAVAILABLE (retry); anything else is logged
    with its traceback and answered INTERNAL without internals. Also used
    per message by streams that answer each message on its own
    (IdentifyStream).
    """
    if isinstance(error, TesseraError):
        return _status_code(error), str(error)
    if isinstance(error, STORE_ERRORS):
        log.warning("store unreachable", extra={"method": method, "error": str(error)})
        return grpc.StatusCode.UNAVAILABLE, "a store of this service cannot be reached; retry"
    log.error("unhandled error", extra={"method": method}, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error in {method}"


def _wrap(handler: Handler, method: str, limits: guard.Limits, gate: Gate) -> Handler:
    """The handler with errors mapped and every request through the guard.

    The request arrives as bytes and is decoded here rather than by grpc, so
    that bytes which do not decode are answered INVALID_ARGUMENT like any
    other bad input, instead of an UNKNOWN naming a Python exception.
    """
    # grpc.aio hands the interceptor the servicer's async behaviours, which the
    # stubs type as the synchronous ones; read them as what they are here.
    behaviours: Any = handler
    parse = handler.request_deserializer
    codec: dict[str, Any] = {"response_serializer": handler.response_serializer}

    def admit(data: Any) -> Any:
        if parse is None:
            return data
        request = guard.decode(parse, data)
        guard.check(request, limits)
        return request

    Context = grpc.aio.ServicerContext[Any, Any]
    if handler.unary_unary:
        unary = behaviours.unary_unary
        always_open = method.startswith(Gate.ALWAYS_OPEN)

        async def traced_unary(data: Any, context: Context) -> Any:
            async with (
                _observed(context, method),
                gate.admit(context, method),
                _status_of_errors(context, method),
            ):
                return await unary(admit(data), context)

        async def unary_unary(data: Any, context: Context) -> Any:
            # What `traced_unary` does, written out: its three context
            # managers cost more than a cheap call's own work (a GetProfile
            # of a known visitor). Tracing takes the long way, for its span.
            if tracing.enabled():
                return await traced_unary(data, context)
            started = time.perf_counter()
            code = "OK"
            try:
                if not always_open:
                    refused = gate.arrive()
                    if refused:
                        await context.abort(grpc.StatusCode.UNAVAILABLE, refused)
                    gate.enter()
                try:
                    return await unary(admit(data), context)
                except TesseraError as error:
                    status = _status_code(error)
                    await context.abort(
                        status, str(error), trailing_metadata=_details(error, status)
                    )
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as error:
                    await context.abort(*error_status(error, method))
                finally:
                    if not always_open:
                        gate.leave()
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                # Every answer that is not OK leaves here as AbortError with the code set.
                code = (context.code() or grpc.StatusCode.UNKNOWN).name
                raise
            finally:
                metrics.record_rpc(method, code, time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.unary_stream:
        server_stream = behaviours.unary_stream

        async def unary_stream(data: Any, context: Context) -> AsyncIterator[Any]:
            async with (
                _observed(context, method),
                gate.admit(context, method),
                _status_of_errors(context, method),
            ):
                async for response in server_stream(admit(data), context):
                    yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    if handler.stream_unary:
        client_stream = behaviours.stream_unary

        async def admitted(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
            index = 0
            async for data in stream:
                request = None
                refused: guard.Refused | None = None
                try:
                    request = data if parse is None else guard.decode(parse, data)
                    if parse is not None:
                        guard.check(request, limits)
                except (InvalidArgument, ResourceExhausted) as error:
                    # Named by its place in the stream, and handed on as
                    # refused, with the message when it decoded.
                    field = f"[{index}].{error.field}" if error.field else f"[{index}]"
                    refused = guard.Refused(type(error)(error.message, field=field), request)
                yield request if refused is None else refused
                index += 1

        async def stream_unary(stream: AsyncIterator[Any], context: Context) -> Any:
            async with (
                _observed(context, method),
                gate.admit(context, method),
                _status_of_errors(context, method),
            ):
                return await client_stream(admitted(stream), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    if handler.stream_stream:
        both_streams = behaviours.stream_stream

        async def each_checked(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
            # Named as in the message (`request.identities[0].value`); the
            # message rides along so the handler can answer by its id. One
            # that does not decode at all has no id to answer by.
            async for data in stream:
                if parse is None:
                    yield data
                    continue
                request = guard.decode(parse, data)
                try:
                    guard.check(request, limits)
                except (InvalidArgument, ResourceExhausted) as error:
                    yield guard.Refused(error, request)
                    continue
                yield request

        async def stream_stream(stream: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async with (
                _observed(context, method),
                gate.admit(context, method),
                _status_of_errors(context, method),
            ):
                async for response in both_streams(each_checked(stream), context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)
    return handler


async def start(
    service: Service, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False
) -> Running:
    """Build and start a server for `service`; port 0 binds a free port.

    With `reuse_port`, other processes may bind the same port (SO_REUSEPORT)
    and the kernel spreads connections over them: a service's workers.
    """
    gate = Gate()
    interceptor = ErrorInterceptor(service.settings.limits(), gate)
    options = [
        ("grpc.so_reuseport", 1) if name == "grpc.so_reuseport" and reuse_port else (name, value)
        for name, value in SERVER_OPTIONS
    ]
    server = grpc.aio.server(interceptors=[interceptor], options=options)
    service.add_to(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service.full_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(host_port(host, port))
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    await service.start()
    await server.start()
    running = Running(server, bound, health_servicer, service, gate)
    await _check_stores(running)
    running.monitor = asyncio.create_task(_monitor(running))
    log.info(
        "serving",
        extra={"address": host_port(host, bound), "services": list(service.full_names)},
    )
    return running


async def _check_stores(running: Running) -> None:
    """SERVING while the service's stores answer, NOT_SERVING (and calls refused) while not."""
    try:
        await asyncio.wait_for(running.service.check(), HEALTH_TIMEOUT_S)
        reason = ""
    except Exception as error:  # whatever the probe raised, the store did not answer
        reason = f"a store of this service cannot be reached ({type(error).__name__}); retry"
    if reason != running.gate.unreachable or not running.gate.checked:
        if reason:
            log.warning("not serving: store unreachable", extra={"why": reason})
        elif running.gate.checked:
            log.info("serving again: stores reachable")
        running.gate.unreachable = reason
        running.gate.checked = True
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if reason
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in ("", *running.service.full_names):
            await running.health.set(name, status)


async def _monitor(running: Running) -> None:
    """Check the stores every HEALTH_INTERVAL_S until the server stops."""
    while not running.stopped.is_set():
        await asyncio.sleep(HEALTH_INTERVAL_S)
        if not running.stopped.is_set():
            await _check_stores(running)


async def run(
    service: Service, host: str, port: int, grace: float, *, reuse_port: bool = False
) -> None:
    """Serve until SIGTERM or SIGINT, then drain within `grace` seconds."""
    running = await start(service, host, port, reuse_port=reuse_port)
    # What is there now (modules, settings, stores, compiled statements)
    # lives as long as the process: frozen out of the cyclic collector's
    # way. Otherwise every full collection walks all of it again; on the
    # profile service's write path that was about a third of its CPU time
    # (docs/profile-writes.md, "Speed"). Garbage first, so none is frozen.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"{service.name} listening on {host_port(host, running.port)}", flush=True)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": grace})
    with contextlib.suppress(asyncio.CancelledError):
        await running.stop(grace)
    log.info("stopped")
