"""EstimateSize on real servers: the projection kept from the profile feed.

Profile and segment services on a PostgreSQL database of this module's own
(so the projection holds only the profiles written here) and Redis, driven
through the generated clients. The projection must agree with per-profile
evaluation, survive restarts of either service, and honour erasures, also
in the snapshot it stores.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from support import ServerThread, field_of

from tessera.common.v1 import common_pb2
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.segments.domain.projection import Projection
from tessera.segments.server import SegmentsService, SegmentsSettings
from tessera.segments.storage.projection import ProjectionPart
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

RULE = 'trait.country == "FR" and count(purchase, within=30d) >= 1'


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    name = f"tessera_sizing_{uuid.uuid4().hex[:12]}"
    base, _ = postgres_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(url: str, store_env: dict[str, str]) -> dict[str, Any]:
    return {
        "database_url": url,
        "redis_url": store_env["TESSERA_REDIS_URL"],
        "key_prefix": store_env["TESSERA_KEY_PREFIX"] + uuid.uuid4().hex[:6] + ":",
    }


def _profiles(env: dict[str, Any], port: int = 0) -> ServerThread:
    return ServerThread(lambda: ProfilesService(ProfilesSettings(**env)), port).start()


def _segments(env: dict[str, Any], profiles: ServerThread) -> ServerThread:
    settings = {
        **env,
        "profiles_address": profiles.address,
        "projection_erasure_snapshot_s": 0.05,
    }
    return ServerThread(lambda: SegmentsService(SegmentsSettings(**settings))).start()


def _person(
    profiles: profiles_pb2_grpc.ProfileServiceStub,
    traits: dict[str, Any],
    purchases: list[tuple[int, float]] = (),  # type: ignore[assignment]
) -> str:
    cookie = common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)
    profile_id = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[cookie])).profile
    profile_id = profile_id.profile_id
    request = profiles_pb2.UpdateTraitsRequest(profile_id=profile_id)
    request.traits.update(traits)
    profiles.UpdateTraits(request)
    for days_ago, revenue in purchases:
        event = common_pb2.Event(
            event_id=uuid.uuid4().hex,
            profile_id=profile_id,
            type="purchase",
            channel=common_pb2.CHANNEL_WEB,
        )
        event.timestamp.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago))
        event.properties.update({"revenue": revenue, "category": "kitchen"})
        profiles.Track(profiles_pb2.TrackRequest(event=event))
    return profile_id


def _settled(
    segments: segments_pb2_grpc.SegmentServiceStub,
    request: segments_pb2.EstimateSizeRequest,
    total: int,
    timeout: float = 20,
) -> segments_pb2.EstimateSizeResponse:
    """EstimateSize once the projection holds `total` profiles and stopped moving."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        try:
            reply = segments.EstimateSize(request, timeout=5)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                raise
            reply = None
        if reply is not None and reply.total == total:
            if previous is not None and previous.as_of_sequence == reply.as_of_sequence:
                return reply
            previous = reply
        else:
            previous = None
        assert time.monotonic() < deadline, f"projection did not reach {total} profiles: {reply}"
        time.sleep(0.3)


def test_estimate_size__live_services__agrees_with_evaluate_segments(
    url: str, store_env: dict[str, str]
) -> None:
    env = _env(url, store_env)
    profiles_server = _profiles(env)
    segments_server = _segments(env, profiles_server)
    try:
        with profiles_server.channel() as p, segments_server.channel() as s:
            profiles = profiles_pb2_grpc.ProfileServiceStub(p)
            segments = segments_pb2_grpc.SegmentServiceStub(s)
            people = [
                _person(profiles, {"country": "FR"}, [(1, 30.0), (3, 20.0)]),
                _person(profiles, {"country": "FR"}, [(45, 99.0)]),
                _person(profiles, {"country": "FR"}),
                _person(profiles, {"country": "BE"}, [(2, 10.0)]),
                _person(profiles, {"country": "FR", "plan": "pro"}, [(0, 5.0)]),
            ]
            segments.CreateSegment(
                segments_pb2.CreateSegmentRequest(
                    segment=segments_pb2.Segment(
                        key="fr-buyers", name="French buyers", rule=segments_pb2.Rule(text=RULE)
                    )
                )
            )
            by_key = _settled(
                segments, segments_pb2.EstimateSizeRequest(segment_key="fr-buyers"), 5
            )
            inline = segments.EstimateSize(
                segments_pb2.EstimateSizeRequest(
                    rule=segments_pb2.Rule(
                        json_logic='{"and": [{"segment": "fr-buyers"}, '
                        '{">": [{"sum": ["purchase", "revenue", "7d"]}, 20]}]}'
                    ),
                    goal_event_type="purchase",
                    window_days=7,
                )
            )
            evaluated = [
                segments.EvaluateSegments(
                    segments_pb2.EvaluateSegmentsRequest(profile_id=profile_id)
                ).segment_keys
                for profile_id in people
            ]
    finally:
        segments_server.stop()
        profiles_server.stop()

    assert by_key.members == sum("fr-buyers" in keys for keys in evaluated) == 2
    assert (by_key.total, by_key.fraction) == (5, 0.4)
    # Goal purchase within 30 days (the default): both members bought; 30 + 20 + 5.
    assert (by_key.goal_event_type, by_key.window_days) == ("purchase", 30)
    assert (by_key.converters, by_key.conversion_rate) == (2, 1.0)
    assert by_key.revenue == 55.0
    assert by_key.revenue_per_member == 27.5
    assert inline.members == 1  # only the first spent more than 20 in 7 days
    assert (inline.converters, inline.revenue) == (1, 50.0)
    assert not by_key.left_out


