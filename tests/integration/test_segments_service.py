"""SegmentService on PostgreSQL, through the generated client."""

from __future__ import annotations

import uuid

import grpc
import pytest
from support import field_of

from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

pytestmark = pytest.mark.integration

Stub = segments_pb2_grpc.SegmentServiceStub


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(
    segments: Stub, segment_key: str, text: str = "", json_logic: str = ""
) -> segments_pb2.Segment:
    rule = segments_pb2.Rule(json_logic=json_logic) if json_logic else segments_pb2.Rule(text=text)
    request = segments_pb2.CreateSegmentRequest(
        segment=segments_pb2.Segment(key=segment_key, name=segment_key, rule=rule)
    )
    return segments.CreateSegment(request).segment


def profile_with(**traits: object) -> profiles_pb2.Profile:
    profile = profiles_pb2.Profile(profile_id=uuid.uuid4().hex)
    profile.traits.update(traits)
    return profile


def evaluate(segments: Stub, profile: profiles_pb2.Profile) -> set[str]:
    reply = segments.EvaluateSegments(segments_pb2.EvaluateSegmentsRequest(profile=profile))
    return set(reply.segment_keys)


def test_create__new_key__version_one_and_get_returns_it(segments: Stub) -> None:
    segment_key = key("vip")

    created = create(segments, segment_key, 'trait.tier == "gold"')
    fetched = segments.GetSegment(segments_pb2.GetSegmentRequest(key=segment_key)).segment

    assert created.version == 1
    assert fetched.rule.text == 'trait.tier == "gold"'
    assert fetched.created_at.seconds > 0


def test_evaluate__trait_comparisons__members_only(segments: Stub) -> None:
    french, rich = key("fr-be"), key("rich")
    create(segments, french, 'trait.country in ["FR", "BE"]')
    create(segments, rich, json_logic='{">=": [{"var": "trait.income"}, 50000]}')

    assert {french, rich} <= evaluate(segments, profile_with(country="FR", income=60000))
    found = evaluate(segments, profile_with(country="DE", income=10000))
    assert french not in found and rich not in found


def test_evaluate__stored_profile_id__fetches_profile_from_profile_service(
    segments: Stub, profiles: object
) -> None:
    from tessera.common.v1 import common_pb2

    segment_key = key("gold")
    create(segments, segment_key, 'trait.tier == "gold"')
    identified = profiles.Identify(  # type: ignore[attr-defined]
        profiles_pb2.IdentifyRequest(
            identities=[common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)]
        )
    )
    update = profiles_pb2.UpdateTraitsRequest(profile_id=identified.profile.profile_id)
    update.traits.update({"tier": "gold"})
    profiles.UpdateTraits(update)  # type: ignore[attr-defined]

    reply = segments.EvaluateSegments(
        segments_pb2.EvaluateSegmentsRequest(profile_id=identified.profile.profile_id)
    )

    assert segment_key in reply.segment_keys


def test_create__taken_key__already_exists(segments: Stub) -> None:
    segment_key = key("dup")
    create(segments, segment_key, "trait.a == 1")

    with pytest.raises(grpc.RpcError) as raised:
        create(segments, segment_key, "trait.a == 2")

    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_create__bad_rule__invalid_argument_and_nothing_stored(segments: Stub) -> None:
    segment_key = key("bad")

    with pytest.raises(grpc.RpcError) as raised:
        create(segments, segment_key, "trait.country ==")

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value).startswith("segment.rule")
    with pytest.raises(grpc.RpcError) as missing:
        segments.GetSegment(segments_pb2.GetSegmentRequest(key=segment_key))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_validate_rule__error__reports_line_and_column(segments: Stub) -> None:
    reply = segments.ValidateRule(
        segments_pb2.ValidateRuleRequest(
            rule=segments_pb2.Rule(text="trait.a == 1 and\n  sesion.page_views > 2")
        )
    )

    assert [(e.line, e.column) for e in reply.errors][:1] == [(2, 3)]
    assert "sesion" in reply.errors[0].message


def test_update__stale_expected_version__failed_precondition_and_unchanged(segments: Stub) -> None:
    segment_key = key("upd")
    create(segments, segment_key, "trait.a == 1")
    changed = segments_pb2.Segment(
        key=segment_key, name="x", rule=segments_pb2.Rule(text="trait.a == 2")
    )
    segments.UpdateSegment(segments_pb2.UpdateSegmentRequest(segment=changed, expected_version=1))

    with pytest.raises(grpc.RpcError) as raised:
        stale = segments_pb2.Segment(
            key=segment_key, name="y", rule=segments_pb2.Rule(text="trait.a == 3")
        )
        segments.UpdateSegment(segments_pb2.UpdateSegmentRequest(segment=stale, expected_version=1))

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stored = segments.GetSegment(segments_pb2.GetSegmentRequest(key=segment_key)).segment
    assert (stored.version, stored.rule.text) == (2, "trait.a == 2")


