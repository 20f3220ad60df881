"""Several worker processes of one service on one port (TESSERA_WORKERS=N).

A Python process serves one core. Where a replica has several, it runs N
workers of the same service, each a process with its own event loop, all
bound to the same port with SO_REUSEPORT, so the kernel spreads incoming
connections over them. This process supervises them: it serves the merged
Prometheus metrics of all workers (prometheus-client's multiprocess mode),
passes SIGTERM and SIGINT on so that each drains as a single server would,
and stops them all if one dies, so the orchestrator restarts the replica
whole rather than running it short of a worker.

Workers share nothing in memory, so they need the shared stores: several
workers are refused on the embedded default (the in-process hot store would
split sessions between them).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from tessera.errors import FailedPrecondition
from tessera.settings import RuntimeSettings
from tessera.suite import stop_processes

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def check_shared_stores(settings: RuntimeSettings) -> None:
    """Refuse several workers on stores that live inside one process."""
    if settings.workers > 1 and not (settings.database_url and settings.redis_url):
        raise FailedPrecondition(
            "several workers need the shared stores: set TESSERA_DATABASE_URL and "
            "TESSERA_REDIS_URL (the embedded SQLite file and in-process hot store "
            "belong to one process)",
            field="workers",
        )


def supervise(name: str, settings: RuntimeSettings) -> int:
    """Run `settings.workers` workers of service `name` until SIGTERM or SIGINT."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    check_shared_stores(settings)
    metrics_dir = tempfile.mkdtemp(prefix=f"tessera-{name}-metrics-")
    env = {
        **os.environ,
        MULTIPROC_ENV: metrics_dir,
        # The supervisor serves the metrics of all workers; a worker serves none.
        f"TESSERA_{name.upper()}_METRICS_PORT": "0",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "serve", name, "--worker"],
            env=env,
            # Signals come from this supervisor only, one SIGTERM each.
            start_new_session=True,
        )
        for _ in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.metrics_port_of(name):
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
        start_http_server(
            settings.metrics_port_of(name), addr=settings.host.strip("[]"), registry=registry
        )
    code = 0
    try:
        while not stopping:
            if any(worker.poll() is not None for worker in workers):
                print(f"a worker of {name} exited; stopping the others", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    finally:
        codes = stop_processes(
            {f"worker-{i}": w for i, w in enumerate(workers)}, settings.grace_period_s
        )
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if any(exit_code != 0 for exit_code in codes.values()):
        code = 1
    return code
