"""ProfileService on its embedded SQLite file: erasure leaves nothing readable on disk; reads
kept decoded between events still show every event."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from pathlib import Path

import pytest
from support import ServerThread

from tessera.common.v1 import common_pb2
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

pytestmark = pytest.mark.integration


def test_delete_profile__embedded_store__no_identity_trait_or_event_id_left_in_db_or_wal(
    tmp_path: Path,
) -> None:
    mark = uuid.uuid4().hex
    web = common_pb2.Identity(type="cookie", value=f"cookie-{mark}")
    user = common_pb2.Identity(type="user_id", value=f"user-{mark}")
    address = f"someone-{mark}@example.com"
    mail = common_pb2.Identity(type="email", value=address)
    event_ids = [f"event-{mark}-{n}" for n in range(3)]
    server = ServerThread(lambda: ProfilesService(ProfilesSettings(data_dir=str(tmp_path)))).start()
    try:
        with server.channel() as channel:
            profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
            first = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web]))
            profiles.Identify(profiles_pb2.IdentifyRequest(identities=[user, mail]))
            person = profiles.Identify(
                profiles_pb2.IdentifyRequest(identities=[web, user])
            ).profile.profile_id
            traits = profiles_pb2.UpdateTraitsRequest(profile_id=person)
            traits.traits.update({"nickname": f"trait-{mark}"})
            profiles.UpdateTraits(traits)
            for event_id in event_ids:
                sent = common_pb2.Event(event_id=event_id, profile_id=person, type="page_view")
                sent.properties.update({"query": f"search-{mark}"})
                profiles.Track(profiles_pb2.TrackRequest(event=sent))
            # A long-running server has had the person checkpointed into the
            # file itself, not only into the write-ahead log.
            with sqlite3.connect(tmp_path / "profiles.db") as direct:
                direct.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=person))

            files = sorted(tmp_path.glob("profiles.db*"))
            left = {
                f"{path.name}: {needle}"
                for path in files
                for needle in (
                    web.value,
                    user.value,
                    address,
                    hashlib.sha256(address.encode()).hexdigest(),
                    f"trait-{mark}",
                    f"search-{mark}",
                    *event_ids,
                )
                if needle.encode() in path.read_bytes()
            }
    finally:
        server.stop()

    assert first.created
    assert [p.name for p in files][:1] == ["profiles.db"]
    assert left == set()


def _views(profile: profiles_pb2.Profile) -> tuple[int, int, list[int]]:
    """Session events, product views of j-1, and the daily counts of product_view."""
    series = [
        s
        for s in profile.event_history.series
        if s.event_type == "product_view" and not s.filter_property
    ]
    return (
        profile.session.events,
        profile.session.product_views.get("j-1", 0),
        list(series[0].counts) if series else [],
    )


def test_get_profile__embedded_store__read_again_after_each_batch__every_event_shown(
    tmp_path: Path,
) -> None:
    cookie = common_pb2.Identity(type="cookie", value=f"cookie-{uuid.uuid4().hex}")

    def stream(*event_ids: str) -> list[profiles_pb2.TrackStreamRequest]:
        messages = []
        for event_id in event_ids:
            sent = common_pb2.Event(event_id=event_id, identities=[cookie], type="product_view")
            sent.properties.update({"product_id": "j-1", "category": "juicers"})
            messages.append(profiles_pb2.TrackStreamRequest(event=sent))
        return messages

    server = ServerThread(lambda: ProfilesService(ProfilesSettings(data_dir=str(tmp_path)))).start()
    try:
        with server.channel() as channel:
            profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
            profiles.Identify(profiles_pb2.IdentifyRequest(identities=[cookie]))
            read = profiles_pb2.GetProfileRequest(identity=cookie)
            seen = [_views(profiles.GetProfile(read).profile)]
            profiles.TrackStream(iter(stream("e1", "e2")))
            seen += [_views(profiles.GetProfile(read).profile) for _ in range(2)]
            profiles.TrackStream(iter(stream("e2", "e3")))  # e2 again: counted once
            seen += [_views(profiles.GetProfile(read).profile) for _ in range(2)]
    finally:
        server.stop()

    assert seen == [(0, 0, []), (2, 2, [2]), (2, 2, [2]), (3, 3, [3]), (3, 3, [3])]
