"""Where a Decide's time goes: CPU per call in each process, beside echo and Identify.

`python -m bench.cost` starts the echo server and the suite (embedded stores,
as `python -m bench` does), seeds it, visits every profile once, then makes
`--calls` calls one at a time of each kind, twice in turn:

- **echo**: the one-hop floor;
- **decide**: in-process Decide (one hop to the profile service inside);
- **identify**: the profile service's `Identify` alone, as Decide calls it.

For each it prints the median latency and the CPU time each process spent
per call (user + system, from `/proc/<pid>/stat`, so every thread: gRPC's
poller, the database's, the metrics server's), this load generator
included. CPU per call is steadier than latency on a shared machine, and it
says which process pays. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from bench import seed
from bench.proc import cpu_seconds
from bench.run import echo_process
from tessera.bench.v1 import bench_pb2, bench_pb2_grpc
from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2_grpc
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.suite import START_ORDER, start_suite


async def timed(call: Callable[..., Awaitable[Any]], requests: Sequence[Any]) -> float:
    """Make the calls one at a time; the median latency in ms."""
    latencies = []
    for request in requests:
        started = time.perf_counter()
        await call(request, timeout=5)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return 1000 * latencies[len(latencies) // 2]


async def measure(
    addresses: dict[str, str], echo: str, pids: dict[str, int], calls: int, profiles: int
) -> None:
    await seed.seed_definitions(addresses["segments"], addresses["decision"])
    seeded = await seed.seed_profiles(addresses["profiles"], profiles, "cost")
    await seed.wait_until_decides(addresses["decision"], seeded)
    await seed.first_visits(addresses["decision"], addresses["profiles"], seeded)
    cookies = [seeded[i % len(seeded)].cookie for i in range(calls)]
    async with contextlib.AsyncExitStack() as stack:
        channels = {
            name: await stack.enter_async_context(grpc.aio.insecure_channel(address))
            for name, address in (
                ("echo", echo),
                ("decision", addresses["decision"]),
                ("profiles", addresses["profiles"]),
            )
        }
        kinds: dict[str, tuple[Callable[..., Awaitable[Any]], list[Any]]] = {
            "echo": (
                bench_pb2_grpc.EchoServiceStub(channels["echo"]).Echo,
                [bench_pb2.EchoRequest(payload=b"x" * 100)] * calls,
            ),
            "decide": (
                decision_pb2_grpc.DecisionServiceStub(channels["decision"]).Decide,
                [seed.decide_request(c) for c in cookies],
            ),
            "identify": (
                profiles_pb2_grpc.ProfileServiceStub(channels["profiles"]).Identify,
                [
                    profiles_pb2.IdentifyRequest(
                        identities=[common_pb2.Identity(type="cookie", value=c)],
                        channel=common_pb2.CHANNEL_WEB,
                    )
                    for c in cookies
                ],
            ),
        }
        names = list(pids)
        print(f"{'':9} {'p50 ms':>7}   CPU µs per call: " + " ".join(f"{n:>11}" for n in names))
        for _ in range(2):
            for kind, (call, requests) in kinds.items():
                await timed(call, requests[: max(1, calls // 10)])
                before = {n: cpu_seconds(p) for n, p in pids.items()}
                p50 = await timed(call, requests)
                after = {n: cpu_seconds(p) for n, p in pids.items()}
                used = " ".join(f"{1e6 * (after[n] - before[n]) / calls:11.0f}" for n in names)
                print(f"{kind:9} {p50:7.3f}   {'':17}{used}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls of each kind per round")
    parser.add_argument("--profiles", type=int, default=500, help="seeded profiles")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="tessera-cost-") as data_dir,
        echo_process() as (echo, echo_pid),
    ):
        env = {
            "TESSERA_DATA_DIR": data_dir,
            "TESSERA_DATABASE_URL": "",
            "TESSERA_REDIS_URL": "",
            "TESSERA_LOG_LEVEL": "WARNING",
            "TESSERA_EVALUATION": "in_process",
            **{f"TESSERA_{name.upper()}_ADDRESS": "" for name in START_ORDER},
        }
        with (Path(data_dir) / "suite.log").open("wb") as log:
            suite = start_suite(env, free_ports=True, stdout=log.fileno())
            try:
                pids = {name: process.pid for name, process in suite.processes.items()}
                pids.update(echo=echo_pid, load=os.getpid())
                asyncio.run(measure(suite.addresses, echo, pids, args.calls, args.profiles))
            finally:
                suite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
