"""A profile message becomes a typed rule subject in one place."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from tessera.common.v1 import common_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.domain import compile_rule, parse_text
from tessera.segments.domain.nodes import FEATURE_PATHS, SESSION_FIELDS
from tessera.segments.transport.convert import subject_from_profile

PROFILE = profiles_pb2.Profile(
    profile_id="p-1",
    identities=[common_pb2.Identity(type="email", value="sha256:x")],
    session=profiles_pb2.Session(
        page_views=3,
        category_views={"juicers": 2},
        product_views={"j1": 1},
        cart=[profiles_pb2.CartItem(product_id="j1", category="juicers", quantity=2, price=40.0)],
        searches=["Cold Press Juicer"],
    ),
    features=profiles_pb2.Features(
        rfm=profiles_pb2.Rfm(recency_days=14.0, frequency=2, monetary=150.0),
        lifetime_value=150.0,
        interests=[profiles_pb2.Interest(category="juicers", score=6.0)],
        conversion_probability=0.2,
    ),
)


def test_subject_from_profile__session_and_features__typed_and_read_by_rules() -> None:
    context = struct_pb2.Struct()
    context.update({"device": "mobile"})

    subject = subject_from_profile(PROFILE, common_pb2.CHANNEL_WEB, context)

    assert subject.session.category_views == {"juicers": 2}
    assert subject.features is not None and subject.features.rfm.frequency == 2
    rule = parse_text(
        'channel == "web" and context.device == "mobile" and has_identity("email") '
        'and session.category_views("juicers") >= 2 and session.cart_value == 80.0 '
        'and session.searched("juicer") and feature.interest("juicers") > 5 '
        "and feature.rfm.recency_days == 14 and feature.lifetime_value == 150"
    )
    assert compile_rule(rule)(subject) is True


@pytest.mark.parametrize("name", sorted(SESSION_FIELDS))
def test_compile__every_session_field__has_a_reader(name: str) -> None:
    subject = subject_from_profile(profiles_pb2.Profile(), 0, None)

    assert compile_rule(parse_text(f"session.{name} == 0"))(subject) is True


@pytest.mark.parametrize("path", sorted(FEATURE_PATHS))
def test_compile__every_feature__has_a_reader(path: tuple[str, ...]) -> None:
    bought = profiles_pb2.Profile(features=profiles_pb2.Features(rfm=profiles_pb2.Rfm(frequency=1)))
    subject = subject_from_profile(bought, 0, None)

    if path == ("rfm", "frequency"):
        assert compile_rule(parse_text("feature.rfm.frequency == 1"))(subject) is True
        return

    assert compile_rule(parse_text(f"feature.{'.'.join(path)} == 0"))(subject) is True


@pytest.mark.parametrize("recency_days", [-1.0, 0.0])
@pytest.mark.parametrize(
    "rule",
    [
        "feature.rfm.recency_days <= 14",
        "feature.rfm.recency_days > 14",
        "feature.rfm.recency_days == 0",
        "feature.rfm.recency_days >= -1",
    ],
)
def test_subject_from_profile__never_bought__no_recency_comparison_matches(
    recency_days: float, rule: str
) -> None:
    never = profiles_pb2.Profile(
        features=profiles_pb2.Features(rfm=profiles_pb2.Rfm(recency_days=recency_days))
    )

    subject = subject_from_profile(never, 0, None)

    assert subject.features is not None and subject.features.rfm.recency_days is None
    assert compile_rule(parse_text(rule))(subject) is False
