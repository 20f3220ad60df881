"""How gRPC's core runs in a process that serves: call `for_serving` before `grpc` loads.

gRPC core reads `GRPC_EXPERIMENTS` once, when `grpc` is first imported, so
the entry points that serve (`tessera serve NAME`, which is how `tessera up`,
the containers and the benchmark start every service, and the benchmark's
echo server) call `for_serving` before anything else. A value already in the
environment wins, an empty one included (gRPC's own defaults).

`-event_engine_client,-event_engine_listener` turns off the EventEngine
endpoints that grpcio 1.85 uses by default for client channels and servers.
With them, a message that arrives is read by an EventEngine thread, handed
to one of its workers, then to the completion queue that `grpc.aio`'s poller
thread waits on, and only then to the asyncio loop. Without them, the poller
thread reads the socket itself. Every Tessera service is one asyncio loop,
so the extra hand-offs buy nothing and cost a thread wake-up each. On this
project's 2-core machines (`python -m bench.hops`), a unary call made 15-16
context switches in the server and 7.5-9 in the client with the EventEngine,
8.7-9.3 and 3.0-3.1 without (docs/decide.md, "Speed").

Only serving processes: a command-line client keeps gRPC's defaults. Without
the EventEngine client, a *synchronous* channel makes progress on a connect
only while a call is waiting on it or when gRPC's backup poller runs (every
5 s, `GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS`), so a loop that polls a
starting server with fail-fast calls and sleeps between them saw it 5 s late.
A `grpc.aio` channel, as the services use to reach their peers, is polled
all the time and does not wait. The one synchronous channel in a service is
the OpenTelemetry exporter's (with TESSERA_OTLP_ENDPOINT): after a collector
restart it may reconnect only on that 5 s poll, and spans it cannot send
meanwhile may be dropped, as they are while a collector is away.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence

GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
"""Tessera's setting of gRPC core's experiments for serving processes."""


def for_serving(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set Tessera's gRPC core setting in `environ` where the operator has not."""
    environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)


def serves(argv: Sequence[str]) -> bool:
    """True when the `tessera` command line `argv` serves a service."""
    return argv[1:2] == ["serve"]
