"""OpenTelemetry traces across the fan-out, off unless an OTLP endpoint is set.

With TESSERA_OTLP_ENDPOINT set, each service exports its spans there over
OTLP/gRPC: one server span per RPC, named by its gRPC method, joined to the
caller's trace through the W3C `traceparent` metadata, and one client span
per call to a peer, whose context travels in that metadata. The JSON logs
carry the trace and span ids of the span they were written in. Off (the
default), no span is made and no metadata added: the hot path pays nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

_tracer: trace.Tracer | None = None
"""The service's tracer while tracing is on; None while it is off."""


def configure(service: str, endpoint: str) -> None:
    """Export spans of `service` to the OTLP collector at `endpoint`; empty turns tracing off."""
    global _tracer
    if not endpoint:
        _tracer = None
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"tessera-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    use(provider.get_tracer("tessera"))


def use(tracer: trace.Tracer | None) -> None:
    """Trace with `tracer` (tests hand in one with an in-memory exporter); None stops."""
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    """Whether spans are being made."""
    return _tracer is not None


class _MetadataGetter:
    """Reads W3C trace context out of gRPC invocation metadata."""

    def get(self, carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        values = [str(value) for name, value in carrier if name == key]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _MetadataGetter()


@contextlib.contextmanager
def server_span(method: str, metadata: Sequence[tuple[str, Any]] | None) -> Iterator[None]:
    """A server span for one RPC, child of the caller's span when it sent one."""
    if _tracer is None:
        yield
        return
    parent = propagate.extract(list(metadata or ()), getter=_GETTER)  # type: ignore[arg-type]
    with _serving(_tracer, method, parent):
        yield


@contextlib.contextmanager
def message_span(method: str, traceparent: str) -> Iterator[None]:
    """A server span for one request on an open stream (IdentifyStream), named by the
    unary `method` it stands for: child of the caller's span whose W3C `traceparent`
    the message carries, else of the current span (the stream's)."""
    if _tracer is None:
        yield
        return
    parent = None
    if traceparent:
        extracted = propagate.extract({"traceparent": traceparent})
        if trace.get_current_span(extracted).get_span_context().is_valid:
            parent = extracted
    with _serving(_tracer, method, parent):
        yield


def _serving(
    tracer: trace.Tracer, method: str, parent: Context | None
) -> contextlib.AbstractContextManager[trace.Span]:
    """The current server span of `method` (`/package.Service/Method`) under `parent`."""
    service, _, name = method.lstrip("/").partition("/")
    return tracer.start_as_current_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )


@contextlib.contextmanager
def stream_request_span(method: str) -> Iterator[str]:
    """A client span for one request sent as a message on an open stream, named by the
    unary `method` it stands for; yields the W3C `traceparent` to send with it ('' while
    tracing is off). A `grpc.aio.AioRpcError` raised inside ends it failed, as the
    unary call's span would."""
    if _tracer is None:
        yield ""
        return
    with _tracer.start_as_current_span(
        method, kind=SpanKind.CLIENT, set_status_on_exception=False
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        try:
            yield carrier.get("traceparent", "")
        except grpc.aio.AioRpcError as error:
            span.set_status(Status(StatusCode.ERROR, error.code().name))
            raise
        except BaseException as error:  # cancelled, or a bug of ours: failed all the same
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise


def mark_failed(code: str) -> None:
    """Record on the current span that its RPC ended with `code`."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code)
        if code != "OK":
            span.set_status(Status(StatusCode.ERROR, code))


def current_ids() -> tuple[str, str] | None:
    """Trace and span id of the current span, hex, for the logs; None outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _with_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if _tracer is None:
            return await continuation(client_call_details, request)
        method = _method_name(client_call_details.method)
        with _tracer.start_as_current_span(method, kind=SpanKind.CLIENT) as span:
            call = await continuation(_with_context(client_call_details), request)
            try:
                await call
            except grpc.aio.AioRpcError as error:
                span.set_status(Status(StatusCode.ERROR, error.code().name))
            return call


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        # A watch stream lives as long as the replica: it carries the context
        # of whoever opened it, without a span of its own.
        if _tracer is None:
            return await continuation(client_call_details, request)
        return await continuation(_with_context(client_call_details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        if _tracer is None:
            return await continuation(client_call_details, request_iterator)
        return await continuation(_with_context(client_call_details), request_iterator)


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


CLIENT_INTERCEPTORS: list[grpc.aio.ClientInterceptor] = [
    _UnaryUnary(),
    _UnaryStream(),
    _StreamUnary(),
]
"""Interceptors of every peer channel: they carry the trace to the peer."""
