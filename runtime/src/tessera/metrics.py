"""Prometheus metrics every service exports, and the endpoint that serves them.

Names follow the conventions dashboards already know: the gRPC server
metrics of go-grpc-prometheus (`grpc_server_handled_total` by service,
method and code, `grpc_server_handling_seconds` as a histogram), and a
`tessera_` prefix for what is ours. Each service serves them at
`http://<host>:<metrics port>/metrics` (9091 decision, 9092 profiles, 9093
segments, 9094 experiments by default; TESSERA_<SERVICE>_METRICS_PORT
changes one, 0 turns it off).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Latency buckets from half a millisecond (a cached Decide on one core) to
# five seconds (a caller's longest useful deadline).
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

RPCS_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the request reaching the service to its answer.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
DEFINITIONS_HELD = Gauge(
    "tessera_definitions",
    "Definitions a replica holds in memory, by kind.",
    ["kind"],
    # Under several workers (multiprocess mode) every worker holds the same set.
    multiprocess_mode="max",
)


def record_rpc(method: str, code: str, seconds: float) -> None:
    """Count one finished RPC (`method` as gRPC names it: /package.Service/Method)."""
    service, _, name = method.lstrip("/").partition("/")
    RPCS_HANDLED.labels(service, name, code).inc()
    RPC_SECONDS.labels(service, name).observe(seconds)


def serve(host: str, port: int) -> None:
    """Serve /metrics on `host:port` from a background thread; port 0 serves nothing."""
    if port:
        start_http_server(port, addr=host.strip("[]"))
