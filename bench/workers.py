"""Worker scaling: one service's throughput with one worker process, then two.

`TESSERA_WORKERS=N` runs N processes of one service on one port
(SO_REUSEPORT; `tessera.workers`), so a replica uses N cores. This measures
the profile service's GetProfile, closed loop, from a load generator of its
own processes, first against one worker, then against two, on the same
PostgreSQL database and Redis (several workers need the shared stores), and
prints both throughputs, their ratio, and the echo floor of the same run.

    python -m bench.workers                   5 s per level, concurrency 32
    python -m bench.workers --quick           a smoke run
    python -m bench.workers --workers 1,2,4   more worker counts

The stores: TESSERA_BENCH_DATABASE_URL (a PostgreSQL server where a database
of the run's own is created and dropped; default the test server,
postgresql://postgres@127.0.0.1:5432/test) and TESSERA_BENCH_REDIS_URL
(default redis://127.0.0.1:6379/0; keys under a prefix of the run's own,
deleted at the end). See bench/README.md ("Worker scaling").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import report, seed
from bench.load import EVALUATE, LoadPool
from bench.run import RESULTS_DIR, echo_server
from bench.stats import LevelSummary
from tessera.suite import free_port, stop_processes, wait_serving

SERVICE_OF = {EVALUATE: "segments", "get-profile": "profiles"}
"""Each target and the service whose workers it measures."""
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument(
        "--targets",
        default=",".join(SERVICE_OF),
        help=f"comma-separated, of {', '.join(SERVICE_OF)}",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per level")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop calls in flight")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="connections per load process (the kernel gives each to one worker)",
    )
    parser.add_argument("--profiles", type=int, default=500, help="seeded profiles")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each call, s")
    parser.add_argument("--quick", action="store_true", help="~1 s levels, 100 profiles")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.profiles = 1.0, 0.3, 100
    args.worker_counts = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers needs positive integers")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.targets or set(args.targets) - set(SERVICE_OF):
        parser.error(f"--targets: expected a comma-separated subset of {', '.join(SERVICE_OF)}")
    return args


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def stores() -> Iterator[dict[str, str]]:
    """TESSERA_* settings for a PostgreSQL database and a Redis prefix of this run's own."""
    import psycopg
    import redis

    admin_url = os.environ.get("TESSERA_BENCH_DATABASE_URL", DEFAULT_DATABASE)
    redis_url = os.environ.get("TESSERA_BENCH_REDIS_URL", DEFAULT_REDIS)
    name = f"tessera_bench_{uuid.uuid4().hex[:12]}"
    prefix = f"tessera-bench-{uuid.uuid4().hex[:12]}:"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).ping()
    except (psycopg.OperationalError, redis.ConnectionError) as error:
        raise SystemExit(
            f"several workers need PostgreSQL and Redis ({error}); start them (see "
            "tests/conftest.py) or set TESSERA_BENCH_DATABASE_URL and TESSERA_BENCH_REDIS_URL"
        ) from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "TESSERA_DATABASE_URL": f"{admin_url.rsplit('/', 1)[0]}/{name}",
            "TESSERA_REDIS_URL": redis_url,
            "TESSERA_KEY_PREFIX": prefix,
        }
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@contextlib.contextmanager
def service(
    name: str, env: dict[str, str], workers: int, log_dir: str, **extra: str
) -> Iterator[str]:
    """`tessera serve <name>` with `workers` workers on a free port; yield its address."""
    port = free_port()
    log_path = Path(log_dir) / f"{name}-{workers}w-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "serve", name],
            env={
                **os.environ,
                **env,
                "TESSERA_WORKERS": str(workers),
                f"TESSERA_{name.upper()}_PORT": str(port),
                f"TESSERA_{name.upper()}_METRICS_PORT": "0",
                "TESSERA_DATA_DIR": log_dir,
                "TESSERA_LOG_LEVEL": "WARNING",
                **extra,
            },
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    address = f"127.0.0.1:{port}"
    try:
        if not wait_serving(address, 60, process):
            raise RuntimeError(f"{name} with {workers} workers did not serve; see {log_path}")
        yield address
    finally:
        codes = stop_processes({name: process}, 15)
        if codes.get(name, 0) != 0:
            _say(f"{name} with {workers} workers exited with {codes[name]}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Echo, then each target at each worker count: the summaries and the scaling."""
    pool = LoadPool(args.processes)
    levels: list[LevelSummary] = []
    scaling: dict[str, dict[int, float | None]] = {}
    common: dict[str, Any] = {
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "requests": None,
        "max_s": args.duration,
        "timeout_s": args.timeout,
    }
    try:
        with echo_server() as echo:
            levels.append(pool.run("echo", echo, args.concurrency, payload_bytes=64, **common))
        with (
            stores() as env,
            tempfile.TemporaryDirectory(prefix="tessera-bench-") as logs,
            service("profiles", env, 1, logs) as profiles,
        ):
            _say(f"seeding {args.profiles} profiles and {seed.RULE_SEGMENTS} segments ...")
            seeded = asyncio.run(seed.seed_profiles(profiles, args.profiles, "w"))
            cookies = [p.cookie for p in seeded]
            for target in args.targets:
                name = SERVICE_OF[target]
                by_workers: dict[int, LevelSummary] = {}
                for workers in args.worker_counts:
                    peer = {"TESSERA_PROFILES_ADDRESS": profiles}
                    with service(name, env, workers, logs, **peer) as address:
                        if target == EVALUATE:
                            asyncio.run(seed.seed_rule_segments(address))
                        _say(f"{target}, {workers} worker(s) ...")
                        summary = pool.run(
                            target,
                            address,
                            args.concurrency,
                            cookies=cookies,
                            connections=args.connections,
                            **common,
                        )
                    by_workers[workers] = summary
                    levels.append(summary)
                base = by_workers[args.worker_counts[0]].throughput_rps
                scaling[target] = {
                    w: (s.throughput_rps / base if base else None) for w, s in by_workers.items()
                }
    finally:
        pool.close()
    return {"levels": levels, "scaling": scaling, "workers": args.worker_counts}


def format_table(measured: dict[str, Any]) -> str:
    """The levels, one row each: throughput over the first worker count and over echo."""
    echo, *runs = measured["levels"]
    lines = [
        f"{'target':<19}{'workers':>8}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'x first':>9}{'x echo':>8}",
        f"{'echo':<19}{'':>8}{echo.throughput_rps:>10.0f}{echo.p50_ms or 0:>9.2f}"
        f"{echo.p99_ms or 0:>9.2f}{echo.errors:>8}{'':>9}{1:>8.2f}",
    ]
    workers = iter(measured["workers"] * len(measured["scaling"]))
    for summary in runs:
        count = next(workers)
        scaling = measured["scaling"][summary.target][count]
        over_echo = summary.throughput_rps / echo.throughput_rps if echo.throughput_rps else 0
        lines.append(
            f"{summary.target:<19}{count:>8}{summary.throughput_rps:>10.0f}"
            f"{summary.p50_ms or 0:>9.2f}{summary.p99_ms or 0:>9.2f}{summary.errors:>8}"
            f"{scaling or 0:>9.2f}{over_echo:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    measured = measure(args)
    print(
        f"\nWorker scaling: concurrency {args.concurrency} from {args.processes} "
        f"load processes x {args.connections} connections, {args.duration:g} s per level, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(format_table(measured))
    document = {
        "kind": "workers",
        "started": started.isoformat(),
        "machine": report.machine_info(),
        "options": {k: v for k, v in vars(args).items() if k != "worker_counts"},
        "levels": [summary.to_dict() for summary in measured["levels"]],
        "scaling": {
            target: {str(k): v for k, v in by_workers.items()}
            for target, by_workers in measured["scaling"].items()
        },
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"workers-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    failed = any(summary.errors for summary in measured["levels"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
