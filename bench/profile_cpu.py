"""CPU the profile service spends per read, measured in process, and idle with followers.

`python -m bench.profile_cpu calls` builds the profile servicer on an
embedded database (a temporary SQLite file, the in-process hot store),
identifies `--profiles` cookie visitors (traits on every other one, a few
tracked events with a purchase on every third, so sessions, histories and
interests are there too), then makes `--calls` calls of each kind, one at a
time, and prints the CPU time (`time.process_time`) per call in µs, best
and median of `--rounds` rounds:

- **identify**: `Identify` of a known visitor, the servicer alone;
- **stream**: one IdentifyStream message (the servicer's per-message path,
  counted in the metrics as Decide's stream sends it);
- **get_identity** / **get_id**: `GetProfile` by identity and by profile id;
- **edge_identify** / **edge_get**: the same through the runtime's edge as a
  server runs it (`ErrorInterceptor`: decode, guard, gate, metrics), from
  request bytes to response bytes. gRPC's own transport is not in it.

`python -m bench.profile_cpu idle` serves the profile service in a child
process (embedded stores), attaches `--followers` StreamEvents followers
with no writes going on, and prints the CPU the server process spent per
second over `--seconds` (user + system, from /proc/<pid>/stat). Linux only.

CPU per call is steadier than latency on a shared machine; it still varies
by a few percent from run to run, so compare medians of a few runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bench.proc import cpu_seconds
from tessera import db, guard, migrations, server
from tessera.common.v1 import common_pb2
from tessera.hot import MemoryHotStore
from tessera.profiles.server import ProfilesSettings
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore
from tessera.profiles.transport.servicer import ProfileServicer
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc


def _cookie(index: int) -> common_pb2.Identity:
    return common_pb2.Identity(type="cookie", value=f"cpu-{index:05d}")


def _event(index: int, number: int, kind: str) -> common_pb2.Event:
    event = common_pb2.Event(
        event_id=f"cpu-{index}-{number}",
        identities=[_cookie(index)],
        channel=common_pb2.CHANNEL_WEB,
        type=kind,
    )
    event.timestamp.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5 - number))
    properties: dict[str, Any] = {"category": "juicers", "product_id": f"j-{index % 7}"}
    if kind == "purchase":
        properties["revenue"] = 120.0
    if kind == "add_to_cart":
        properties.update(quantity=1, price=60.0)
    event.properties.update(properties)
    return event


class _Context:
    """What the edge reads of a server context on a call that succeeds."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def code(self) -> None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str, **_: Any) -> None:
        raise AssertionError(f"aborted: {code} {details}")


async def _edge(servicer: ProfileServicer, method: str) -> Callable[[bytes], Awaitable[bytes]]:
    """A unary method as a server runs it, from request bytes to response bytes."""
    handlers: dict[str, Any] = {}

    class _Server:
        def add_generic_rpc_handlers(self, generic: Any) -> None:
            for handler in generic:
                handlers.update(handler._method_handlers)

        def add_registered_method_handlers(self, _: str, __: Any) -> None:
            pass

    profiles_pb2_grpc.add_ProfileServiceServicer_to_server(servicer, _Server())  # type: ignore[arg-type]
    interceptor = server.ErrorInterceptor(guard.Limits(), server.Gate())

    class _Details:
        pass

    details = _Details()
    details.method = method  # type: ignore[attr-defined]

    async def continuation(_: Any) -> Any:
        return handlers[method]

    handler = await interceptor.intercept_service(continuation, details)  # type: ignore[arg-type]
    assert handler is not None and handler.unary_unary is not None
    behaviour: Any = handler.unary_unary
    serialize = handler.response_serializer
    assert serialize is not None
    context = _Context()

    async def call(data: bytes) -> bytes:
        return serialize(await behaviour(data, context))

    return call


async def _seed(servicer: ProfileServicer, count: int) -> list[str]:
    ids = []
    for index in range(count):
        reply = await servicer.Identify(
            profiles_pb2.IdentifyRequest(
                identities=[_cookie(index)], channel=common_pb2.CHANNEL_WEB
            ),
            None,  # type: ignore[arg-type]
        )
        ids.append(reply.profile.profile_id)
        if index % 2 == 0:
            patch = profiles_pb2.UpdateTraitsRequest(profile_id=reply.profile.profile_id)
            patch.traits.update({"tier": "gold", "_variant:exp-hero": "b"})
            await servicer.UpdateTraits(patch, None)  # type: ignore[arg-type]
        if index % 3 == 0:
            kinds = ["page_view", "product_view", "add_to_cart", "purchase", "page_view"]
            for number, kind in enumerate(kinds):
                await servicer.Track(
                    profiles_pb2.TrackRequest(event=_event(index, number, kind)),
                    None,  # type: ignore[arg-type]
                )
    return ids


