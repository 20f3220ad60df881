"""Channels to peer services: load balanced, retried on UNAVAILABLE.

Addresses may be `host:port` or a resolver URI such as
`dns:///profiles.tessera.svc.cluster.local:50052`; with a headless Kubernetes
Service the DNS name resolves to every replica and `round_robin` spreads the
calls over them. Every call still carries its own deadline, set by the caller.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import grpc

from tessera import metrics, tracing
from tessera.definitions.watcher import Backoff
from tessera.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    TesseraError,
    Unavailable,
)

# gRPC service config: https://github.com/grpc/grpc/blob/master/doc/service_config.md
# Retries only UNAVAILABLE (the request never reached a server, or it is
# draining), with jittered exponential backoff capped well below a Decide
# deadline.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

RECONNECT_INITIAL_MS = 100
"""First wait before reconnecting to a peer that went away."""
RECONNECT_MAX_MS = 500
"""Longest wait between reconnect attempts: a returning peer is seen within it.

Within it when a connect to the peer's address is refused or answered at
once, as on loopback and in a cluster (a Service with no ready pod refuses);
one whose packets are dropped instead takes up to CONNECT_TIMEOUT_MIN_MS to
give up before the next attempt."""
CONNECT_TIMEOUT_MIN_MS = 1_000
"""Least time one connect attempt (TCP and the HTTP/2 handshake) is given.

gRPC core reads `grpc.min_reconnect_backoff_ms` as this timeout, not as a
backoff (MIN_CONNECT_TIMEOUT in doc/connection-backoff.md of grpc/grpc): an
attempt gets max(its backoff, this). Set to the backoff, a handshake with a
busy peer slower than half a second would never finish. A refused connect
fails at once whatever this is, so it does not slow a peer's return.
"""

CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    # A peer that comes back is used again within a second. gRPC's own
    # reconnect backoff starts at 1 s and grows to 120 s (doc/connection-backoff.md
    # in grpc/grpc), so a replica that lost a peer for a while kept failing
    # for up to 10 s after it returned. Capped here: a loopback or in-cluster
    # connect costs little, and a failed attempt is cheap.
    ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
    ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MIN_MS),
    ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
]


def peer_channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to a peer service at `address`."""
    target = address if "://" in address or address.startswith("dns:") else f"dns:///{address}"
    # Interceptors only while tracing: each one is a layer every call pays for.
    interceptors = tracing.CLIENT_INTERCEPTORS if tracing.enabled() else None
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)


S = TypeVar("S")


class _Timed:
    """A unary method of a peer's stub, counted and timed by its status code."""

    def __init__(self, method: grpc.aio.UnaryUnaryMultiCallable[Any, Any], service: str, name: str):
        self._method = method
        self._service = service
        self._name = name

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        return self._timed(request, kwargs)

    async def _timed(self, request: Any, kwargs: dict[str, Any]) -> Any:
        started = time.perf_counter()
        code = "OK"
        try:
            return await self._method(request, **kwargs)
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            metrics.record_peer_call(self._service, self._name, code, time.perf_counter() - started)


def observed(stub: S) -> S:
    """`stub` with every unary call counted and timed (`grpc_client_*` metrics).

    Labelled by the peer's full gRPC service name, which tells dependencies
    apart: a decision replica's calls to profiles, segments and experiments
    each get their latency histogram. The name is the stub's: a generated
    `tessera.<service>.v1.<Name>ServiceStub` serves `tessera.<service>.v1.<Name>Service`
    (the proto package is the Python package). A wrapper on the stub rather than a
    channel interceptor: it costs one await per call. Streams (Watch...,
    StreamEvents) are left as they are; they last as long as the connection.
    """
    kind = type(stub)
    service = f"{kind.__module__.rpartition('.')[0]}.{kind.__name__.removesuffix('Stub')}"
    for name, method in list(vars(stub).items()):
        if isinstance(method, grpc.aio.UnaryUnaryMultiCallable):
            setattr(stub, name, _Timed(method, service, name))
    return stub


PEER_RETURN_WAIT_S = 2.0
"""How long `patient` calls try again a peer that answers UNAVAILABLE.

Past one reconnect backoff (RECONNECT_MAX_MS, jittered by a fifth) with room
for the connect: a peer that has just come back is seen again within it.
"""
PATIENCE = Backoff(initial_s=0.05, max_s=0.25)
"""`patient`'s waits between tries: 50 ms doubling to 250 ms, jittered."""


class _Patient:
    """A unary method of a peer's stub, tried again while the peer is away."""

    def __init__(self, method: Callable[..., Any], wait_s: float):
        self._method = method
        self._wait_s = wait_s

    async def __call__(self, request: Any, **kwargs: Any) -> Any:
        give_up = time.monotonic() + self._wait_s
        delays = PATIENCE.delays()
        while True:
            try:
                return await self._method(request, **kwargs)
            except grpc.aio.AioRpcError as error:
                pause = next(delays)
                if (
                    error.code() != grpc.StatusCode.UNAVAILABLE
                    or time.monotonic() + pause > give_up
                ):
                    raise
            await asyncio.sleep(pause)


_STREAMING = (
    grpc.aio.UnaryStreamMultiCallable,
    grpc.aio.StreamUnaryMultiCallable,
    grpc.aio.StreamStreamMultiCallable,
)


class _PatientStub:
    def __init__(self, stub: Any, wait_s: float):
        self._stub = stub
        self._wait_s = wait_s

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        if not callable(method) or isinstance(method, _STREAMING):
            return method  # a stream is not one call to try again
        return _Patient(method, self._wait_s)


def patient(stub: S, wait_s: float = PEER_RETURN_WAIT_S) -> S:
    """`stub` whose unary calls try again for `wait_s` while the peer answers UNAVAILABLE.

    For admin changes, off the hot path. A channel that lost its peer fails
    calls at once until its next reconnect attempt, up to RECONNECT_MAX_MS
    later, even when the peer is back and serving; a change made in that gap
    (just after a restart or a rolling update) would fail for nothing. The
    channel's own retry policy gives up after about 0.1 s, well inside the gap.
    A peer that stays away still fails the call with UNAVAILABLE, `wait_s`
    later. Each try has the caller's `timeout`. Only for calls that are safe
    to repeat, as the service config's retries already assume of every call.
    Decide's calls stay as they are: it answers with defaults instead.
    Streaming methods are passed through as they are.
    """
    return cast("S", _PatientStub(stub, wait_s))


_PEER_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


def peer_error(error: grpc.aio.AioRpcError, peer: str) -> TesseraError:
    """The domain error for a failed call to a peer service.

    Caller mistakes the peer found (a bad identity, an unknown segment) keep
    their code and message, which already name the field; anything else
    becomes UNAVAILABLE naming the peer, never a bare INTERNAL.
    """
    kind = _PEER_CODES.get(error.code())
    details = error.details() or error.code().name
    if kind is not None:
        field, sep, message = details.partition(": ")
        return kind(message, field=field) if sep and " " not in field else kind(details)
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{peer} did not answer in time")
    return Unavailable(f"{peer} failed: {error.code().name}: {details}")
