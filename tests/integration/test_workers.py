"""Several workers of one service on one port: connections spread, metrics merged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tessera.common.v1 import common_pb2
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.suite import free_port, wait_serving

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def established_on(pid: int, port: int) -> int:
    """TCP connections process `pid` holds whose local port is `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and local_port == port and fields[9] in inodes:
                count += 1
    return count


def test_serve__two_workers__connections_spread_and_metrics_merged(store_env: dict[str, str]):
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        **store_env,
        "TESSERA_WORKERS": "2",
        "TESSERA_PROFILES_PORT": str(port),
        "TESSERA_PROFILES_METRICS_PORT": str(metrics_port),
        "TESSERA_DATA_DIR": tempfile.mkdtemp(prefix="tessera-workers-"),
    }
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", "serve", "profiles"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    channels: list[grpc.Channel] = []
    try:
        assert wait_serving(f"127.0.0.1:{port}", 60, supervisor)
        workers = children_of(supervisor.pid)
        # One connection per channel: no subchannel shared between them.
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{port}", [("grpc.use_local_subchannel_pool", 1)])
            for _ in range(24)
        ]
        for index, channel in enumerate(channels):
            profiles_pb2_grpc.ProfileServiceStub(channel).Identify(
                profiles_pb2.IdentifyRequest(
                    identities=[common_pb2.Identity(type="cookie", value=f"worker-{index}")]
                ),
                timeout=10,
            )
        spread = [established_on(worker, port) for worker in workers]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        for channel in channels:
            channel.close()
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(30)

    identified = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels.get("grpc_method") == "Identify"
        and sample.labels.get("grpc_code") == "OK"
    )
    assert len(workers) == 2
    assert sum(spread) == 24
    assert min(spread) >= 1, spread
    assert identified == 24
    assert code == 0


def test_serve__two_workers_on_embedded_stores__refused_naming_the_setting(tmp_path: Path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("TESSERA_")} | {
        "TESSERA_WORKERS": "2",
        "TESSERA_DATA_DIR": str(tmp_path),
    }

    result = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "serve", "profiles"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert "workers: several workers need the shared stores" in result.stderr
