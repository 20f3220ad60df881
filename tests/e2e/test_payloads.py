"""Payloads from the profile through the generated clients (docs/payloads.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from scenario import cookie, decide, eventually, track, unique, visitor

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2

PAYLOAD = {
    "title": 'Ideas for {{traits.first_name | default: "you"}}',
    "category": '{{interests.top | default: "gifts"}}',
    "views": "{{session.category_views.juicers}}",
    "page": "{{context.page}}",
    "cards": [{"category": "{{interests.2}}", "text": "\\{{kept}}"}],
    "coffee": "{{features.interest.coffee}}",
}


def personal_campaign(tessera: Any, placement: str, payload: dict[str, Any]) -> Any:
    """A running campaign for everyone on `placement`, its treatment shown to all."""
    message = decision_pb2.Campaign(
        key=unique("personal"),
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=[placement],
        status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
        control_variant_key="control",
    )
    message.variants.add(key="treatment", weight=1).payload.update(payload)
    message.variants.add(key="control", weight=0)
    return tessera.decision.CreateCampaign(
        decision_pb2.CreateCampaignRequest(campaign=message)
    ).campaign


def test_decide__washing_machine_bought_then_juicer_views__payload_says_juicers(
    tessera: Any,
) -> None:
    """DESIGN.md's case: a washing machine 14 days ago, three juicer views now."""
    placement = unique("reco")
    personal_campaign(tessera, placement, PAYLOAD)
    shopper = cookie()
    profile_id = visitor(tessera, shopper, first_name="Ana")
    track(
        tessera,
        profile_id,
        "purchase",
        ago=dt.timedelta(days=14),
        category="washing_machines",
        revenue=499.0,
    )
    # Coffee 45 days ago: past the 30-day suppression, decayed by its own timestamp.
    track(tessera, profile_id, "purchase", ago=dt.timedelta(days=45), category="coffee")
    for _ in range(3):
        track(tessera, profile_id, "product_view", category="juicers", product_id="j-1")
    request = decision_pb2.DecideRequest(
        identities=[shopper], channel=common_pb2.CHANNEL_WEB, placements=[placement]
    )
    request.context.update({"page": "home"})

    def rendered() -> dict[str, Any] | None:
        (decision,) = tessera.decision.Decide(request, timeout=5).decisions
        payload = json_format.MessageToDict(decision.payload)
        return payload if payload.get("category") == "juicers" else None

    payload = eventually(rendered)

    coffee = payload.pop("coffee")
    assert payload == {
        "title": "Ideas for Ana",
        "category": "juicers",
        "views": 3,  # one whole placeholder: a number stays a number
        "page": "home",
        # Washing machines, bought 14 days ago, are suppressed: coffee comes second.
        "cards": [{"category": "coffee", "text": "{{kept}}"}],
    }
    assert coffee == pytest.approx(2 ** (-45 / 30), abs=1e-3)  # docs/interests.md


def test_decide__new_visitor_without_data__payload_takes_the_defaults(tessera: Any) -> None:
    placement = unique("reco")
    personal_campaign(tessera, placement, PAYLOAD)

    (decision,) = decide(tessera, cookie(), placements=[placement]).decisions

    payload = json_format.MessageToDict(decision.payload)
    assert decision.variant_key == "treatment"
    assert payload["title"] == "Ideas for you"
    assert payload["category"] == "gifts"
    assert payload["views"] == 0
    assert payload["page"] == ""


def test_create_campaign__bad_placeholder__invalid_argument_names_the_payload_path(
    tessera: Any,
) -> None:
    placement = unique("reco")
    payload = {"hero": {"title": 'Hi {{traits.first_name | default: "there"'}}

    with pytest.raises(grpc.RpcError) as raised:
        personal_campaign(tessera, placement, payload)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(
        "campaign.variants[0].payload.hero.title: placeholder at character 4"
    )
    assert "not closed" in raised.value.details()
    assert eventually(
        lambda: not decide(tessera, cookie(), placements=[placement]).decisions[0].campaign_key
    )


@pytest.mark.parametrize(
    ("default", "problem"),
    [
        ("1" + "0" * 400, "must be a number within"),
        ('"\\ud800"', "must not contain a lone surrogate"),
    ],
)
def test_create_campaign__default_decide_cannot_send__invalid_argument_not_stored(
    tessera: Any, default: str, problem: str
) -> None:
    # Both were stored, and then every Decide of the campaign failed INTERNAL.
    placement = unique("reco")
    payload = {"title": f"{{{{traits.x | default: {default}}}}}"}

    with pytest.raises(grpc.RpcError) as raised:
        personal_campaign(tessera, placement, payload)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("campaign.variants[0].payload.title: ")
    assert problem in raised.value.details()
    assert decide(tessera, cookie(), placements=[placement]).decisions[0].campaign_key == ""
