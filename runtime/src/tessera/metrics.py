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

EXPOSURES_SENT = Counter(
    "tessera_exposures_sent_total",
    "Exposures the decision service delivered to the experiment service.",
)
EXPOSURES_DROPPED = Counter(
    "tessera_exposures_dropped_total",
    "Exposures the decision service gave up on, by reason (queue_full, refused, shutdown).",
    ["reason"],
)
PRESSURE_STORE_CALLS = Counter(
    "tessera_pressure_store_calls_total",
    "Calls Decide made to the pressure counter store, by operation (read, charge) and result "
    "(ok, refused: a concurrent Decide of the person got there first, unavailable).",
    ["operation", "result"],
)
EXPOSURE_QUEUE_DEPTH = Gauge(
    "tessera_exposure_queue_depth",
    "Exposures waiting in the decision service to be sent, including a batch in flight.",
    multiprocess_mode="livesum",
)


# The labelled children each call records into, by their labels: looking a
# child up by its label values (`labels(...)`) validates and joins them under
# a lock on every call, a few percent of a cheap RPC's CPU. Children live as
# long as their metric (nothing here removes one), so keeping them is exact.
_handled: dict[tuple[str, str], Counter] = {}
_handling: dict[str, Histogram] = {}
_peer_handled: dict[tuple[str, str, str], Counter] = {}
_peer_handling: dict[tuple[str, str], Histogram] = {}


def record_rpc(method: str, code: str, seconds: float) -> None:
    """Count one finished RPC (`method` as gRPC names it: /package.Service/Method)."""
    handled = _handled.get((method, code))
    if handled is None:
        service, _, name = method.lstrip("/").partition("/")
        handled = _handled[method, code] = RPCS_HANDLED.labels(service, name, code)
    handled.inc()
    handling = _handling.get(method)
    if handling is None:
        service, _, name = method.lstrip("/").partition("/")
        handling = _handling[method] = RPC_SECONDS.labels(service, name)
    handling.observe(seconds)


PEER_CALLS = Counter(
    "grpc_client_handled_total",
    "Calls this service made to a peer (its fan-out), by the peer's status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
PEER_SECONDS = Histogram(
    "grpc_client_handling_seconds",
    "Time a call to a peer took, by the peer's service and method: fan-out latency per dependency.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
DEFINITION_LOOKUPS = Counter(
    "tessera_definition_lookups_total",
    "Definitions the hot path asked a replica's in-memory cache for, by kind: hit when held, "
    "miss when not (yet) held, e.g. created on another replica a moment ago.",
    ["kind", "result"],
)
FEED_HEAD = Gauge(
    "tessera_feed_head_sequence",
    "The profile service's change feed: the highest sequence given out, as this replica last saw.",
    multiprocess_mode="max",
)
IDENTIFY_STREAMS = Gauge(
    "tessera_identify_streams_open",
    "IdentifyStream calls open on this profile service replica: the decision replicas' "
    "long-lived streams (TESSERA_PROFILE_STREAMS each), as client-side balancing spread them.",
    multiprocess_mode="livesum",
)
FEED_POSITION = Gauge(
    "tessera_feed_consumer_sequence",
    "The last change-feed sequence a consumer handled and checkpointed; the feed's head minus "
    "this is the consumer's lag in records.",
    ["consumer"],
    multiprocess_mode="max",
)
FEED_RECORDS = Counter(
    "tessera_feed_records_total",
    "Change-feed records a consumer handled.",
    ["consumer"],
)


def record_peer_call(service: str, method: str, code: str, seconds: float) -> None:
    """Count one finished call to a peer (`service` its full gRPC name)."""
    handled = _peer_handled.get((service, method, code))
    if handled is None:
        handled = _peer_handled[service, method, code] = PEER_CALLS.labels(service, method, code)
    handled.inc()
    handling = _peer_handling.get((service, method))
    if handling is None:
        handling = _peer_handling[service, method] = PEER_SECONDS.labels(service, method)
    handling.observe(seconds)


DECIDES_DEGRADED = Counter(
    "tessera_decide_degraded_total",
    "Decide calls answered without a peer (profiles, segments, experiments) that was down or "
    "too slow, or without definitions of it this replica has not loaded: failed open, with "
    "the reason on each decision.",
    ["peer"],
)


def count_degraded(peer: str) -> None:
    """Count one Decide that went on without `peer`."""
    DECIDES_DEGRADED.labels(peer).inc()


def count_lookups(kind: str, hits: int, misses: int) -> None:
    """Count definition lookups of `kind` in a replica's cache."""
    if hits:
        DEFINITION_LOOKUPS.labels(kind, "hit").inc(hits)
    if misses:
        DEFINITION_LOOKUPS.labels(kind, "miss").inc(misses)


def serve(host: str, port: int) -> None:
    """Serve /metrics on `host:port` from a background thread; port 0 serves nothing."""
    if port:
        start_http_server(port, addr=host.strip("[]"))
