"""Decide in the application layer, and its request and response conversion.

The campaign cache is the product's own, filled from a catalog on SQLite;
the profile service and the evaluator are in-memory stand-ins.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest
from decision_fakes import FakeEvaluator, FakeProfiles, campaign, run_with_catalog
from google.protobuf import struct_pb2

from tessera.catalog import Catalog
from tessera.common.v1 import common_pb2
from tessera.decision.application.campaigns import normalised
from tessera.decision.application.decide import DecideQuery, Decider, Decisions
from tessera.decision.domain.campaigns import CampaignDef
from tessera.decision.transport.convert import (
    campaign_from_proto,
    decide_query_from_proto,
    decide_response_to_proto,
)
from tessera.decision.v1 import decision_pb2
from tessera.definitions import DefinitionCache
from tessera.errors import InvalidArgument, Unavailable

Catalogue = Catalog[decision_pb2.Campaign]
NOW = dt.datetime(2026, 12, 24, 12, 0, tzinfo=dt.UTC)
RUNNING = decision_pb2.CAMPAIGN_STATUS_RUNNING
JUICERS_PAYLOAD: dict[str, str | float] = {"title": "Juicers for a gift", "discount": 10}


def query(*placements: str) -> DecideQuery:
    return DecideQuery(
        identities=[common_pb2.Identity(type="cookie", value="c1")],
        channel=common_pb2.CHANNEL_WEB,
        placements=placements,
        context=struct_pb2.Struct(),
    )


def juicers(**fields: object) -> decision_pb2.Campaign:
    treatment = decision_pb2.CampaignVariant(key="treatment", weight=1.0)
    treatment.payload.update(JUICERS_PAYLOAD)
    return normalised(campaign("juicers", status=RUNNING, variants=[treatment], **fields))


def decide_with(
    tmp_path: Path,
    stored: list[decision_pb2.Campaign],
    evaluator: FakeEvaluator,
    profiles: FakeProfiles,
    asked: DecideQuery,
    time_remaining: float | None = None,
) -> Decisions:
    """Store `stored`, then run one Decide over the cache they fill."""
    caches: list[DefinitionCache[CampaignDef]] = []

    def register(catalog: Catalogue) -> None:
        caches.append(catalog.cache(campaign_from_proto))

    async def scenario(catalog: Catalogue) -> Decisions:
        for message in stored:
            await catalog.create(message)
        decider = Decider(caches[0], evaluator, profiles.stub(), 0.5, now=lambda: NOW)
        return await decider.decide(asked, time_remaining)

    return run_with_catalog(tmp_path, scenario, before_open=register)


def test_decide__audience_member_in_treatment__campaign_variant_and_payload(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator(["juicer-browsers"], {"campaign-juicers": "treatment"})
    stored = [juicers(audience_segment_keys=["juicer-browsers"])]

    decisions = decide_with(tmp_path, stored, evaluator, FakeProfiles(0.25), query("home"))

    assert decisions.profile_id == "p-c1"
    assert list(decisions.segment_keys) == ["juicer-browsers"]
    assert decisions.conversion_probability == 0.25
    [choice] = decisions.choices
    assert choice.campaign is not None and choice.campaign.key == "juicers"
    assert (choice.variant_key, choice.is_control) == ("treatment", False)
    assert "segment:juicer-browsers" in choice.reasons
    assert evaluator.assigned == [["campaign-juicers"]]


def test_decide__visitor_in_holdout__campaign_control_not_nothing(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {}, held_out=["campaign-juicers"])

    decisions = decide_with(tmp_path, [juicers()], evaluator, FakeProfiles(), query("home"))

    [choice] = decisions.choices
    assert choice.campaign is not None and choice.campaign.key == "juicers"
    assert (choice.variant_key, choice.is_control) == ("control", True)
    decision = decide_response_to_proto(decisions).decisions[0]
    assert (decision.campaign_key, decision.is_control) == ("juicers", True)
    assert dict(decision.payload) == {}
    assert any("holdout" in reason for reason in decision.reasons)


def test_decide__no_live_campaign_fits__assignment_not_asked_and_placement_says_why(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})
    ended = juicers()
    ended.schedule.end_time.FromDatetime(NOW - dt.timedelta(days=1))

    decisions = decide_with(tmp_path, [ended], evaluator, FakeProfiles(), query("home"))

    [choice] = decisions.choices
    assert choice.campaign is None
    assert choice.reasons == ("no live campaign fits this placement",)
    assert evaluator.assigned == []


def test_decide__caller_deadline_nearer_than_setting__every_call_gets_the_nearer(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "control"})
    profiles = FakeProfiles()

    decide_with(tmp_path, [juicers()], evaluator, profiles, query("home"), time_remaining=0.1)

    assert profiles.timeouts == [0.1]
    assert evaluator.timeouts == [0.1, 0.1]


def test_decide__no_caller_deadline__setting_used(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {})
    profiles = FakeProfiles()

    decide_with(tmp_path, [], evaluator, profiles, query("home"))

    assert profiles.timeouts == [0.5]


def test_decide__profile_service_down__unavailable_naming_profiles(tmp_path: Path) -> None:
    profiles = FakeProfiles()
    profiles.fail_next = grpc.StatusCode.UNAVAILABLE

    with pytest.raises(Unavailable, match="profiles"):
        decide_with(tmp_path, [], FakeEvaluator([], {}), profiles, query("home"))


def test_decide_response__treatment_and_empty_placement__decisions_in_request_order(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})
    decisions = decide_with(
        tmp_path, [juicers()], evaluator, FakeProfiles(0.5), query("footer", "home")
    )

    response = decide_response_to_proto(decisions)

    assert response.profile_id == "p-c1"
    assert response.conversion_probability == 0.5
    footer, home = response.decisions
    assert (footer.placement, footer.campaign_key, footer.HasField("payload")) == (
        "footer",
        "",
        False,
    )
    assert (home.placement, home.campaign_key, home.experiment_key) == (
        "home",
        "juicers",
        "campaign-juicers",
    )
    assert (home.variant_key, home.is_control) == ("treatment", False)
    assert dict(home.payload) == {"title": "Juicers for a gift", "discount": 10.0}


def test_decide_response__control__is_control_and_no_payload(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "control"})
    decisions = decide_with(tmp_path, [juicers()], evaluator, FakeProfiles(), query("home"))

    [home] = decide_response_to_proto(decisions).decisions

    assert (home.variant_key, home.is_control) == ("control", True)
    assert not home.HasField("payload")
    assert "control group: show the default" in home.reasons


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"placements": ["home"]}, "identities"),
        ({"identities": [{"type": "cookie", "value": "c1"}]}, "placements"),
        (
            {"identities": [{"type": "cookie", "value": "c1"}], "placements": ["home", ""]},
            "placements[1]",
        ),
        (
            {
                "identities": [{"type": "cookie", "value": "c1"}],
                "placements": ["home"],
                "channel": 99,
            },
            "channel",
        ),
    ],
)
def test_decide_query_from_proto__bad_request__invalid_argument_names_field(
    request_fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        decide_query_from_proto(decision_pb2.DecideRequest(**request_fields))

    assert raised.value.field == field


def test_decide_query_from_proto__valid_request__channel_placements_and_identities_kept() -> None:
    request = decision_pb2.DecideRequest(
        identities=[common_pb2.Identity(type="cookie", value="c1")],
        channel=common_pb2.CHANNEL_APP,
        placements=["home", "footer"],
    )

    asked = decide_query_from_proto(request)

    assert asked.channel == common_pb2.CHANNEL_APP
    assert list(asked.placements) == ["home", "footer"]
    assert [i.value for i in asked.identities] == ["c1"]


def test_decide__templated_payload__rendered_from_profile_and_context_in_the_response(
    tmp_path: Path,
) -> None:
    treatment = decision_pb2.CampaignVariant(key="treatment", weight=1.0)
    treatment.payload.update(
        {"title": 'Hi {{traits.first_name | default: "there"}}', "page": "{{context.page}}"}
    )
    stored = [normalised(campaign("personal", status=RUNNING, variants=[treatment]))]
    evaluator = FakeEvaluator([], {"campaign-personal": "treatment"})
    asked = query("home")
    asked.context.update({"page": "cart"})

    decisions = decide_with(
        tmp_path, stored, evaluator, FakeProfiles(traits={"first_name": "Ana"}), asked
    )

    (decision,) = decide_response_to_proto(decisions).decisions
    assert dict(decision.payload) == {"title": "Hi Ana", "page": "cart"}
    # The stored campaign keeps its template: the next visitor gets their own.
    variant = decisions.choices[0].campaign.variant("treatment")  # type: ignore[union-attr]
    assert variant is not None and variant.payload["title"].startswith("Hi {{")
