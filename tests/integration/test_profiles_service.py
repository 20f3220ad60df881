"""ProfileService on PostgreSQL and Redis, through the generated client."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import psycopg
import pytest
import redis
from support import field_of

from tessera.common.v1 import common_pb2
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

pytestmark = pytest.mark.integration

Stub = profiles_pb2_grpc.ProfileServiceStub


def identity(kind: str, value: str) -> common_pb2.Identity:
    return common_pb2.Identity(type=kind, value=value)


def cookie() -> common_pb2.Identity:
    return identity("cookie", uuid.uuid4().hex)


def event(
    profile_id: str, kind: str, event_id: str | None = None, **properties: object
) -> common_pb2.Event:
    message = common_pb2.Event(
        event_id=event_id or uuid.uuid4().hex,
        profile_id=profile_id,
        type=kind,
        channel=common_pb2.CHANNEL_WEB,
    )
    message.properties.update(properties)
    return message


def test_identify__new_identity__creates_then_resolves_same_profile(profiles: Stub) -> None:
    visitor = cookie()

    first = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[visitor]))
    second = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[visitor]))

    assert first.created is True
    assert second.created is False
    assert second.profile.profile_id == first.profile.profile_id


def test_identify__identities_on_two_profiles__merges_into_older_and_alias_resolves(
    profiles: Stub,
) -> None:
    web, app = cookie(), identity("app_install", uuid.uuid4().hex)
    older = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web])).profile
    newer = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[app])).profile
    profiles.Track(profiles_pb2.TrackRequest(event=event(newer.profile_id, "page_view")))

    merged = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))

    assert merged.profile.profile_id == older.profile_id
    assert list(merged.merged_profile_ids) == [newer.profile_id]
    assert {(i.type, i.value) for i in merged.profile.identities} == {
        (web.type, web.value),
        (app.type, app.value),
    }
    via_alias = profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=newer.profile_id))
    assert via_alias.profile.profile_id == older.profile_id
    assert via_alias.profile.session.page_views == 1  # the merged profile's session came along


def test_identify__email__stored_as_sha256_of_normalised_address(profiles: Stub) -> None:
    address = f"Someone.{uuid.uuid4().hex[:8]}@Example.com"

    reply = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[identity("email", f"  {address} ")])
    )

    expected = "sha256:" + hashlib.sha256(address.lower().encode()).hexdigest()
    assert [i.value for i in reply.profile.identities] == [expected]
    found = profiles.GetProfile(profiles_pb2.GetProfileRequest(identity=identity("email", address)))
    assert found.profile.profile_id == reply.profile.profile_id


def test_track__repeated_event_id__counted_once(profiles: Stub) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    view = event(profile_id, "product_view", category="juicers", product_id="j-1")

    first = profiles.Track(profiles_pb2.TrackRequest(event=view))
    retry = profiles.Track(profiles_pb2.TrackRequest(event=view))

    assert (first.duplicate, retry.duplicate) == (False, True)
    session = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile.session
    assert dict(session.category_views) == {"juicers": 1}
    assert session.events == 1


def test_track__events__next_read_sees_hot_session(profiles: Stub) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    for kind, props in [
        ("page_view", {"category": "juicers", "duration_ms": 1500}),
        ("product_view", {"category": "juicers", "product_id": "j-1"}),
        ("add_to_cart", {"category": "juicers", "product_id": "j-1", "price": 89.0}),
        ("search", {"query": "cold press"}),
    ]:
        profiles.Track(profiles_pb2.TrackRequest(event=event(profile_id, kind, **props)))

    profile = profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=profile_id)).profile

    assert profile.session.page_views == 1
    assert dict(profile.session.category_views) == {"juicers": 2}
    assert [(i.product_id, i.quantity, i.price) for i in profile.session.cart] == [("j-1", 1, 89.0)]
    assert list(profile.session.searches) == ["cold press"]
    assert profile.session.time_spent_ms == 1500
    assert profile.features.interests[0].category == "juicers"


def test_track__purchase__updates_rfm_and_lifetime_value(profiles: Stub) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    for revenue in (120.0, 30.5):
        profiles.Track(
            profiles_pb2.TrackRequest(event=event(profile_id, "purchase", revenue=revenue))
        )

    features = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile.features

    assert features.rfm.frequency == 2
    assert features.lifetime_value == pytest.approx(150.5)
    assert 0 <= features.rfm.recency_days < 0.01


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.ClearField("event_id"), "event.event_id"),
        (lambda e: setattr(e, "type", "Page View"), "event.type"),
        (lambda e: e.properties.update({"revenue": "lots"}), "event.properties.revenue"),
        (lambda e: e.timestamp.FromSeconds(4_000_000_000), "event.timestamp"),
        (lambda e: setattr(e, "channel", 99), "event.channel"),
    ],
)
def test_track__bad_event__invalid_argument_names_field_and_stores_nothing(
    profiles: Stub, mutate: object, field: str
) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    bad = event(profile_id, "page_view")
    mutate(bad)  # type: ignore[operator]

    with pytest.raises(grpc.RpcError) as raised:
        profiles.Track(profiles_pb2.TrackRequest(event=bad))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == field
    session = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile.session
    assert session.events == 0


def test_track__unknown_profile__not_found(profiles: Stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        profiles.Track(profiles_pb2.TrackRequest(event=event("no-such-profile", "page_view")))

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_track_stream__mixed_events__counts_accepted_duplicates_rejected(profiles: Stub) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    repeated = event(profile_id, "page_view")
    stream = [repeated, repeated, event(profile_id, "page_view"), event(profile_id, "BAD TYPE")]

    reply = profiles.TrackStream(profiles_pb2.TrackStreamRequest(event=e) for e in stream)

    assert (reply.accepted, reply.duplicates, reply.rejected) == (2, 1, 1)


def test_track_stream__events_in_one_message__counted_per_event_retry_counted_once(
    profiles: Stub,
) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    repeated = event(profile_id, "page_view")
    messages = [
        profiles_pb2.TrackStreamRequest(
            event=repeated, events=[repeated, event(profile_id, "page_view")]
        ),
        profiles_pb2.TrackStreamRequest(events=[event(profile_id, "BAD TYPE")]),
    ]

    reply = profiles.TrackStream(iter(messages))
    again = profiles.TrackStream(iter(messages))

    assert (reply.accepted, reply.duplicates, reply.rejected) == (2, 1, 1)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 3, 1)
    session = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile.session
    assert session.events == 2


def test_track_stream__message_over_the_limit__each_event_rejected_stream_goes_on(
    profiles: Stub,
) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    too_many = [event(profile_id, "page_view") for _ in range(1001)]  # TESSERA_MAX_REPEATED 1000
    messages = [
        profiles_pb2.TrackStreamRequest(events=too_many),
        profiles_pb2.TrackStreamRequest(events=[event(profile_id, "page_view")]),
    ]

    reply = profiles.TrackStream(iter(messages))

    assert (reply.accepted, reply.duplicates, reply.rejected) == (1, 0, 1001)


def test_update_traits__set_and_remove__merges_into_existing(profiles: Stub) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    first = profiles_pb2.UpdateTraitsRequest(profile_id=profile_id)
    first.traits.update({"country": "FR", "plan": "free"})
    profiles.UpdateTraits(first)
    second = profiles_pb2.UpdateTraitsRequest(profile_id=profile_id)
    second.traits.update({"plan": None, "tier": "gold"})

    traits = profiles.UpdateTraits(second).profile.traits

    assert dict(traits) == {"country": "FR", "tier": "gold"}


def test_identify__no_identities__invalid_argument(profiles: Stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        profiles.Identify(profiles_pb2.IdentifyRequest())

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == "identities"


def test_delete_profile__merged_profile__erases_profile_aliases_identities_events_and_session(
    profiles: Stub, postgres_url: str, redis_url: str, key_prefix: str
) -> None:
    # Two profiles merged into one, so the person has an alias id, two
    # identities and events from both sides of the merge.
    web, app = cookie(), identity("app_install", uuid.uuid4().hex)
    older = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web])).profile.profile_id
    newer = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[app])).profile.profile_id
    tracked = [event(older, "page_view"), event(newer, "product_view", category="juicers")]
    for sent in tracked:
        profiles.Track(profiles_pb2.TrackRequest(event=sent))
    merged = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))
    tracked.append(event(newer, "add_to_cart", product_id="j1"))  # sent to the alias id
    profiles.Track(profiles_pb2.TrackRequest(event=tracked[-1]))
    assert merged.profile.profile_id == older
    assert list(merged.merged_profile_ids) == [newer]
    person = [older, newer]

    reply = profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=older))

    assert reply.deleted_events == len(tracked)
    lookups = [
        profiles_pb2.GetProfileRequest(profile_id=older),
        profiles_pb2.GetProfileRequest(profile_id=newer),
        profiles_pb2.GetProfileRequest(identity=web),
        profiles_pb2.GetProfileRequest(identity=app),
    ]
    for lookup in lookups:
        with pytest.raises(grpc.RpcError) as raised:
            profiles.GetProfile(lookup)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND, lookup
    with psycopg.connect(postgres_url) as db:
        left = {
            "events": db.execute(
                "SELECT count(*) FROM profiles_log WHERE event_id = ANY(%s)"
                " OR (profile_id = ANY(%s) AND kind <> 'deletion')",
                ([e.event_id for e in tracked], person),
            ).fetchone(),
            "identities": db.execute(
                "SELECT count(*) FROM profiles_identity WHERE profile_id = ANY(%s)"
                " OR id_value = ANY(%s)",
                (person, [web.value, app.value]),
            ).fetchone(),
            "aliases": db.execute(
                "SELECT count(*) FROM profiles_alias WHERE alias_id = ANY(%s)"
                " OR profile_id = ANY(%s)",
                (person, person),
            ).fetchone(),
            "profiles": db.execute(
                "SELECT count(*) FROM profiles_profile WHERE profile_id = ANY(%s)", (person,)
            ).fetchone(),
        }
    assert left == {"events": (0,), "identities": (0,), "aliases": (0,), "profiles": (0,)}
    hot = redis.Redis.from_url(redis_url)
    try:
        hot_keys = [k for i in person for k in hot.scan_iter(f"{key_prefix}*{i}*")]
    finally:
        hot.close()
    assert hot_keys == []
    again = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))
    assert again.created is True
    assert again.profile.profile_id not in person
    assert again.profile.session.events == 0


def test_track__concurrent_events_for_one_profile__hot_session_loses_none(profiles: Stub) -> None:
    from concurrent.futures import ThreadPoolExecutor

    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    views = [
        event(profile_id, "product_view", category="juicers", product_id=f"j{i}") for i in range(40)
    ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(
            pool.map(lambda e: profiles.Track(profiles_pb2.TrackRequest(event=e)), views)
        )

    session = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile.session
    assert not any(r.duplicate for r in replies)
    assert session.events == 40
    assert dict(session.category_views) == {"juicers": 40}


def test_track__retry_after_crash_between_log_and_session__completed_exactly_once(
    profiles: Stub, postgres_url: str, redis_url: str, key_prefix: str
) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    view = event(profile_id, "product_view", category="juicers", product_id="j-1")
    profiles.Track(profiles_pb2.TrackRequest(event=view))
    # Put the stores where a Track killed between its two writes leaves
    # them: the event in the log, not applied, and no session.
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE profiles_log SET applied = false WHERE event_id = %s", (view.event_id,))
    client = redis.Redis.from_url(redis_url)
    assert client.delete(f"{key_prefix}profiles:session:{profile_id}") == 1
    client.close()

    retries = [profiles.Track(profiles_pb2.TrackRequest(event=view)) for _ in range(3)]

    session = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile.session
    assert [r.duplicate for r in retries] == [True, True, True]
    assert dict(session.category_views) == {"juicers": 1}
    assert session.events == 1


def test_track__first_event_resent_after_101_more__counted_once(profiles: Stub) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    views = [event(profile_id, "page_view") for _ in range(101)]
    profiles.TrackStream(profiles_pb2.TrackStreamRequest(event=e) for e in views)

    resent = profiles.Track(profiles_pb2.TrackRequest(event=views[0]))

    session = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile.session
    assert resent.duplicate is True
    assert (session.page_views, session.events) == (101, 101)


def test_track_stream__broken_then_resent_whole__each_event_counted_once(profiles: Stub) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id
    views = [event(profile_id, "page_view") for _ in range(300)]
    # The first try got 200 events through before it broke.
    profiles.TrackStream(profiles_pb2.TrackStreamRequest(event=e) for e in views[:200])

    again = profiles.TrackStream(profiles_pb2.TrackStreamRequest(event=e) for e in views)

    session = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile.session
    assert (again.accepted, again.duplicates) == (100, 200)
    assert session.page_views == 300


EXACT = 2**53  # the largest magnitude the edge guard lets through
INT64_MAX = 2**63 - 1


def test_track__extreme_numbers_summing_past_int64__profile_still_reads_and_merges(
    profiles: Stub,
) -> None:
    web, app = cookie(), identity("app_install", uuid.uuid4().hex)
    healthy = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web])).profile.profile_id
    poisoned = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[app])).profile.profile_id
    profiles.Track(profiles_pb2.TrackRequest(event=event(healthy, "page_view", duration_ms=EXACT)))
    # 1100 x 2^53 is past 2^63 - 1: a sum no int64 field can carry.
    stream = [
        event(poisoned, "add_to_cart", duration_ms=EXACT, product_id="p1", quantity=EXACT)
        for _ in range(1100)
    ]
    stream.append(event(poisoned, "page_view"))
    sent = profiles.TrackStream(profiles_pb2.TrackStreamRequest(event=e) for e in stream)
    assert (sent.accepted, sent.rejected) == (1101, 0)

    read = profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=poisoned)).profile
    again = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[app])).profile
    merged = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[web, app]))
    after = profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=healthy)).profile

    assert read.session.time_spent_ms == INT64_MAX
    assert [(i.product_id, i.quantity) for i in read.session.cart] == [("p1", INT64_MAX)]
    assert again.session.page_views == 1
    assert list(merged.merged_profile_ids) == [poisoned]
    assert after.session.time_spent_ms == INT64_MAX
    assert after.session.page_views == 2
    assert after.session.cart[0].quantity == INT64_MAX


def test_track__fractional_quantity__invalid_argument_names_it(profiles: Stub) -> None:
    profile_id = profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=[cookie()])
    ).profile.profile_id

    with pytest.raises(grpc.RpcError) as raised:
        profiles.Track(
            profiles_pb2.TrackRequest(
                event=event(profile_id, "add_to_cart", product_id="p1", quantity=0.5)
            )
        )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == "event.properties.quantity"


def _logged(postgres_url: str, event_ids: list[str]) -> dict[str, tuple[str, bool]]:
    """The log rows of `event_ids`: event_id -> (profile_id, applied)."""
    with psycopg.connect(postgres_url) as db:
        rows = db.execute(
            "SELECT event_id, profile_id, applied FROM profiles_log WHERE event_id = ANY(%s)",
            (event_ids,),
        ).fetchall()
    return {event_id: (profile_id, applied) for event_id, profile_id, applied in rows}


def test_track_stream__one_bad_event_amid_a_batch__others_stored_and_it_alone_rejected(
    profiles: Stub, postgres_url: str
) -> None:
    # Three visitors, one known only by a cookie it has never been seen with
    # before the stream: its first event creates its profile.
    known = [
        profiles.Identify(profiles_pb2.IdentifyRequest(identities=[cookie()])).profile.profile_id
        for _ in range(2)
    ]
    newcomer = cookie()
    good: list[common_pb2.Event] = []
    for k in range(60):
        view = event(known[k % 2], "product_view", category="juicers", product_id=f"j{k}")
        if k % 3 == 0:
            view.ClearField("profile_id")
            view.identities.append(newcomer)
        good.append(view)
    unknown_profile = event("no-such-profile", "page_view")
    bad_type = event(known[0], "Page View")
    stream = [*good[:20], unknown_profile, *good[20:40], bad_type, *good[40:]]

    reply = profiles.TrackStream(profiles_pb2.TrackStreamRequest(event=e) for e in stream)

    assert (reply.accepted, reply.duplicates, reply.rejected) == (60, 0, 2)
    logged = _logged(postgres_url, [e.event_id for e in stream])
    assert set(logged) == {e.event_id for e in good}
    assert all(applied for _, applied in logged.values())
    newcomer_id = profiles.GetProfile(
        profiles_pb2.GetProfileRequest(identity=newcomer)
    ).profile.profile_id
    expected = {known[0]: 20, known[1]: 20, newcomer_id: 20}
    for profile_id, views in expected.items():
        read = profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=profile_id)).profile
        assert read.session.events == views, profile_id
        assert dict(read.session.category_views) == {"juicers": views}
        series = {(s.event_type, s.filter_property): s for s in read.event_history.series}
        assert list(series[("product_view", "")].counts) == [views]
    # Each single event answers alone what the stream counted.
    with pytest.raises(grpc.RpcError) as missing:
        profiles.Track(profiles_pb2.TrackRequest(event=unknown_profile))
    assert (missing.value.code(), field_of(missing.value)) == (
        grpc.StatusCode.NOT_FOUND,
        "event.profile_id",
    )
    with pytest.raises(grpc.RpcError) as invalid:
        profiles.Track(profiles_pb2.TrackRequest(event=bad_type))
    assert (invalid.value.code(), field_of(invalid.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "event.type",
    )


def test_track_stream__retried_batch__counts_nothing_twice(
    profiles: Stub, postgres_url: str, redis_url: str, key_prefix: str
) -> None:
    buyers = [
        profiles.Identify(profiles_pb2.IdentifyRequest(identities=[cookie()])).profile.profile_id
        for _ in range(3)
    ]
    batch: list[common_pb2.Event] = []
    for buyer in buyers:
        batch += [
            event(buyer, "page_view", category="juicers", duration_ms=1000),
            event(buyer, "add_to_cart", category="juicers", product_id="j1", price=80.0),
            event(buyer, "purchase", category="juicers", revenue=80.0),
            event(buyer, "product_view", category="blenders", product_id="b1"),
        ]
    requests = [profiles_pb2.TrackStreamRequest(event=e) for e in batch]

    def read(profile_id: str) -> tuple[object, ...]:
        p = profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=profile_id)).profile
        return (
            p.session.events,
            p.session.page_views,
            dict(p.session.category_views),
            p.session.time_spent_ms,
            len(p.session.cart),
            p.features.rfm.frequency,
            p.features.lifetime_value,
            sorted((s.event_type, s.filter_value, tuple(s.counts)) for s in p.event_history.series),
        )

    first = profiles.TrackStream(iter(requests))
    after_first = {b: read(b) for b in buyers}
    # A retry of the whole batch, as a client whose stream broke sends it.
    again = profiles.TrackStream(iter(requests))
    # And one whose first try stopped between the log and the hot session
    # for some of its events: stored, not applied, the session gone.
    half = [e.event_id for e in batch[::2]]
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE profiles_log SET applied = false WHERE event_id = ANY(%s)", (half,))
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(f"{key_prefix}profiles:session:{buyers[0]}")
    finally:
        client.close()
    completed = profiles.TrackStream(iter(requests))

    assert (first.accepted, first.duplicates, first.rejected) == (12, 0, 0)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 12, 0)
    assert (completed.accepted, completed.duplicates, completed.rejected) == (0, 12, 0)
    assert after_first[buyers[1]] == (
        4,
        1,
        {"juicers": 1, "blenders": 1},
        1000,
        0,  # bought what it had put in the cart
        1,
        80.0,
        [
            ("add_to_cart", "", (1,)),
            ("add_to_cart", "j1", (1,)),
            ("add_to_cart", "juicers", (1,)),
            ("add_to_cart", "web", (1,)),
            ("page_view", "", (1,)),
            ("page_view", "juicers", (1,)),
            ("page_view", "web", (1,)),
            ("product_view", "", (1,)),
            ("product_view", "b1", (1,)),
            ("product_view", "blenders", (1,)),
            ("product_view", "web", (1,)),
            ("purchase", "", (1,)),
            ("purchase", "juicers", (1,)),
            ("purchase", "web", (1,)),
        ],
    )
    assert {b: read(b) for b in buyers[1:]} == {b: after_first[b] for b in buyers[1:]}
    # The session lost for buyers[0] holds again what the events not yet
    # applied bring (page view, purchase), each once; the history is as it was.
    rebuilt = read(buyers[0])
    assert rebuilt[:4] == (2, 1, {"juicers": 1}, 1000)
    assert rebuilt[5:] == after_first[buyers[0]][5:]
    logged = _logged(postgres_url, [e.event_id for e in batch])
    assert len(logged) == 12
    assert all(applied for _, applied in logged.values())
