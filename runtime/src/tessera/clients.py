"""Channels to peer services: load balanced, retried on UNAVAILABLE.

Addresses may be `host:port` or a resolver URI such as
`dns:///profiles.tessera.svc.cluster.local:50052`; with a headless Kubernetes
Service the DNS name resolves to every replica and `round_robin` spreads the
calls over them. Every call still carries its own deadline, set by the caller.
"""

from __future__ import annotations

import json

import grpc

from tessera import tracing
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

CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
]


def peer_channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to a peer service at `address`."""
    target = address if "://" in address or address.startswith("dns:") else f"dns:///{address}"
    # Interceptors only while tracing: each one is a layer every call pays for.
    interceptors = tracing.CLIENT_INTERCEPTORS if tracing.enabled() else None
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)


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
