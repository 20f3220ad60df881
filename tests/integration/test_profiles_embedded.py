"""ProfileService on its embedded SQLite file: erasure leaves nothing readable on disk."""

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
