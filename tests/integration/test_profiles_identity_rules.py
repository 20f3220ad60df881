"""Identity resolution rules on PostgreSQL and Redis, through the generated client.

The service runs with the documented defaults: at most one user_id per
profile, 20 cookies, 10 devices; user_id outranks every other type.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tessera.common.v1 import common_pb2
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

pytestmark = pytest.mark.integration

Stub = profiles_pb2_grpc.ProfileServiceStub


def identity(kind: str) -> common_pb2.Identity:
    return common_pb2.Identity(type=kind, value=uuid.uuid4().hex)


def identify(profiles: Stub, *identities: common_pb2.Identity) -> profiles_pb2.IdentifyResponse:
    reply: profiles_pb2.IdentifyResponse = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=identities)
    )
    return reply


def held(reply: profiles_pb2.IdentifyResponse, kind: str) -> set[str]:
    return {i.value for i in reply.profile.identities if i.type == kind}


def held_of(profile: profiles_pb2.Profile, kind: str) -> set[str]:
    return {i.value for i in profile.identities if i.type == kind}


def code_of_lookup(profiles: Stub, key: common_pb2.Identity) -> str:
    try:
        profiles.GetProfile(profiles_pb2.GetProfileRequest(identity=key))
    except grpc.RpcError as error:
        return error.code().name  # type: ignore[attr-defined,no-any-return]
    return "OK"


def test_identify__21st_cookie_for_a_user__refused_with_the_limit(profiles: Stub) -> None:
    user = identity("user_id")
    for _ in range(20):
        identify(profiles, user, identity("cookie"))
    extra = identity("cookie")

    reply = identify(profiles, user, extra)

    assert len(held(reply, "cookie")) == 20 and extra.value not in held(reply, "cookie")
    (refused,) = reply.refused_identities
    assert (refused.identity.type, refused.identity.value) == ("cookie", extra.value)
    assert refused.reason == "the profile holds 20 cookie identities already; the limit is 20"
    assert refused.profile_id == ""
    assert code_of_lookup(profiles, extra) == "NOT_FOUND"


def test_identify__shared_tablet_with_second_user__attaches_to_first_and_merges_nobody(
    profiles: Stub,
) -> None:
    tablet, parent, child = identity("device"), identity("user_id"), identity("user_id")
    first = identify(profiles, tablet, parent)

    second = identify(profiles, tablet, child)

    assert second.profile.profile_id != first.profile.profile_id
    assert list(second.merged_profile_ids) == []
    assert held(second, "user_id") == {child.value} and held(second, "device") == set()
    (refused,) = second.refused_identities
    assert refused.identity.value == tablet.value
    assert refused.profile_id == first.profile.profile_id
    assert "2 user_id identities" in refused.reason
    by_tablet = profiles.GetProfile(profiles_pb2.GetProfileRequest(identity=tablet)).profile
    assert by_tablet.profile_id == first.profile.profile_id
    assert held_of(by_tablet, "user_id") == {parent.value}


def test_identify__cookie_of_one_user_with_another_user_id__user_id_wins_whatever_the_order(
    profiles: Stub,
) -> None:
    cookie, alice, bob = identity("cookie"), identity("user_id"), identity("user_id")
    identify(profiles, cookie, alice)
    bobs = identify(profiles, bob).profile

    # The cookie comes first in the request; the user_id still decides.
    reply = identify(profiles, cookie, bob)

    assert reply.profile.profile_id == bobs.profile_id
    assert [(r.identity.type, r.identity.value) for r in reply.refused_identities] == [
        ("cookie", cookie.value)
    ]
    assert list(reply.merged_profile_ids) == []


def test_identify__anonymous_visitor_logs_in__profiles_merge(profiles: Stub) -> None:
    cookie, user = identity("cookie"), identity("user_id")
    anonymous = identify(profiles, cookie).profile
    known = identify(profiles, user).profile

    reply = identify(profiles, cookie, user)

    assert {reply.profile.profile_id, *reply.merged_profile_ids} == {
        anonymous.profile_id,
        known.profile_id,
    }
    assert list(reply.refused_identities) == []


def test_identify__kiosk_seen_with_50_user_ids__50_profiles_not_one(profiles: Stub) -> None:
    kiosk = identity("device")
    users = [identity("user_id") for _ in range(50)]

    replies = [identify(profiles, kiosk, user) for user in users]

    profile_ids = {r.profile.profile_id for r in replies}
    assert len(profile_ids) == 50
    assert all(len(held(r, "user_id")) == 1 for r in replies)
    assert sum(not r.refused_identities for r in replies) == 1  # the first took the kiosk
    assert all(list(r.merged_profile_ids) == [] for r in replies)


def test_identify__kiosk_with_50_user_ids_at_once__50_profiles_kiosk_on_one(
    profiles: Stub,
) -> None:
    kiosk = identity("device")
    users = [identity("user_id") for _ in range(50)]

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda user: identify(profiles, kiosk, user), users))

    finals = [
        profiles.GetProfile(profiles_pb2.GetProfileRequest(identity=user)).profile for user in users
    ]
    assert len({p.profile_id for p in finals}) == 50
    assert all(len(held_of(p, "user_id")) == 1 for p in finals)
    assert sum(kiosk.value in held_of(p, "device") for p in finals) == 1
    assert all(list(r.merged_profile_ids) == [] for r in replies)


def test_identify__30_new_cookies_for_one_user_at_once__exactly_20_kept(profiles: Stub) -> None:
    user = identity("user_id")
    identify(profiles, user)
    cookies = [identity("cookie") for _ in range(30)]

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda cookie: identify(profiles, user, cookie), cookies))

    final = profiles.GetProfile(profiles_pb2.GetProfileRequest(identity=user)).profile
    assert len(held_of(final, "cookie")) == 20
    assert sum(len(r.refused_identities) for r in replies) == 10


def test_track__kiosk_event_with_a_new_user_id__lands_on_that_users_profile(
    profiles: Stub,
) -> None:
    kiosk, first, second = identity("device"), identity("user_id"), identity("user_id")
    firsts = identify(profiles, kiosk, first).profile
    event = common_pb2.Event(
        event_id=uuid.uuid4().hex, identities=[kiosk, second], type="page_view"
    )

    tracked = profiles.Track(profiles_pb2.TrackRequest(event=event))

    seconds = profiles.GetProfile(profiles_pb2.GetProfileRequest(identity=second)).profile
    assert tracked.profile_id == seconds.profile_id != firsts.profile_id
    assert seconds.session.page_views == 1
