"""IdentifyStream through the generated client: each message answered as Identify would be."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest
from support import ServerThread

from tessera.common.v1 import common_pb2
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

pytestmark = pytest.mark.integration

Stub = profiles_pb2_grpc.ProfileServiceStub


def identity(kind: str) -> common_pb2.Identity:
    return common_pb2.Identity(type=kind, value=uuid.uuid4().hex)


def ask(*identities: common_pb2.Identity) -> profiles_pb2.IdentifyRequest:
    return profiles_pb2.IdentifyRequest(identities=identities, channel=common_pb2.CHANNEL_WEB)


def streamed(
    profiles: Stub, requests: list[profiles_pb2.IdentifyRequest]
) -> dict[int, profiles_pb2.IdentifyStreamResponse]:
    """Every request on one stream, ids 100, 101, ...; the answers by request_id."""
    messages = [
        profiles_pb2.IdentifyStreamRequest(request_id=100 + n, request=request)
        for n, request in enumerate(requests)
    ]
    answers = {a.request_id: a for a in profiles.IdentifyStream(iter(messages), timeout=10)}
    assert sorted(answers) == [m.request_id for m in messages]
    return answers


def shape(reply: profiles_pb2.IdentifyResponse) -> tuple[object, ...]:
    """What Identify answered, without the ids that differ between two visitors."""
    return (
        reply.created,
        len(reply.merged_profile_ids),
        sorted(i.type for i in reply.profile.identities),
        [(r.identity.type, r.reason, bool(r.profile_id)) for r in reply.refused_identities],
    )


def test_identify_stream__known_visitor__same_profile_as_unary_identify(profiles: Stub) -> None:
    cookie, user = identity("cookie"), identity("user_id")
    unary = profiles.Identify(ask(cookie, user))

    answer = streamed(profiles, [ask(cookie, user)])[100]

    assert answer.WhichOneof("result") == "response"
    assert answer.response.profile.profile_id == unary.profile.profile_id
    assert shape(answer.response) == (False, 0, ["cookie", "user_id"], [])


def test_identify_stream__login_merge_and_refused_identity__answered_as_unary(
    profiles: Stub,
) -> None:
    # The same story twice with fresh identities: once unary, once streamed.
    def story(identify: object) -> list[tuple[object, ...]]:
        anonymous, user, tablet, child = (
            identity("cookie"),
            identity("user_id"),
            identity("device"),
            identity("user_id"),
        )
        profiles.Identify(ask(anonymous))
        profiles.Identify(ask(user, tablet))
        assert callable(identify)
        merged, refused = identify([ask(anonymous, user), ask(tablet, child)])
        return [shape(merged), shape(refused)]

    def by_unary(requests: list[profiles_pb2.IdentifyRequest]) -> list[object]:
        return [profiles.Identify(r) for r in requests]

    def by_stream(requests: list[profiles_pb2.IdentifyRequest]) -> list[object]:
        # One at a time, so the merge is done before the second is asked.
        return [streamed(profiles, [r])[100].response for r in requests]

    expected = story(by_unary)
    assert expected[0][1] == 1  # the login merged the anonymous profile
    assert expected[1][3] and "2 user_id identities" in str(expected[1][3])
    assert story(by_stream) == expected


def test_identify_stream__bad_message__its_error_names_the_field_and_the_stream_goes_on(
    profiles: Stub,
) -> None:
    good = ask(identity("cookie"))
    nul = ask(common_pb2.Identity(type="cookie", value="a\x00b"))
    empty = profiles_pb2.IdentifyRequest(channel=common_pb2.CHANNEL_WEB)

    answers = streamed(profiles, [nul, good, empty, good])

    assert answers[100].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[100].error.field == "identities[0].value"
    assert answers[100].error.message == "identities[0].value: must not contain a NUL character"
    assert answers[102].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[102].error.field == "identities"
    assert answers[101].response.profile.profile_id
    assert answers[103].response.profile.profile_id == answers[101].response.profile.profile_id


def test_identify_stream__many_in_flight__each_answered_by_its_id(profiles: Stub) -> None:
    cookies = [identity("cookie") for _ in range(40)]
    ids = {c.value: profiles.Identify(ask(c)).profile.profile_id for c in cookies}

    answers = streamed(profiles, [ask(c) for c in cookies])

    for n, cookie in enumerate(cookies):
        assert answers[100 + n].response.profile.profile_id == ids[cookie.value]


def test_identify_stream__server_drains__pending_answered_then_unavailable(
    store_env: dict[str, str],
) -> None:
    settings = {k.removeprefix("TESSERA_").lower(): v for k, v in store_env.items()}
    own_profiles = ServerThread(lambda: ProfilesService(ProfilesSettings(**settings))).start()
    sent = threading.Event()
    release = threading.Event()

    def requests() -> Iterator[profiles_pb2.IdentifyStreamRequest]:
        yield profiles_pb2.IdentifyStreamRequest(request_id=1, request=ask(identity("cookie")))
        sent.set()
        release.wait(10)  # the stream stays open, as the decision service keeps it

    with own_profiles.channel() as channel:
        stream = profiles_pb2_grpc.ProfileServiceStub(channel).IdentifyStream(
            requests(), timeout=10
        )
        first = next(stream)
        assert first.request_id == 1 and first.response.profile.profile_id
        stopper = threading.Thread(target=own_profiles.stop)
        stopper.start()
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        release.set()
        stopper.join(10)

    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert sent.is_set()
