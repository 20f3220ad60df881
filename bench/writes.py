"""CPU per tracked event in the profile service's write path, in process.

`python -m bench.writes` builds the stores the profile service runs on
(embedded SQLite in a temporary directory and the in-process hot store, or
`--url` for another database), creates `--profiles` profiles with a cookie
each, then hands `track_batch` (what TrackStream writes for each batch of a
stream) `--batches` batches of `--batch` product views, as the benchmark's
track-stream target sends them (each event for the next profile, every
event new), running the feed's sequencer after each batch as a kick would.

It prints the CPU time of this process per event (time.process_time: every
thread, so PostgreSQL's driver work too, not the server's), for the whole
step and for each store call in it, and `record_events` alone. CPU time is
steadier than wall time on a shared machine; still take the lowest of a
few rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.seed import track_event
from tessera import db, migrations
from tessera.hot import MemoryHotStore
from tessera.profiles.application import Stores, Tracked, identify, track_batch
from tessera.profiles.domain.model import EventData, IdentityKey
from tessera.profiles.storage.feed import FeedStore
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore
from tessera.profiles.transport import convert

Spent = dict[str, float]


def _timed(spent: Spent, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, adding its CPU time to `spent[name]`."""
    if asyncio.iscoroutinefunction(fn):

        async def timed_async(*args: Any) -> Any:
            started = time.process_time()
            try:
                return await fn(*args)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - started

        return timed_async

    def timed(*args: Any) -> Any:
        started = time.process_time()
        try:
            return fn(*args)
        finally:
            spent[name] = spent.get(name, 0.0) + time.process_time() - started

    return timed


async def measure(url: str, profiles: int, batches: int, batch: int, rounds: int) -> None:
    database = db.Database(url)
    migrations.upgrade(database.engine, "profiles")
    store = ProfileStore(database)
    stores = Stores(store, SessionStore(MemoryHotStore()))
    feed = FeedStore(database)
    tag = uuid.uuid4().hex[:8]
    cookies = [f"{tag}-{n}" for n in range(profiles)]
    for cookie in cookies:
        await identify(stores, [IdentityKey("cookie", cookie)])
    feed.sequence()
    spent: Spent = {}
    store.owners = _timed(spent, "owners", store.owners)  # type: ignore[method-assign]
    store.record_events = _timed(spent, "record_events", store.record_events)  # type: ignore[method-assign]
    store.mark_applied = _timed(spent, "mark_applied", store.mark_applied)  # type: ignore[method-assign]
    stores.sessions.apply_many = _timed(spent, "apply_many", stores.sessions.apply_many)  # type: ignore[method-assign]
    sequence = _timed(spent, "sequence", feed.sequence)

    def events(round_: int) -> list[list[EventData]]:
        now = dt.datetime.now(dt.UTC)
        return [
            [
                convert.event_from_proto(
                    track_event(cookies[(b * batch + k) % profiles], f"{tag}-{round_}-{b}-{k}"),
                    now,
                )
                for k in range(batch)
            ]
            for b in range(batches)
        ]

    async def one_round(round_: int) -> float:
        todo = events(round_)
        spent.clear()
        started = time.process_time()
        for taken in todo:
            outcomes = await track_batch(stores, taken)
            assert all(isinstance(o, Tracked) and not o.duplicate for o in outcomes)
            sequence()
        return time.process_time() - started

    total = batches * batch
    await one_round(0)  # warm-up: compiled statements, caches
    for round_ in range(1, rounds + 1):
        step = await one_round(round_)
        parts = " ".join(f"{name} {1e6 * cpu / total:.1f}" for name, cpu in spent.items())
        print(f"round {round_}: {1e6 * step / total:.1f} CPU us per event ({parts})")
    todo = events(rounds + 1)
    owners = [store.owners({k for e in taken for k in e.identities}) for taken in todo]
    started = time.process_time()
    for taken, found in zip(todo, owners, strict=True):
        store.record_events(taken, [found[e.identities[0]] for e in taken])
    alone = time.process_time() - started
    print(f"record_events alone: {1e6 * alone / total:.1f} CPU us per event")
    database.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--profiles", type=int, default=300, help="profiles the events go to")
    parser.add_argument("--batches", type=int, default=60, help="batches per round")
    parser.add_argument("--batch", type=int, default=100, help="events per batch")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as data:
        url = args.url or f"sqlite:///{data}/profiles.db"
        asyncio.run(measure(url, args.profiles, args.batches, args.batch, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
