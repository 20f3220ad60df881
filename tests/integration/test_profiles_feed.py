"""The change feed, export and erasure, through the generated clients, on PostgreSQL and Redis.

The feed's counter and retention are database-wide, so these servers work
in databases of their own, not in the one the other tests share.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session
from support import ServerThread, create_tables, field_of, free_port

from tessera import db
from tessera.common.v1 import common_pb2
from tessera.convert import dict_to_struct, struct_to_dict
from tessera.definitions.watcher import Backoff
from tessera.feed import Cursors, FeedRunner, profile_events, sequence_of
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

pytestmark = pytest.mark.integration

Stub = profiles_pb2_grpc.ProfileServiceStub
Record = profiles_pb2.StreamEventsResponse


def _create_database(postgres_url: str) -> str:
    name = f"tessera_feed_{uuid.uuid4().hex[:12]}"
    base, _ = postgres_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def _drop_database(url: str) -> None:
    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def feed_url(postgres_url: str) -> Iterator[str]:
    url = _create_database(postgres_url)
    yield url
    _drop_database(url)


@pytest.fixture
def own_url(postgres_url: str) -> Iterator[str]:
    url = _create_database(postgres_url)
    yield url
    _drop_database(url)


def _serve(url: str, store_env: dict[str, str], port: int = 0, **settings: Any) -> ServerThread:
    def build() -> ProfilesService:
        return ProfilesService(
            ProfilesSettings(
                database_url=url,
                redis_url=store_env["TESSERA_REDIS_URL"],
                key_prefix=store_env["TESSERA_KEY_PREFIX"],
                **settings,
            )
        )

    return ServerThread(build, port).start()


@pytest.fixture(scope="module")
def server(feed_url: str, store_env: dict[str, str]) -> Iterator[ServerThread]:
    running = _serve(feed_url, store_env, max_export_page_size=20)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def profiles(server: ServerThread) -> Iterator[Stub]:
    with server.channel() as channel:
        yield Stub(channel)


def cookie() -> common_pb2.Identity:
    return common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)


def new_profile(profiles: Stub, *identities: common_pb2.Identity) -> str:
    request = profiles_pb2.IdentifyRequest(identities=list(identities) or [cookie()])
    return profiles.Identify(request).profile.profile_id


def event(profile_id: str, kind: str = "page_view", **properties: object) -> common_pb2.Event:
    message = common_pb2.Event(
        event_id=uuid.uuid4().hex, profile_id=profile_id, type=kind, channel=common_pb2.CHANNEL_WEB
    )
    message.properties.update(properties)
    return message


def track(profiles: Stub, message: common_pb2.Event) -> str:
    profiles.Track(profiles_pb2.TrackRequest(event=message))
    return message.event_id


class Follower:
    """Reads StreamEvents live in a thread of its own, noting when each record arrived."""

    def __init__(
        self,
        profiles: Stub,
        after: int = 0,
        types: Sequence[str] = (),
        with_profiles: bool = False,
        no_events: bool = False,
    ) -> None:
        request = profiles_pb2.StreamEventsRequest(
            after=after,
            types=list(types),
            include_profiles=with_profiles,
            exclude_events=no_events,
        )
        self.call = profiles.StreamEvents(request, timeout=120)
        self.records: list[tuple[Record, float]] = []
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for record in self.call:
                self.records.append((record, time.monotonic()))
        except grpc.RpcError as error:
            self.error = error

    def event_ids(self) -> list[str]:
        return [r.event.event_id for r, _ in self.records if r.WhichOneof("record") == "event"]

    def wait_for(self, done: Callable[[Follower], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            assert self.error is None or self.error.code() == grpc.StatusCode.CANCELLED, self.error
            assert time.monotonic() < deadline, f"feed did not deliver in {timeout}s"
            time.sleep(0.02)

    def close(self) -> list[Record]:
        self.call.cancel()
        self._thread.join(10)
        return [r for r, _ in self.records]


def test_stream_events__eight_concurrent_writers__follower_gets_every_acked_event_once_in_order(
    profiles: Stub, server: ServerThread
) -> None:
    follower = Follower(profiles)
    acked: set[str] = set()
    guard = threading.Lock()

    def writer(number: int) -> None:
        with server.channel() as channel:
            stub = Stub(channel)
            profile_id = new_profile(stub)
            for _ in range(6):
                batch = [event(profile_id, "product_view", category="c") for _ in range(10)]
                if number % 2:  # half the writers use Track, half TrackStream
                    done = [track(stub, e) for e in batch]
                else:
                    counts = stub.TrackStream(
                        iter(profiles_pb2.TrackStreamRequest(event=e) for e in batch)
                    )
                    assert counts.accepted == len(batch)
                    done = [e.event_id for e in batch]
                with guard:
                    acked.update(done)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(writer, range(8)))
    follower.wait_for(lambda f: acked <= set(f.event_ids()))
    records = follower.close()

    received = [r.event.event_id for r in records if r.WhichOneof("record") == "event"]
    assert len(acked) == 480
    assert len(received) == len(set(received)), "an event was delivered twice"
    assert acked <= set(received)
    sequences = [r.sequence for r in records]
    assert all(a < b for a, b in itertools.pairwise(sequences))


def test_stream_events__types_filter__only_those_events_with_every_merge(profiles: Stub) -> None:
    web, app = cookie(), cookie()
    older = new_profile(profiles, web)
    newer = new_profile(profiles, app)
    view = track(profiles, event(newer, "page_view"))
    first = track(profiles, event(newer, "purchase", revenue=10.0))
    profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))
    second = track(profiles, event(older, "purchase", revenue=5.0))

    follower = Follower(profiles, types=["purchase"])
    follower.wait_for(lambda f: second in f.event_ids())
    records = follower.close()

    ours = {view, first, second}
    assert [i for i in follower.event_ids() if i in ours] == [first, second]
    assert {r.event.type for r in records if r.WhichOneof("record") == "event"} == {"purchase"}
    merges = [r.merge for r in records if r.WhichOneof("record") == "merge"]
    assert [(m.survivor_profile_id, m.merged_profile_id) for m in merges] == [(older, newer)]


def test_stream_events__exclude_events__merges_and_deletions_only(profiles: Stub) -> None:
    web, app, other = cookie(), cookie(), cookie()
    older = new_profile(profiles, web)
    newer = new_profile(profiles, app)
    track(profiles, event(newer, "purchase", revenue=10.0))
    profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))
    erased = new_profile(profiles, other)
    track(profiles, event(erased, "page_view"))
    profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=erased))

    follower = Follower(profiles, no_events=True)
    follower.wait_for(
        lambda f: any(
            r.WhichOneof("record") == "deletion" and r.deletion.profile_id == erased
            for r, _ in f.records
        )
    )
    records = follower.close()

    assert {r.WhichOneof("record") for r in records} == {"merge", "deletion"}
    assert (older, newer) in [
        (r.merge.survivor_profile_id, r.merge.merged_profile_id)
        for r in records
        if r.WhichOneof("record") == "merge"
    ]


def test_stream_events__exclude_events_with_types__invalid_argument_names_types(
    profiles: Stub,
) -> None:
    request = profiles_pb2.StreamEventsRequest(exclude_events=True, types=["purchase"])
    with pytest.raises(grpc.RpcError) as raised:
        list(profiles.StreamEvents(request, timeout=5))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == "types"


def test_stream_events__negative_after__invalid_argument_names_after(profiles: Stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(profiles.StreamEvents(profiles_pb2.StreamEventsRequest(after=-1), timeout=5))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == "after"


def test_delete_profile__on_the_feed__erasure_record_with_merged_ids_and_events_gone(
    profiles: Stub,
) -> None:
    web, app = cookie(), cookie()
    person = new_profile(profiles, web)
    merged = new_profile(profiles, app)
    mine = [track(profiles, event(person)), track(profiles, event(merged, "search", query="x"))]
    profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))
    live = Follower(profiles)
    live.wait_for(lambda f: set(mine) <= set(f.event_ids()))

    profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=person))

    live.wait_for(lambda f: any(r.deletion.profile_id == person for r, _ in f.records))
    erasure = next(r for r in live.close() if r.deletion.profile_id == person)
    assert list(erasure.deletion.merged_profile_ids) == [merged]
    replay = Follower(profiles)
    replay.wait_for(lambda f: any(r.sequence >= erasure.sequence for r, _ in f.records))
    replayed = replay.close()
    assert not set(mine) & set(replay.event_ids())
    assert not [r for r in replayed if r.merge.merged_profile_id == merged]
    assert [r.sequence for r in replayed if r.deletion.profile_id == person] == [erasure.sequence]


def test_export_profile__paged__every_event_once_first_page_has_profile_and_hashed_email(
    profiles: Stub,
) -> None:
    address = f"export-{uuid.uuid4().hex[:8]}@example.com"
    web, mail = cookie(), common_pb2.Identity(type="email", value=address)
    user = common_pb2.Identity(type="user_id", value=uuid.uuid4().hex)
    person = new_profile(profiles, web, mail)
    merged_in = new_profile(profiles, user)
    stored = [track(profiles, event(merged_in, "page_view")) for _ in range(2)]
    profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, user]))
    stored += [track(profiles, event(person, "purchase", revenue=3.0, category="tea"))]
    stored += [track(profiles, event(person, "page_view")) for _ in range(40)]

    pages = []
    token = ""
    while True:
        page = profiles.ExportProfile(
            profiles_pb2.ExportProfileRequest(profile_id=person, page_size=1000, page_token=token)
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            break

    first = pages[0]
    assert first.profile.profile_id == person
    assert [len(p.events) for p in pages] == [20, 20, 3]  # the service's limit is 20
    assert [e.event_id for p in pages for e in p.events] == stored
    assert list(first.alias_profile_ids) == [merged_in]
    assert all(not p.HasField("profile") for p in pages[1:])
    exported = {i.type: i for i in first.identities}
    assert exported["email"].hashed is True
    assert exported["email"].value.startswith("sha256:")
    assert address not in str(first)
    assert exported["email"].hash_method
    assert exported["cookie"].hashed is False
    assert first.history.orders == 1
    assert dict(first.history.category_purchases) == {"tea": 1}


def test_export_profile__merged_profile__aliases_and_its_events_included(profiles: Stub) -> None:
    web, app = cookie(), cookie()
    person = new_profile(profiles, web)
    merged = new_profile(profiles, app)
    events = [track(profiles, event(merged)), track(profiles, event(person))]
    profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))

    page = profiles.ExportProfile(
        profiles_pb2.ExportProfileRequest(profile_id=merged, page_size=10)
    )

    assert page.profile.profile_id == person
    assert list(page.alias_profile_ids) == [merged]
    assert [e.event_id for e in page.events] == events
    assert {e.profile_id for e in page.events} == {person}
    assert page.next_page_token == ""


def test_export_profile__token_not_issued__invalid_argument_names_page_token(
    profiles: Stub,
) -> None:
    person = new_profile(profiles)

    with pytest.raises(grpc.RpcError) as raised:
        profiles.ExportProfile(
            profiles_pb2.ExportProfileRequest(profile_id=person, page_token="bm90LWEtdG9rZW4=")
        )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == "page_token"


# The shared consumer runner, with a test consumer that notes every event id
# it handles in its own table, in the cursor's transaction.

SEEN = "feedtest_seen"


class RunnerThread:
    """A FeedRunner on an event loop of its own, following `address` into `url`'s tables."""

    def __init__(self, address: str, url: str) -> None:
        self.database = db.Database(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.cursors = Cursors(self.database, "feedtest")
        create_tables(self.database.engine, self.cursors.tables)
        with self.database.engine.begin() as connection:
            connection.execute(text(f"CREATE TABLE IF NOT EXISTS {SEEN} (event_id TEXT)"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def begin() -> tuple[grpc.aio.Channel, FeedRunner[Any]]:
            channel = grpc.aio.insecure_channel(address)
            runner: FeedRunner[Any] = FeedRunner(
                "test-consumer",
                self.cursors,
                profile_events(channel),
                sequence_of,
                in_transaction=self.note,
                backoff=Backoff(initial_s=0.05, max_s=0.2),
            )
            runner.start()
            return channel, runner

        self.channel, self.runner = asyncio.run_coroutine_threadsafe(begin(), self._loop).result(10)

    @staticmethod
    def note(records: Sequence[Any], session: Session) -> None:
        for record in records:
            if record.WhichOneof("record") == "event":
                session.execute(
                    text(f"INSERT INTO {SEEN} (event_id) VALUES (:id)"),
                    {"id": record.event.event_id},
                )

    def seen(self) -> list[str]:
        with self.database.engine.connect() as connection:
            return list(connection.execute(text(f"SELECT event_id FROM {SEEN}")).scalars())

    def wait_seen(self, wanted: Sequence[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not set(wanted) <= set(self.seen()):
            assert time.monotonic() < deadline, "the runner did not handle every event"
            time.sleep(0.05)

    def stop(self) -> None:
        async def end() -> None:
            await self.runner.stop()
            await self.channel.close()

        asyncio.run_coroutine_threadsafe(end(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.database.dispose()


def test_feed_runner__follower_and_profile_service_restart__every_event_handled_once(
    profiles: Stub, feed_url: str, store_env: dict[str, str]
) -> None:
    port = free_port()
    replica = _serve(feed_url, store_env, port)  # a second replica: writes go to the first
    runner = RunnerThread(replica.address, feed_url)
    person = new_profile(profiles)
    try:
        before = [track(profiles, event(person)) for _ in range(5)]
        runner.wait_seen(before)
        runner.stop()  # the follower restarts
        while_away = [track(profiles, event(person)) for _ in range(5)]
        runner = RunnerThread(replica.address, feed_url)
        runner.wait_seen(while_away)
        replica.stop()  # the profile service it follows restarts
        while_down = [track(profiles, event(person)) for _ in range(5)]
        replica = _serve(feed_url, store_env, port)
        runner.wait_seen(while_down)
        seen = runner.seen()
        stored_cursor = runner.cursors.load("test-consumer")
        position = runner.runner.position
    finally:
        runner.stop()
        replica.stop()

    assert len(seen) == len(set(seen)), "an event was handled twice"
    assert set(before + while_away + while_down) <= set(seen)
    assert stored_cursor == position > 0


def test_stream_events__cursor_older_than_retention__failed_precondition_then_runner_resumes(
    own_url: str, store_env: dict[str, str]
) -> None:
    server = _serve(own_url, store_env)
    with server.channel() as channel:
        person = new_profile(Stub(channel))
        purged = [track(Stub(channel), event(person)) for _ in range(3)]
    server.stop()
    server = _serve(own_url, store_env, event_retention_days=1e-9, event_purge_interval_s=0.05)
    try:
        with server.channel() as channel:
            deadline = time.monotonic() + 10
            while True:
                try:
                    list(
                        Stub(channel).StreamEvents(
                            profiles_pb2.StreamEventsRequest(after=0), timeout=0.5
                        )
                    )
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                        refused = error
                        break
                assert time.monotonic() < deadline, "retention purged nothing"
    finally:
        server.stop()
    server = _serve(own_url, store_env)
    runner = RunnerThread(server.address, own_url)
    try:
        with server.channel() as channel:
            kept = track(Stub(channel), event(person))
        runner.wait_seen([kept])
        seen = runner.seen()
    finally:
        runner.stop()
        server.stop()

    assert field_of(refused) == "after"
    # Purged: the profile's snapshot record (1) and the three events (2 to 4).
    assert "oldest sequence still held is 5" in (refused.details() or "")
    assert seen == [kept]
    assert not set(purged) & set(seen)


def test_stream_events__embedded_sqlite__same_feed_live(tmp_path: Path) -> None:
    server = ServerThread(lambda: ProfilesService(ProfilesSettings(data_dir=str(tmp_path)))).start()
    try:
        with server.channel() as channel:
            profiles = Stub(channel)
            follower = Follower(profiles)
            web, app = cookie(), cookie()
            person, other = new_profile(profiles, web), new_profile(profiles, app)
            sent = [track(profiles, event(person)), track(profiles, event(other))]
            follower.wait_for(lambda f: len(f.records) == 2)
            profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))
            follower.wait_for(lambda f: len(f.records) == 3)
            profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=person))
            follower.wait_for(lambda f: any(r.deletion.profile_id for r, _ in f.records))
            records = follower.close()
    finally:
        server.stop()

    kinds = [r.WhichOneof("record") for r in records]
    assert kinds == ["event", "event", "merge", "deletion"]
    assert [r.event.event_id for r in records[:2]] == sent
    # 1, 2 and 6 are profile records (the two new profiles, the survivor
    # after the merge), served only to a follower that asks for them.
    assert [r.sequence for r in records] == [3, 4, 5, 7]


def test_feed_runner__records_handled__head_position_and_count_in_the_metrics(
    server: ServerThread, profiles: Stub, feed_url: str
) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    handled_before = sample("tessera_feed_records_total", consumer="test-consumer")
    runner = RunnerThread(server.address, feed_url)
    person = new_profile(profiles)
    try:
        tracked = [track(profiles, event(person)) for _ in range(3)]
        runner.wait_seen(tracked)
        position = runner.runner.position
        checkpointed = sample("tessera_feed_consumer_sequence", consumer="test-consumer")
        handled = sample("tessera_feed_records_total", consumer="test-consumer")
        head = sample("tessera_feed_head_sequence")
    finally:
        runner.stop()

    assert checkpointed == position > 0
    assert handled >= handled_before + 3
    # Lag in records, as the dashboard computes it: the head minus the checkpoint.
    assert head >= position


def test_stream_events__include_profiles__traits_and_identity_types_after_each_change(
    tmp_path: Path,
) -> None:
    server = ServerThread(lambda: ProfilesService(ProfilesSettings(data_dir=str(tmp_path)))).start()
    try:
        with server.channel() as channel:
            profiles = Stub(channel)
            follower = Follower(profiles, with_profiles=True)
            web = cookie()
            email = common_pb2.Identity(type="email", value=f"{uuid.uuid4().hex}@example.com")
            older, newer = new_profile(profiles, web), new_profile(profiles, email)
            profiles.UpdateTraits(
                profiles_pb2.UpdateTraitsRequest(
                    profile_id=newer, traits=dict_to_struct({"plan": "pro", "country": "FR"})
                )
            )
            profiles.UpdateTraits(
                profiles_pb2.UpdateTraitsRequest(
                    profile_id=older, traits=dict_to_struct({"plan": "free"})
                )
            )
            profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, email]))
            follower.wait_for(lambda f: len(f.records) == 6)
            records = follower.close()
    finally:
        server.stop()

    kinds = [r.WhichOneof("record") for r in records]
    assert kinds == ["profile", "profile", "profile", "profile", "merge", "profile"]
    assert [r.profile.profile_id for r in records[:2]] == [older, newer]
    assert records[1].profile.identity_types == ["email"]
    assert struct_to_dict(records[2].profile.traits) == {"plan": "pro", "country": "FR"}
    # The survivor's state after the merge: its own traits win, identities join.
    last = records[5].profile
    assert last.profile_id == older
    assert struct_to_dict(last.traits) == {"plan": "free", "country": "FR"}
    assert list(last.identity_types) == ["cookie", "email"]
