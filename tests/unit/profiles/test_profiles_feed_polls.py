"""Who polls the change feed for an idle follower: the sequencer, once for all of them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tessera import db, migrations
from tessera.profiles.domain.model import IdentityKey
from tessera.profiles.feed import Feed
from tessera.profiles.server import ProfilesSettings
from tessera.profiles.storage.feed import FeedRecord, FeedStore
from tessera.profiles.storage.sql import ProfileStore

POLL_S = 0.02


def test_follow__idle_followers__no_reads_until_a_record_then_each_gets_it(
    tmp_path: Path,
) -> None:
    database = db.open_database(ProfilesSettings(data_dir=str(tmp_path)), "profiles")
    migrations.upgrade(database.engine, "profiles")
    profiles = ProfileStore(database)
    other_replica = FeedStore(database)

    async def body() -> None:
        feed = Feed(database, poll_s=POLL_S)
        reads = 0
        read = feed.store.read

        def counted(*args: Any) -> Any:
            nonlocal reads
            reads += 1
            return read(*args)

        feed.store.read = counted  # type: ignore[method-assign, assignment]
        await feed.start()
        received: list[list[FeedRecord]] = [[], [], []]

        async def follow(into: list[FeedRecord]) -> None:
            async for record in feed.follow(0, [], profiles=True):
                into.append(record)

        followers = [asyncio.create_task(follow(into)) for into in received]
        await asyncio.sleep(25 * POLL_S)  # 75 reads when each follower polled for itself
        idle_reads = reads
        # Written as another replica would: no kick reaches this feed; numbered by
        # that replica's run here, or by this feed's own periodic run first.
        profiles.identify([IdentityKey("cookie", "c-anna")])
        other_replica.sequence()
        for _ in range(200):
            if all(received):
                break
            await asyncio.sleep(POLL_S)
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await feed.stop()

        # Each follower's first read, then none while idle (a few more only when
        # a loaded machine held the sequencer's run past two intervals).
        assert 3 <= idle_reads <= 6
        assert [[r.kind for r in into] for into in received] == [["profile"]] * 3

    try:
        asyncio.run(body())
    finally:
        database.dispose()
