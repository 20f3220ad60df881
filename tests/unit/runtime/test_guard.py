"""The edge guard: what no handler or store could take is refused, naming the field."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2

from tessera import guard
from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2
from tessera.errors import InvalidArgument, ResourceExhausted
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2

LIMITS = guard.Limits()


def track(**properties: object) -> profiles_pb2.TrackRequest:
    event = common_pb2.Event(event_id="e1", profile_id="p1", type="page_view")
    event.properties.update(properties)
    return profiles_pb2.TrackRequest(event=event)


def refusal(request: object, limits: guard.Limits = LIMITS) -> tuple[str, str, str]:
    with pytest.raises((InvalidArgument, ResourceExhausted)) as caught:
        guard.check(request, limits)  # type: ignore[arg-type]
    return type(caught.value).__name__, caught.value.field, caught.value.message


def test_check__well_formed_event__passes():
    request = track(duration_ms=1500, category="juicers", tags=["a", "b"], price=19.9)
    request.event.timestamp.FromSeconds(1_700_000_000)

    guard.check(request, LIMITS)

    assert request.event.properties["price"] == 19.9


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_check__non_finite_property__names_the_property(number: float):
    assert refusal(track(price=number))[:2] == ("InvalidArgument", "event.properties.price")


def test_check__property_beyond_exact_integer_range__refused():
    kind, field, message = refusal(track(duration_ms=1e19))

    assert (kind, field) == ("InvalidArgument", "event.properties.duration_ms")
    assert "out of range" in message


def test_check__non_finite_number_deep_in_a_list__names_the_path():
    request = track(items=[{"price": 1.0}, {"price": math.nan}])

    assert refusal(request)[1] == "event.properties.items[1].price"


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-62_135_596_801, 0), (253_402_300_800, 0), (0, -1), (0, 1_000_000_000)],
)
def test_check__timestamp_outside_protobuf_range__refused(seconds: int, nanos: int):
    request = track()
    request.event.timestamp.seconds = seconds
    request.event.timestamp.nanos = nanos

    assert refusal(request)[:2] == ("InvalidArgument", "event.timestamp")


def test_check__timestamp_at_the_range_ends__passes():
    for seconds in (guard.TIMESTAMP_MIN_SECONDS, guard.TIMESTAMP_MAX_SECONDS):
        request = track()
        request.event.timestamp.seconds = seconds
        request.event.timestamp.nanos = 999_999_999

        guard.check(request, LIMITS)

        assert request.event.timestamp.ToDatetime().year in (1, 9999)


def test_check__nul_in_an_id__names_the_field():
    request = profiles_pb2.GetProfileRequest(profile_id="p\x00")

    assert refusal(request) == (
        "InvalidArgument",
        "profile_id",
        "must not contain a NUL character",
    )


def test_check__nul_in_a_struct_key__refused():
    request = track(**{"a\x00b": 1})

    assert refusal(request)[1] == "event.properties key"


def test_check__too_many_identities__resource_exhausted_with_the_limit():
    identities = [common_pb2.Identity(type="cookie", value=f"c{i}") for i in range(33)]
    request = profiles_pb2.IdentifyRequest(identities=identities)

    kind, field, message = refusal(request)

    assert (kind, field) == ("ResourceExhausted", "identities")
    assert "at most 32" in message


def test_check__too_many_placements__resource_exhausted():
    request = decision_pb2.DecideRequest(placements=[f"p{i}" for i in range(33)])

    assert refusal(request)[:2] == ("ResourceExhausted", "placements")


def test_check__long_key__names_field_and_limit():
    request = profiles_pb2.GetProfileRequest(profile_id="x" * 257)

    kind, field, message = refusal(request)

    assert (kind, field) == ("InvalidArgument", "profile_id")
    assert "at most 256" in message


def test_check__long_rule__refused_above_rule_limit_only():
    within = segments_pb2.ValidateRuleRequest(rule=segments_pb2.Rule(text="x" * 65_536))
    beyond = segments_pb2.ValidateRuleRequest(rule=segments_pb2.Rule(text="x" * 65_537))

    guard.check(within, LIMITS)
    assert refusal(beyond)[1] == "rule.text"


def test_check__struct_nested_too_deep__refused():
    value: object = 1
    for _ in range(9):
        value = {"a": value}
    request = track(deep=value)

    kind, field, message = refusal(request)

    assert kind == "InvalidArgument"
    assert field.startswith("event.properties.deep")
    assert "deeper than 8" in message


def test_check__struct_too_large__resource_exhausted():
    request = track(blob="x" * 70_000)

    assert refusal(request)[:2] == ("ResourceExhausted", "event.properties")


def test_check__unknown_enum_value__names_enum():
    request = decision_pb2.DecideRequest(channel=99)  # type: ignore[arg-type]

    kind, field, message = refusal(request)

    assert (kind, field) == ("InvalidArgument", "channel")
    assert "Channel" in message


def test_check__non_finite_double_field__refused():
    request = decision_pb2.CreateCampaignRequest(
        campaign=decision_pb2.Campaign(variants=[decision_pb2.CampaignVariant(weight=math.nan)])
    )

    assert refusal(request)[1] == "campaign.variants[0].weight"


def test_check__session_map_in_inline_profile__keys_checked():
    request = segments_pb2.EvaluateSegmentsRequest(profile=profiles_pb2.Profile())
    request.profile.session.category_views["bad\x00"] = 1

    assert refusal(request)[1] == "profile.session.category_views key"


def test_decode__invalid_utf8__invalid_argument_naming_request():
    # Field 1 (profile_id), length 2, bytes that are not UTF-8.
    data = b"\x0a\x02\xff\xfe"

    with pytest.raises(InvalidArgument) as caught:
        guard.decode(profiles_pb2.GetProfileRequest.FromString, data)

    assert caught.value.field == "request"


def test_decode__struct_nested_past_protobuf_limit__invalid_argument():
    # Built by hand: protobuf itself refuses to build a message this deep.
    value = struct_pb2.Value(number_value=1).SerializeToString()
    for _ in range(120):
        values = _field(1, value)  # ListValue.values
        value = _field(6, values)  # Value.list_value
    entry = _field(1, b"deep") + _field(2, value)  # Struct.fields map entry
    data = _field(1, b"p") + _field(2, _field(1, entry))  # profile_id, traits

    with pytest.raises(InvalidArgument) as caught:
        guard.decode(profiles_pb2.UpdateTraitsRequest.FromString, data)

    assert caught.value.field == "request"


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, as protobuf encodes it."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)