def test_delete__segment_used_by_another__failed_precondition(segments: Stub) -> None:
    base, user = key("base"), key("user")
    create(segments, base, "trait.a == 1")
    create(segments, user, f'segment("{base}") and trait.b == 2')

    with pytest.raises(grpc.RpcError) as raised:
        segments.DeleteSegment(segments_pb2.DeleteSegmentRequest(key=base))

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert user in raised.value.details()


def test_create__reference_to_unknown_segment__invalid_argument(segments: Stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        create(segments, key("orphan"), 'segment("does-not-exist")')

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watch__snapshot_then_changes(segments: Stub) -> None:
    segment_key = key("watched")
    stream = segments.WatchSegments(segments_pb2.WatchSegmentsRequest())
    snapshot = next(stream)

    create(segments, segment_key, "trait.a == 1")
    created = next(stream)
    segments.DeleteSegment(segments_pb2.DeleteSegmentRequest(key=segment_key))
    deleted = next(stream)
    stream.cancel()

    assert snapshot.snapshot is True
    assert [s.key for s in created.segments] == [segment_key]
    assert list(deleted.deleted_keys) == [segment_key]


def test_list__pages__every_segment_once_in_key_order(segments: Stub) -> None:
    for index in range(3):
        create(segments, key(f"page{index}"), "trait.a == 1")
    seen: list[str] = []
    token = ""
    while True:
        reply = segments.ListSegments(
            segments_pb2.ListSegmentsRequest(page_size=2, page_token=token)
        )
        seen += [s.key for s in reply.segments]
        token = reply.next_page_token
        if not token:
            break

    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) >= 3


def test_estimate_size__unknown_segment__not_found(segments: Stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        segments.EstimateSize(segments_pb2.EstimateSizeRequest(segment_key="x"), timeout=10)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_two_replicas__reference_and_delete_on_different_replicas__checked_against_the_database(
    segments: Stub, store_env: dict[str, str], profiles_server: object
) -> None:
    from support import ServerThread

    from tessera.segments.server import SegmentsService, SegmentsSettings

    settings = {k.removeprefix("TESSERA_").lower(): v for k, v in store_env.items()}
    other = ServerThread(lambda: SegmentsService(SegmentsSettings(**settings))).start()
    try:
        with other.channel() as channel:
            replica_b = segments_pb2_grpc.SegmentServiceStub(channel)
            base, user = key("base"), key("user")
            create(segments, base, "trait.a == 1")
            create(replica_b, user, f'segment("{base}")')  # B's cache may not know base yet

            with pytest.raises(grpc.RpcError) as raised:
                segments.DeleteSegment(segments_pb2.DeleteSegmentRequest(key=base))

        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert user in raised.value.details()
    finally:
        other.stop()


def test_validate_rule__integer_of_5000_digits__error_with_line_and_column(segments: Stub) -> None:
    for rule in (
        segments_pb2.Rule(text="trait.a > " + "9" * 5000),
        segments_pb2.Rule(json_logic='{">": [{"var": "trait.a"}, ' + "9" * 5000 + "]}"),
    ):
        reply = segments.ValidateRule(segments_pb2.ValidateRuleRequest(rule=rule))

        assert [(e.line, e.column) for e in reply.errors] in ([(1, 11)], [(1, 28)])
        assert "at most 32 digits" in reply.errors[0].message


def test_create__integer_of_5000_digits__invalid_argument_and_nothing_stored(
    segments: Stub,
) -> None:
    segment_key = key("huge")

    with pytest.raises(grpc.RpcError) as raised:
        create(segments, segment_key, "trait.a > " + "9" * 5000)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "line 1, column 11" in raised.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        segments.GetSegment(segments_pb2.GetSegmentRequest(key=segment_key))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_get__rule_with_comment_and_layout__returned_as_written_in_its_notation(
    segments: Stub,
) -> None:
    text = 'trait.tier   ==  "gold"  # the best customers\n  and not trait.vip'
    json_logic = '{"==": [ {"var": "trait.tier"}, "gold" ]}'
    as_text, as_json = key("written"), key("written")
    create(segments, as_text, text)
    create(segments, as_json, json_logic=json_logic)

    text_rule = segments.GetSegment(segments_pb2.GetSegmentRequest(key=as_text)).segment.rule
    json_rule = segments.GetSegment(segments_pb2.GetSegmentRequest(key=as_json)).segment.rule

    assert (text_rule.WhichOneof("rule"), text_rule.text) == ("text", text)
    assert (json_rule.WhichOneof("rule"), json_rule.json_logic) == ("json_logic", json_logic)