async def _rounds(
    name: str, call: Callable[[int], Awaitable[Any]], calls: int, rounds: int
) -> None:
    for i in range(min(calls, 500)):  # warm: caches, first compilations
        await call(i)
    per_call = []
    for _ in range(rounds):
        started = time.process_time()
        for i in range(calls):
            await call(i)
        per_call.append((time.process_time() - started) / calls * 1e6)
    print(
        f"{name:14s} best {min(per_call):7.1f} µs  median {statistics.median(per_call):7.1f} µs"
        f"  ({calls} calls x {rounds})",
        flush=True,
    )


async def measure_calls(profiles: int, calls: int, rounds: int, only: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = db.open_database(ProfilesSettings(data_dir=folder), "profiles")
        migrations.upgrade(database.engine, "profiles")
        servicer = ProfileServicer(ProfileStore(database), SessionStore(MemoryHotStore()))
        ids = await _seed(servicer, profiles)
        identify = [
            profiles_pb2.IdentifyRequest(identities=[_cookie(i)], channel=common_pb2.CHANNEL_WEB)
            for i in range(profiles)
        ]
        by_identity = [profiles_pb2.GetProfileRequest(identity=_cookie(i)) for i in range(profiles)]
        by_id = [profiles_pb2.GetProfileRequest(profile_id=p) for p in ids]
        stream = [
            profiles_pb2.IdentifyStreamRequest(request_id=i, request=r)
            for i, r in enumerate(identify)
        ]
        edge_identify = await _edge(servicer, "/tessera.profiles.v1.ProfileService/Identify")
        edge_get = await _edge(servicer, "/tessera.profiles.v1.ProfileService/GetProfile")
        identify_bytes = [r.SerializeToString() for r in identify]
        get_bytes = [r.SerializeToString() for r in by_identity]
        kinds: dict[str, Callable[[int], Awaitable[Any]]] = {
            "identify": lambda i: servicer.Identify(identify[i % profiles], None),  # type: ignore[arg-type]
            "stream": lambda i: servicer._identify_timed(stream[i % profiles]),
            "get_identity": lambda i: servicer.GetProfile(by_identity[i % profiles], None),  # type: ignore[arg-type]
            "get_id": lambda i: servicer.GetProfile(by_id[i % profiles], None),  # type: ignore[arg-type]
            "edge_identify": lambda i: edge_identify(identify_bytes[i % profiles]),
            "edge_get": lambda i: edge_get(get_bytes[i % profiles]),
        }
        for name, call in kinds.items():
            if not only or name in only:
                await _rounds(name, call, calls, rounds)
        database.dispose()


def measure_idle(followers: int, seconds: float) -> None:
    from tessera.suite import free_port

    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        env = {
            **os.environ,
            "TESSERA_DATA_DIR": folder,
            "TESSERA_PROFILES_PORT": str(port),
            "TESSERA_PROFILES_METRICS_PORT": "0",
            "TESSERA_LOG_LEVEL": "WARNING",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "serve", "profiles"], env=env
        )
        try:
            asyncio.run(_idle(process.pid, f"127.0.0.1:{port}", followers, seconds))
        finally:
            process.terminate()
            process.wait(10)


async def _idle(pid: int, address: str, followers: int, seconds: float) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = profiles_pb2_grpc.ProfileServiceStub(channel)
        await stub.Identify(
            profiles_pb2.IdentifyRequest(identities=[_cookie(0)], channel=common_pb2.CHANNEL_WEB)
        )
        streams = [
            stub.StreamEvents(profiles_pb2.StreamEventsRequest(after=0, include_profiles=True))
            for _ in range(followers)
        ]
        for stream in streams:  # the profile record of the visitor above
            await asyncio.wait_for(stream.read(), 10)
        await asyncio.sleep(1.0)
        before, started = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        spent, elapsed = cpu_seconds(pid) - before, time.monotonic() - started
        for stream in streams:
            stream.cancel()
    print(
        f"idle, {followers} followers: {1000 * spent / elapsed:.1f} ms CPU per second "
        f"({spent:.2f} s over {elapsed:.1f} s)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_cpu", description=__doc__)
    modes = parser.add_subparsers(dest="mode", required=True)
    calls = modes.add_parser("calls", help="CPU per call, in process")
    calls.add_argument("--profiles", type=int, default=300)
    calls.add_argument("--calls", type=int, default=3000)
    calls.add_argument("--rounds", type=int, default=5)
    calls.add_argument("--only", nargs="*", default=[], help="kinds to measure (default: all)")
    idle = modes.add_parser("idle", help="CPU of an idle server with followers")
    idle.add_argument("--followers", type=int, default=3)
    idle.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.mode == "calls":
        asyncio.run(measure_calls(args.profiles, args.calls, args.rounds, args.only))
    else:
        measure_idle(args.followers, args.seconds)


if __name__ == "__main__":
    main()