def test_estimate_size__restarts_and_erasure__resumes_from_snapshot_and_forgets_the_person(
    url: str, store_env: dict[str, str]
) -> None:
    env = _env(url, store_env)
    profiles_server = _profiles(env)
    segments_server = _segments(env, profiles_server)
    request = segments_pb2.EstimateSizeRequest(rule=segments_pb2.Rule(text=RULE))
    try:
        with profiles_server.channel() as p:
            profiles = profiles_pb2_grpc.ProfileServiceStub(p)
            kept = _person(profiles, {"country": "FR"}, [(1, 10.0)])
            erased = _person(profiles, {"country": "FR", "name": "Ada"}, [(2, 12.0)])
        with segments_server.channel() as s:
            before = _settled(segments_pb2_grpc.SegmentServiceStub(s), request, 2)
        segments_server.stop()  # stores a last snapshot

        # The profile service restarts too, on the same port; then a new person.
        port = int(profiles_server.address.rsplit(":", 1)[1])
        profiles_server.stop()
        profiles_server = _profiles(env, port)
        segments_server = _segments(env, profiles_server)
        with segments_server.channel() as s:
            segments = segments_pb2_grpc.SegmentServiceStub(s)
            resumed = _settled(segments, request, 2)
            with profiles_server.channel() as p:
                profiles = profiles_pb2_grpc.ProfileServiceStub(p)
                _person(profiles, {"country": "FR"}, [(0, 1.0)])
                after_new = _settled(segments, request, 3)
                profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=erased))
            after_erasure = _settled(segments, request, 2)
            stored = _stored_projection(url, after_erasure.as_of_sequence)
    finally:
        segments_server.stop()
        profiles_server.stop()

    assert (before.members, resumed.members, after_new.members) == (2, 2, 3)
    assert resumed.as_of_sequence >= before.as_of_sequence
    assert after_erasure.members == 2
    assert stored.total == 2
    assert erased not in stored.index and kept in stored.index
    assert "Ada" not in stored.traits["name"].values


def _stored_projection(url: str, position: int, timeout: float = 10) -> Projection:
    """The snapshot in the segment tables once it covers `position`."""
    from sqlalchemy import create_engine, select

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as connection:
                table = ProjectionPart.__table__  # type: ignore[attr-defined]
                parts = connection.execute(select(table.c.data).order_by(table.c.part)).all()
            if parts:
                projection = Projection.from_bytes(b"".join(p.data for p in parts))
                if projection.position >= position:
                    return projection
            assert time.monotonic() < deadline, "no snapshot stored after the erasure"
            time.sleep(0.1)
    finally:
        engine.dispose()


def test_estimate_size__bad_requests__invalid_argument_naming_the_field(
    url: str, store_env: dict[str, str]
) -> None:
    env = _env(url, store_env)
    profiles_server = _profiles(env)
    segments_server = _segments(env, profiles_server)
    rule = segments_pb2.Rule(text='trait.country == "FR"')
    bad = {
        "target": segments_pb2.EstimateSizeRequest(),
        "rule.text": segments_pb2.EstimateSizeRequest(rule=segments_pb2.Rule(text="trait. ==")),
        "rule": segments_pb2.EstimateSizeRequest(rule=segments_pb2.Rule(text='segment("nowhere")')),
        "goal_event_type": segments_pb2.EstimateSizeRequest(rule=rule, goal_event_type="Buy!"),
        "window_days": segments_pb2.EstimateSizeRequest(rule=rule, window_days=401),
    }
    codes: dict[str, tuple[Any, str]] = {}
    try:
        with segments_server.channel() as s:
            segments = segments_pb2_grpc.SegmentServiceStub(s)
            for name, request in bad.items():
                try:
                    segments.EstimateSize(request, timeout=5)
                except grpc.RpcError as error:
                    codes[name] = (error.code(), field_of(error))  # type: ignore[attr-defined]
            try:
                segments.EstimateSize(segments_pb2.EstimateSizeRequest(segment_key="nope"))
            except grpc.RpcError as error:
                missing = error.code()  # type: ignore[attr-defined]
    finally:
        segments_server.stop()
        profiles_server.stop()

    for name in bad:
        assert codes[name][0] == grpc.StatusCode.INVALID_ARGUMENT, name
        assert codes[name][1].startswith(name), codes[name]
    assert missing == grpc.StatusCode.NOT_FOUND


def test_estimate_size__projection_turned_off__failed_precondition_naming_the_setting(
    url: str, store_env: dict[str, str]
) -> None:
    env = _env(url, store_env)
    profiles_server = _profiles(env)
    settings = {**env, "profiles_address": profiles_server.address, "projection": False}
    segments_server = ServerThread(lambda: SegmentsService(SegmentsSettings(**settings))).start()
    try:
        with segments_server.channel() as s, pytest.raises(grpc.RpcError) as raised:
            segments_pb2_grpc.SegmentServiceStub(s).EstimateSize(
                segments_pb2.EstimateSizeRequest(rule=segments_pb2.Rule(text="true")),
                timeout=5,
            )
    finally:
        segments_server.stop()
        profiles_server.stop()

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "TESSERA_PROJECTION=false" in raised.value.details()  # type: ignore[attr-defined]
