"""Decide in the application layer, and its request and response conversion.

The campaign cache is the product's own, filled from a catalog on SQLite;
the profile service and the evaluator are in-memory stand-ins.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest
from decision_fakes import FakeClock, FakeEvaluator, FakeProfiles, campaign, run_with_catalog
from google.protobuf import struct_pb2
from prometheus_client import REGISTRY

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
from tessera.decision.transport.evaluation import Evaluator, RpcEvaluator
from tessera.decision.v1 import decision_pb2
from tessera.definitions import DefinitionCache
from tessera.errors import DeadlineExceeded, InvalidArgument, Unavailable
from tessera.experiments.domain.exposures import Exposure
from tessera.experiments.v1 import experiments_pb2
from tessera.segments.v1 import segments_pb2

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
    evaluator: Evaluator,
    profiles: FakeProfiles,
    asked: DecideQuery,
    time_remaining: float | None = None,
    exposures: list[Exposure] | None = None,
) -> Decisions:
    """Store `stored`, then run one Decide over the cache they fill (exposures into `exposures`)."""
    caches: list[DefinitionCache[CampaignDef]] = []

    def register(catalog: Catalogue) -> None:
        caches.append(catalog.cache(campaign_from_proto))

    async def scenario(catalog: Catalogue) -> Decisions:
        for message in stored:
            await catalog.create(message)
        decider = Decider(
            caches[0],
            evaluator,
            profiles.stub(),
            0.5,
            now=lambda: NOW,
            exposures=None if exposures is None else Sink(exposures),
            clock=profiles.clock,
        )
        return await decider.decide(asked, time_remaining)

    return run_with_catalog(tmp_path, scenario, before_open=register)


def degraded(peer: str) -> float:
    """Decide calls counted as failed open without `peer` so far."""
    return REGISTRY.get_sample_value("tessera_decide_degraded_total", {"peer": peer}) or 0.0


class Sink:
    """An exposure sink that keeps what Decide hands it."""

    def __init__(self, into: list[Exposure]) -> None:
        self.into = into

    def emit(self, exposures: Iterable[Exposure]) -> None:
        self.into.extend(exposures)


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


def test_decide__caller_deadline_nearer_than_setting__calls_get_it_less_the_answer_reserve(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "control"})
    profiles = FakeProfiles()

    decide_with(tmp_path, [juicers()], evaluator, profiles, query("home"), time_remaining=0.1)

    assert profiles.timeouts == [pytest.approx(0.09)]
    assert evaluator.timeouts == [pytest.approx(0.09), pytest.approx(0.09)]


def test_decide__no_caller_deadline__setting_used(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {})
    profiles = FakeProfiles()

    decide_with(tmp_path, [], evaluator, profiles, query("home"))

    assert profiles.timeouts == [0.5]


def test_decide__slow_profile_call__later_calls_get_only_what_is_left(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})
    profiles = FakeProfiles()
    profiles.takes_s = 0.3

    decide_with(tmp_path, [juicers()], evaluator, profiles, query("home"))

    # Every call has a deadline, each read from the one budget when it starts.
    assert profiles.timeouts == [0.5]
    assert evaluator.timeouts == [pytest.approx(0.2), pytest.approx(0.2)]


class RecordingPeers:
    """EvaluateSegments and Assign as the segment and experiment services answer them.

    Each call records the deadline it was given and moves `clock` on by
    `takes_s`, as a peer that takes that long would.
    """

    def __init__(self, clock: FakeClock, takes_s: float) -> None:
        self.clock = clock
        self.takes_s = takes_s
        self.timeouts: list[tuple[str, float | None]] = []

    async def EvaluateSegments(
        self, request: segments_pb2.EvaluateSegmentsRequest, timeout: float | None = None
    ) -> segments_pb2.EvaluateSegmentsResponse:
        self.timeouts.append(("EvaluateSegments", timeout))
        self.clock.now += self.takes_s
        return segments_pb2.EvaluateSegmentsResponse(segment_keys=["juicer-browsers"])

    async def Assign(
        self, request: experiments_pb2.AssignRequest, timeout: float | None = None
    ) -> experiments_pb2.AssignResponse:
        self.timeouts.append(("Assign", timeout))
        self.clock.now += self.takes_s
        return experiments_pb2.AssignResponse(
            assignments=[
                experiments_pb2.Assignment(experiment_key=key, variant_key="treatment")
                for key in request.experiment_keys
            ]
        )


def test_decide_rpc__every_peer_call__deadline_is_what_the_budget_has_left(
    tmp_path: Path,
) -> None:
    profiles = FakeProfiles()
    profiles.takes_s = 0.1
    peers = RecordingPeers(profiles.clock, 0.1)
    evaluator = RpcEvaluator(peers, peers)  # type: ignore[arg-type]
    stored = [juicers(audience_segment_keys=["juicer-browsers"])]

    decisions = decide_with(tmp_path, stored, evaluator, profiles, query("home"), 1.0)

    assert decisions.choices[0].variant_key == "treatment"
    # min(setting 0.5, caller's 1.0 less 10%), then what each slow call left.
    assert profiles.timeouts == [pytest.approx(0.5)]
    assert peers.timeouts == [
        ("EvaluateSegments", pytest.approx(0.4)),
        ("Assign", pytest.approx(0.3)),
    ]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_decide__profile_service_down_or_slow__every_placement_default_with_reason(
    tmp_path: Path, code: grpc.StatusCode
) -> None:
    evaluator = FakeEvaluator(["juicer-browsers"], {"campaign-juicers": "treatment"})
    profiles = FakeProfiles()
    profiles.fail_next = code
    exposures: list[Exposure] = []
    counted_before = degraded("profiles")

    decisions = decide_with(
        tmp_path, [juicers()], evaluator, profiles, query("home", "footer"), exposures=exposures
    )

    response = decide_response_to_proto(decisions)
    assert response.profile_id == ""
    assert list(response.segment_keys) == []
    assert [(d.placement, d.campaign_key, d.variant_key) for d in response.decisions] == [
        ("home", "", ""),
        ("footer", "", ""),
    ]
    assert all(
        list(d.reasons) == ["profile service unavailable: default experience"]
        for d in response.decisions
    )
    # Nobody was identified: nothing assigned, nothing counted.
    assert evaluator.assigned == []
    assert exposures == []
    assert degraded("profiles") == counted_before + 1


def test_decide__profile_refuses_identity__invalid_argument_not_failed_open(
    tmp_path: Path,
) -> None:
    profiles = FakeProfiles()
    profiles.fail_next = grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(InvalidArgument):
        decide_with(tmp_path, [], FakeEvaluator([], {}), profiles, query("home"))


def test_decide__segments_unavailable__everyone_campaign_served_audience_campaign_skipped(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator(["gold"], {"campaign-gold": "treatment", "campaign-all": "t2"})
    evaluator.segments_fail = Unavailable("segments failed: UNAVAILABLE")
    gold = normalised(campaign("gold", status=RUNNING, audience_segment_keys=["gold"], priority=10))
    everyone = normalised(
        campaign(
            "all",
            status=RUNNING,
            variants=[decision_pb2.CampaignVariant(key="t2", weight=1.0)],
        )
    )

    decisions = decide_with(tmp_path, [gold, everyone], evaluator, FakeProfiles(), query("home"))

    [home] = decisions.choices
    assert home.campaign is not None and home.campaign.key == "all"
    assert home.variant_key == "t2"
    assert "skipped gold: segment service unavailable (gold)" in home.reasons
    assert decisions.segment_keys == []
    assert evaluator.assigned == [["campaign-all"]]


def test_decide__audience_segment_not_loaded__campaign_skipped_with_reason(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"}, missing=["juicer-browsers"])
    stored = [juicers(audience_segment_keys=["juicer-browsers"])]

    decisions = decide_with(tmp_path, stored, evaluator, FakeProfiles(), query("home"))

    [home] = decisions.choices
    assert home.campaign is None
    assert home.reasons == (
        "skipped juicers: audience segment not loaded (juicer-browsers)",
        "default experience",
    )
    assert evaluator.assigned == []


def test_decide__experiment_not_loaded__campaign_skipped_next_one_served(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {"campaign-other": "t2"}, missing=["campaign-juicers"])
    other = normalised(
        campaign(
            "other",
            status=RUNNING,
            variants=[decision_pb2.CampaignVariant(key="t2", weight=1.0)],
        )
    )
    stored = [juicers(priority=5), other]
    exposures: list[Exposure] = []

    decisions = decide_with(
        tmp_path, stored, evaluator, FakeProfiles(), query("home"), exposures=exposures
    )

    [home] = decisions.choices
    assert home.campaign is not None and home.campaign.key == "other"
    assert "skipped juicers: its experiment is not loaded" in home.reasons
    assert evaluator.assigned == [["campaign-other"]]
    assert [e.experiment_key for e in exposures] == ["campaign-other"]


def test_decide__experiments_unavailable__default_with_reason_no_exposure(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})
    evaluator.assign_fail = DeadlineExceeded("experiments did not answer in time")
    exposures: list[Exposure] = []

    decisions = decide_with(
        tmp_path, [juicers()], evaluator, FakeProfiles(), query("home"), exposures=exposures
    )

    [home] = decisions.choices
    assert home.campaign is None
    assert home.reasons == (
        "skipped juicers: experiment service unavailable",
        "default experience",
    )
    assert decisions.profile_id == "p-c1"
    assert exposures == []


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
        (
            {
                "identities": [{"type": "cookie", "value": "c1"}],
                "placements": ["home"],
                "request_id": "r1\tretry",
            },
            "request_id",
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
        request_id="retry 7/ü",
    )

    asked = decide_query_from_proto(request)

    assert asked.request_id == "retry 7/ü"
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
