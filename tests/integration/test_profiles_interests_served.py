"""Category interest through the generated client, on PostgreSQL and Redis (docs/interests.md)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from google.protobuf import timestamp_pb2

from tessera.common.v1 import common_pb2
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

pytestmark = pytest.mark.integration

Stub = profiles_pb2_grpc.ProfileServiceStub


def track(
    profiles: Stub, visitor: common_pb2.Identity, kind: str, at: dt.datetime, **properties: object
) -> None:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    event = common_pb2.Event(
        event_id=uuid.uuid4().hex, identities=[visitor], type=kind, timestamp=stamp
    )
    event.properties.update(properties)
    profiles.Track(profiles_pb2.TrackRequest(event=event))


def test_interests__two_profiles_merge__worked_example_of_the_docs(profiles: Stub) -> None:
    now = dt.datetime.now(dt.UTC)
    laptop = common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)
    phone = common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)
    # On the laptop: a washing machine 14 days ago, coffee four times up to 45 days ago.
    track(profiles, laptop, "purchase", now - dt.timedelta(days=14), category="washing_machines")
    for days in (135, 105, 75, 45):
        track(profiles, laptop, "purchase", now - dt.timedelta(days=days), category="coffee")
    # On the phone, now: three juicers.
    for _ in range(3):
        track(profiles, phone, "product_view", now, category="juicers", product_id="j-1")

    merged = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[laptop, phone]))

    interests = [(i.category, i.score) for i in merged.profile.features.interests]
    assert [category for category, _ in interests] == ["juicers", "coffee"]
    assert interests[0][1] == 9.0
    assert interests[1][1] == pytest.approx(4 * 2**-1.5, abs=1e-6)
