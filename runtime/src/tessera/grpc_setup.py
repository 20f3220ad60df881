"""How gRPC's core runs in every Tessera process: import this before `grpc`.

gRPC core reads `GRPC_EXPERIMENTS` once, when `grpc` is first imported, so
the entry points (the `tessera` command, the benchmark, the test suite)
import this module before anything else. A value already in the
environment wins, an empty one included (gRPC's own defaults).

`-event_engine_client,-event_engine_listener` turns off the EventEngine
endpoints that grpcio 1.85 uses by default for client channels and servers.
With them, a message that arrives is read by an EventEngine thread,
handed to one of its workers, then to the completion queue that
`grpc.aio`'s poller thread waits on, and only then to the asyncio loop.
Without them, the poller thread reads the socket itself. Every Tessera
service is one asyncio loop, so the extra hand-offs buy nothing and cost a
thread wake-up each. On this project's 2-core machines (`python -m
bench.hops`), a unary call made 15-16 context switches in the server and
7.5-9 in the client with the EventEngine, 8.7-9.3 and 3.0-3.1 without; in
alternating `python -m bench` runs Decide's rate at concurrency 16 was
0.30-0.36x echo's with it and 0.42-0.61x without (docs/decide.md, "Speed").
"""

from __future__ import annotations

import os

GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
"""Tessera's default for gRPC core's experiments (see the module docstring)."""


def apply(environ: os._Environ[str] | dict[str, str] = os.environ) -> None:
    """Set Tessera's gRPC core defaults in `environ` where the operator has not."""
    environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)


apply()
