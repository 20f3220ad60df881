"""Change feed latency: from a Track's acknowledgement to a follower's receipt.

Starts two replicas of the profile service (`tessera serve profiles`, each a
process of its own) on one database and Redis, follows StreamEvents live on
both, and has `--writers` threads Track events through the first replica. A
follower on the writing replica is woken by that replica's own sequencer
runs; a follower on the other replica finds records by polling
(TESSERA_FEED_POLL_S). Prints the latency percentiles of each, and checks
that every acknowledged event arrived exactly once, in strictly increasing
sequence.

    TESSERA_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/feedbench \\
    TESSERA_REDIS_URL=redis://127.0.0.1:6379/0 \\
    .venv/bin/python -m bench.feed --writers 8 --events 250

Use an empty database: the followers start from the feed's current end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc

from tessera.common.v1 import common_pb2
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _replica(prefix: str) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "TESSERA_PROFILES_PORT": str(port),
        "TESSERA_PROFILES_METRICS_PORT": "0",
        "TESSERA_KEY_PREFIX": prefix,
        "TESSERA_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", "serve", "profiles"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening" not in line:
            raise SystemExit(f"profile service did not start: {line!r}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


class _Follower:
    def __init__(self, address: str, after: int) -> None:
        self.channel = grpc.insecure_channel(address)
        stub = profiles_pb2_grpc.ProfileServiceStub(self.channel)
        self.call = stub.StreamEvents(profiles_pb2.StreamEventsRequest(after=after))
        self.received: dict[str, float] = {}
        self.sequences: list[int] = []
        self.duplicates = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for record in self.call:
                now = time.perf_counter()
                self.sequences.append(record.sequence)
                if record.WhichOneof("record") == "event":
                    if record.event.event_id in self.received:
                        self.duplicates += 1
                    self.received.setdefault(record.event.event_id, now)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def _head(address: str) -> int:
    """The feed's current end: read from 0 until quiet."""
    last = 0
    with grpc.insecure_channel(address) as channel:
        stub = profiles_pb2_grpc.ProfileServiceStub(channel)
        try:
            for record in stub.StreamEvents(profiles_pb2.StreamEventsRequest(), timeout=2):
                last = record.sequence
        except grpc.RpcError:
            pass
    return last


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--events", type=int, default=250, help="events per writer")
    args = parser.parse_args(argv)
    prefix = f"tessera-feedbench-{uuid.uuid4().hex[:8]}:"
    with _replica(prefix) as writing, _replica(prefix) as other:
        after = _head(writing)
        local, remote = _Follower(writing, after), _Follower(other, after)
        acked: dict[str, float] = {}
        guard = threading.Lock()

        def writer(_: int) -> None:
            with grpc.insecure_channel(writing) as channel:
                stub = profiles_pb2_grpc.ProfileServiceStub(channel)
                cookie = common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)
                profile_id = stub.Identify(
                    profiles_pb2.IdentifyRequest(identities=[cookie])
                ).profile.profile_id
                for _ in range(args.events):
                    event = common_pb2.Event(
                        event_id=uuid.uuid4().hex, profile_id=profile_id, type="page_view"
                    )
                    stub.Track(profiles_pb2.TrackRequest(event=event))
                    with guard:
                        acked[event.event_id] = time.perf_counter()

        started = time.perf_counter()
        with ThreadPoolExecutor(args.writers) as pool:
            list(pool.map(writer, range(args.writers)))
        elapsed = time.perf_counter() - started
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            acked.keys() <= local.received.keys() and acked.keys() <= remote.received.keys()
        ):
            time.sleep(0.05)
        local.close()
        remote.close()
    print(f"{len(acked)} events from {args.writers} writers in {elapsed:.1f} s")
    ok = True
    for name, follower in (("same replica", local), ("other replica", remote)):
        latencies = [
            (follower.received[i] - t) * 1000 for i, t in acked.items() if i in follower.received
        ]
        missing = len(acked) - len(latencies)
        ordered = all(
            a < b for a, b in zip(follower.sequences, follower.sequences[1:], strict=False)
        )
        ok = ok and not missing and not follower.duplicates and ordered
        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        print(
            f"{name:14} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
            f"  max {max(latencies):6.1f} ms  missing {missing}  duplicates {follower.duplicates}"
            f"  strictly increasing {ordered}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
