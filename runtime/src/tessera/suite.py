"""The whole suite as four processes: for `tessera up`, end-to-end tests and the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_ORDER = ("profiles", "segments", "experiments", "decision")

RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 200),
]
"""A starting server is tried every 0.1-0.2 s, not after gRPC's 1 s, 1.6 s, 2.6 s..."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_serving(
    address: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> bool:
    """True once the health service at `address` answers SERVING.

    False at the deadline, or at once when `process` (the server) has exited.
    """
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address, options=RECONNECT_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                return False
            try:
                # types-grpcio-health-checking's HealthStub declares no methods.
                # wait_for_ready: the call itself drives the connect. A fail-fast
                # call returns at once while the channel connects, and without
                # gRPC's EventEngine client nothing else drives it but a
                # backup poller every 5 s (tessera.grpc_setup).
                reply = stub.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return False


def stop_processes(
    processes: Mapping[str, subprocess.Popen[bytes]], grace_s: float
) -> dict[str, int]:
    """SIGTERM every process at once, give each the drain time, kill what is left.

    Returns each one's exit code by name.
    """
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes: dict[str, int] = {}
    for name, process in processes.items():
        try:
            codes[name] = process.wait(grace_s + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            codes[name] = process.wait()
    return codes


@dataclass
class Suite:
    """Four running service processes and where they listen."""

    addresses: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    grace_s: float = 5.0
    metrics: dict[str, str] = field(default_factory=dict)
    """Where each service serves its Prometheus metrics."""
    env: dict[str, str] = field(default_factory=dict)
    """The environment the services were started with (ports included)."""
    stdout: int | None = None

    def exited(self) -> str | None:
        """The name of a service whose process has exited, if any."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> dict[str, int]:
        """SIGTERM every service, wait for the drain, return the exit codes."""
        return stop_processes(self.processes, self.grace_s)

    def stop_one(self, name: str) -> int:
        """SIGTERM one service and wait for its drain; its exit code."""
        return stop_processes({name: self.processes[name]}, self.grace_s)[name]

    def start_one(self, name: str, timeout_s: float = 60.0) -> None:
        """Start one service again, on its port and settings, and wait until it is SERVING."""
        self.processes[name] = _serve(name, self.env, self.stdout)
        if not wait_serving(self.addresses[name], timeout_s, self.processes[name]):
            raise RuntimeError(f"{name} did not come back at {self.addresses[name]}")


def _serve(name: str, env: Mapping[str, str], stdout: int | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", "serve", name],
        env=dict(env),
        # A session of its own: Ctrl-C in the terminal reaches only
        # `tessera up`, which stops the services with one SIGTERM each.
        start_new_session=True,
        stdout=stdout,
        stderr=stdout,
    )


def start_suite(
    env: Mapping[str, str] | None = None,
    *,
    free_ports: bool = False,
    timeout_s: float = 60.0,
    stdout: int | None = None,
) -> Suite:
    """Start the four services as processes and wait until all are SERVING.

    `env` adds TESSERA_* settings to this process's environment; with
    `free_ports` each service gets a free port instead of its default.
    """
    full_env = {**os.environ, **(env or {})}
    if free_ports:
        for name in START_ORDER:
            full_env[f"TESSERA_{name.upper()}_PORT"] = str(free_port())
            full_env[f"TESSERA_{name.upper()}_METRICS_PORT"] = str(free_port())
    for name in START_ORDER:
        port = full_env.get(f"TESSERA_{name.upper()}_PORT")
        if port and not full_env.get(f"TESSERA_{name.upper()}_ADDRESS"):
            full_env[f"TESSERA_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    from tessera.settings import RuntimeSettings

    keys = {
        k[len("TESSERA_") :].lower(): v for k, v in full_env.items() if k.startswith("TESSERA_")
    }
    settings = RuntimeSettings(**keys)  # type: ignore[arg-type]
    suite = Suite(
        {name: settings.address_of(name) for name in START_ORDER},
        grace_s=settings.grace_period_s,
        metrics={
            name: f"http://127.0.0.1:{settings.metrics_port_of(name)}/metrics"
            for name in START_ORDER
            if settings.metrics_port_of(name)
        },
        env=full_env,
        stdout=stdout,
    )
    try:
        for name in START_ORDER:
            suite.processes[name] = _serve(name, full_env, stdout)
            if not wait_serving(suite.addresses[name], timeout_s, suite.processes[name]):
                code = suite.processes[name].poll()
                why = f"exited with {code}" if code is not None else "did not become SERVING"
                raise RuntimeError(f"{name} {why} at {suite.addresses[name]}")
    except BaseException:
        suite.stop()
        raise
    return suite
