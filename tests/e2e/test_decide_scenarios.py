"""The scenarios of DESIGN.md, end to end through the generated clients."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile

import grpc
import pytest
from scenario import (
    campaign,
    cookie,
    decide,
    email,
    eventually,
    segment,
    track,
    unique,
    visitor,
)

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.profiles.v1 import profiles_pb2
from tessera.sticky import TRAIT_PREFIX
from tessera.suite import Suite, free_port, start_suite, wait_serving

pytestmark = pytest.mark.e2e


def test_decide__audience_member__gets_campaign_variant_or_control(tessera: object) -> None:
    gold, placement = unique("gold"), unique("hero")
    segment(tessera, gold, f'trait.tier == "{gold}"')
    created = campaign(
        tessera, unique("hero-gold"), [placement], [gold], payload={"title": "Welcome back"}
    )
    first = cookie()
    visitor(tessera, first, tier=gold)
    eventually(lambda: decide(tessera, first, placements=[placement]).decisions[0].campaign_key)

    seen: dict[str, int] = {}
    for _ in range(60):
        someone = cookie()
        visitor(tessera, someone, tier=gold)
        (decision,) = decide(tessera, someone, placements=[placement]).decisions
        assert decision.campaign_key == created.key
        assert decision.experiment_key == created.experiment_key
        assert decision.is_control == (decision.variant_key == "control")
        expected_payload = {} if decision.is_control else {"title": "Welcome back"}
        assert dict(decision.payload) == expected_payload
        seen[decision.variant_key] = seen.get(decision.variant_key, 0) + 1

    assert set(seen) == {"control", "treatment"}
    outsider = cookie()
    visitor(tessera, outsider, tier="bronze")
    (nothing,) = decide(tessera, outsider, placements=[placement]).decisions
    assert nothing.campaign_key == ""
    assert nothing.reasons


def test_decide__same_visitor_again__same_variant(tessera: object) -> None:
    everyone, placement = unique("all"), unique("banner")
    segment(tessera, everyone, "true")
    campaign(tessera, unique("stable"), [placement], [everyone])
    someone = cookie()
    first = eventually(
        lambda: decide(tessera, someone, placements=[placement]).decisions[0].variant_key
    )

    repeats = {
        decide(tessera, someone, placements=[placement]).decisions[0].variant_key for _ in range(5)
    }

    assert repeats == {first}


def test_decide__juicer_views_in_session__next_decide_switches_from_washing_machines(
    tessera: object,
) -> None:
    """DESIGN.md: bought a washing machine two weeks ago, browses juicers today."""
    buyers, juicer_fans, placement = unique("buyers"), unique("juicers"), unique("home")
    segment(tessera, buyers, "feature.rfm.frequency >= 1")
    segment(tessera, juicer_fans, 'session.category_views("juicers") >= 2')
    accessories = campaign(tessera, unique("washer-accessories"), [placement], [buyers], priority=1)
    juicers = campaign(tessera, unique("juicer-promo"), [placement], [juicer_fans], priority=10)
    someone = cookie()
    profile_id = visitor(tessera, someone)
    track(
        tessera,
        profile_id,
        "purchase",
        ago=dt.timedelta(days=14),
        category="washing_machines",
        revenue=499.0,
    )

    before = eventually(
        lambda: decide(tessera, someone, placements=[placement]).decisions[0].campaign_key
    )
    track(tessera, profile_id, "product_view", category="juicers", product_id="j-1")
    track(tessera, profile_id, "product_view", category="juicers", product_id="j-2")
    after = decide(tessera, someone, placements=[placement])

    assert before == accessories.key
    assert after.decisions[0].campaign_key == juicers.key
    assert juicer_fans in after.segment_keys and buyers in after.segment_keys


def test_decide__cookie_then_login_on_other_channel__same_profile_same_variant(
    tessera: object,
) -> None:
    # Anonymous on the web, then logged in on the web, then on the app with
    # the account only: one person, whose first decision is the pre-login
    # one. Several people, so that a variant switch (a coin flip per person
    # with a 50/50 split) cannot pass by luck.
    everyone, placement = unique("all"), unique("slot")
    segment(tessera, everyone, "true")
    campaign(tessera, unique("omni"), [placement], [everyone])
    bystander = cookie()
    eventually(lambda: decide(tessera, bystander, placements=[placement]).decisions[0].campaign_key)

    for _ in range(8):
        browser, account = cookie(), email()
        before_login = decide(tessera, browser, placements=[placement])

        logged_in = decide(tessera, browser, account, placements=[placement])
        on_app = decide(tessera, account, placements=[placement], channel=common_pb2.CHANNEL_APP)
        later_on_web = decide(tessera, browser, placements=[placement])

        answers = (before_login, logged_in, on_app, later_on_web)
        assert before_login.profile_id
        assert [a.profile_id for a in answers] == [before_login.profile_id] * 4
        assert before_login.decisions[0].variant_key in {"control", "treatment"}
        assert [a.decisions[0].variant_key for a in answers] == [
            before_login.decisions[0].variant_key
        ] * 4


def has_sticky_trait(tessera: object, profile_id: str) -> bool:
    """Whether the profile carries a sticky variant (a `_variant:` trait) yet."""
    profile = tessera.profiles.GetProfile(  # type: ignore[attr-defined]
        profiles_pb2.GetProfileRequest(profile_id=profile_id)
    ).profile
    return any(name.startswith(TRAIT_PREFIX) for name in profile.traits.fields)


def test_decide__known_on_app_then_cookie_login__merged_profile_keeps_app_variant(
    tessera: object,
) -> None:
    # Known on the app as the account, then anonymous on the web as a second
    # profile, then logging in on the web merges the two. Each profile was
    # shown a variant before anyone knew they were one person; the person
    # keeps the variant of their first exposure (docs/experiments.md,
    # "Merges"), here the app's, on every channel from then on. The reverse
    # order (exposed on the web first, the app profile older) is
    # test_experiment_loop's merge test.
    everyone, placement = unique("all"), unique("slot")
    segment(tessera, everyone, "true")
    campaign(tessera, unique("omni"), [placement], [everyone])
    bystander = cookie()
    eventually(lambda: decide(tessera, bystander, placements=[placement]).decisions[0].campaign_key)
    app = common_pb2.CHANNEL_APP

    for _ in range(6):
        account, browser = email(), cookie()
        on_app = decide(tessera, account, placements=[placement], channel=app)
        before_login = decide(tessera, browser, placements=[placement])
        # The exposures reach the profiles as sticky traits off the request
        # path (milliseconds to a second); a login inside that moment can show
        # the other profile's variant until the first exposure's trait lands.
        for shown in (on_app, before_login):
            assert eventually(lambda shown=shown: has_sticky_trait(tessera, shown.profile_id))

        logged_in = decide(tessera, browser, account, placements=[placement])
        later_on_web = decide(tessera, browser, placements=[placement])
        later_on_app = decide(tessera, account, placements=[placement], channel=app)

        assert before_login.profile_id != on_app.profile_id
        after = (logged_in, later_on_web, later_on_app)
        assert [a.profile_id for a in after] == [on_app.profile_id] * 3
        alias = tessera.profiles.GetProfile(  # type: ignore[attr-defined]
            profiles_pb2.GetProfileRequest(profile_id=before_login.profile_id)
        ).profile
        assert alias.profile_id == on_app.profile_id
        assert on_app.decisions[0].variant_key in {"control", "treatment"}
        assert [a.decisions[0].variant_key for a in after] == [on_app.decisions[0].variant_key] * 3


def test_decide__conflict_group__fills_one_placement_with_the_higher_priority(
    tessera: object,
) -> None:
    everyone, group = unique("all"), unique("promo")
    top, side = unique("top"), unique("side")
    segment(tessera, everyone, "true")
    winner = campaign(
        tessera, unique("big-sale"), [top], [everyone], priority=5, conflict_group=group
    )
    campaign(tessera, unique("small-sale"), [side], [everyone], priority=1, conflict_group=group)
    someone = cookie()

    reply = eventually(
        lambda: (
            (r := decide(tessera, someone, placements=[side, top])).decisions[1].campaign_key and r
        )
    )

    assert [d.placement for d in reply.decisions] == [side, top]
    assert reply.decisions[1].campaign_key == winner.key
    assert reply.decisions[0].campaign_key == ""


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"placements": ["x"]}, "identities"),
        ({"identities": [common_pb2.Identity(type="cookie", value="c")]}, "placements"),
        (
            {"identities": [common_pb2.Identity(type="Cookie!", value="c")], "placements": ["x"]},
            "identities[0].type",
        ),
    ],
)
def test_decide__bad_request__invalid_argument_names_field(
    tessera: object, request_fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        tessera.decision.Decide(decision_pb2.DecideRequest(**request_fields), timeout=5)  # type: ignore[attr-defined, arg-type]

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}: ")


def test_create_campaign__no_goal__invalid_argument_and_not_stored(tessera: object) -> None:
    key = unique("aimless")
    message = decision_pb2.Campaign(key=key, placements=["x"])
    message.variants.add(key="a", weight=1)

    with pytest.raises(grpc.RpcError) as raised:
        tessera.decision.CreateCampaign(decision_pb2.CreateCampaignRequest(campaign=message))  # type: ignore[attr-defined]

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("campaign.goal.event_type: ")
    with pytest.raises(grpc.RpcError) as missing:
        tessera.decision.GetCampaign(decision_pb2.GetCampaignRequest(key=key))  # type: ignore[attr-defined]
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_create_campaign__adds_control_and_creates_experiment(tessera: object) -> None:
    from tessera.experiments.v1 import experiments_pb2

    everyone = unique("all")
    segment(tessera, everyone, "true")

    created = campaign(tessera, unique("with-control"), [unique("p")], [everyone])
    experiment = tessera.experiments.GetExperiment(  # type: ignore[attr-defined]
        experiments_pb2.GetExperimentRequest(key=created.experiment_key)
    ).experiment

    assert [(v.key, v.weight) for v in created.variants] == [("treatment", 1.0), ("control", 1.0)]
    assert created.control_variant_key == "control"
    assert experiment.status == experiments_pb2.EXPERIMENT_STATUS_RUNNING
    assert [v.key for v in experiment.variants] == ["treatment", "control"]
    assert experiment.goal.event_type == "purchase"


def test_decide__rpc_evaluation__same_answers_as_in_process(
    tessera: object, suite: Suite, store_env: dict[str, str]
) -> None:
    everyone, placement = unique("all"), unique("rpc")
    segment(tessera, everyone, "true")
    campaign(tessera, unique("rpc-mode"), [placement], [everyone])
    port = free_port()
    env = {
        **os.environ,
        **store_env,
        "TESSERA_EVALUATION": "rpc",
        "TESSERA_DECISION_PORT": str(port),
        "TESSERA_DATA_DIR": tempfile.mkdtemp(),
        **{
            f"TESSERA_{n.upper()}_ADDRESS": a for n, a in suite.addresses.items() if n != "decision"
        },
    }
    process = subprocess.Popen([sys.executable, "-m", "tessera.cli", "serve", "decision"], env=env)
    try:
        assert wait_serving(f"127.0.0.1:{port}", 30)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            rpc = decision_pb2_grpc.DecisionServiceStub(channel)
            people = [cookie() for _ in range(10)]
            eventually(
                lambda: decide(tessera, people[0], placements=[placement]).decisions[0].campaign_key
            )
            for person in people:
                request = decision_pb2.DecideRequest(
                    identities=[person], channel=common_pb2.CHANNEL_WEB, placements=[placement]
                )
                in_process = tessera.decision.Decide(request, timeout=5)  # type: ignore[attr-defined]
                over_rpc = rpc.Decide(request, timeout=5)
                assert over_rpc == in_process
    finally:
        process.terminate()
        assert process.wait(15) == 0


def test_suite__embedded_defaults__decides_and_stops_cleanly_on_sigterm() -> None:
    env = {
        "TESSERA_DATA_DIR": tempfile.mkdtemp(),
        "TESSERA_DATABASE_URL": "",
        "TESSERA_REDIS_URL": "",
    }
    embedded = start_suite(env, free_ports=True)
    try:
        with grpc.insecure_channel(embedded.addresses["decision"]) as channel:
            reply = decision_pb2_grpc.DecisionServiceStub(channel).Decide(
                decision_pb2.DecideRequest(identities=[cookie()], placements=["home"]), timeout=5
            )
        assert reply.profile_id
        assert [d.placement for d in reply.decisions] == ["home"]
    finally:
        codes = embedded.stop()

    assert codes == {"profiles": 0, "segments": 0, "experiments": 0, "decision": 0}


def test_create_campaign__after_delete_of_same_key__succeeds_and_decides(tessera: object) -> None:
    everyone, placement = unique("all"), unique("again")
    segment(tessera, everyone, "true")
    key = unique("phoenix")
    campaign(tessera, key, [placement], [everyone])
    tessera.decision.DeleteCampaign(decision_pb2.DeleteCampaignRequest(key=key))  # type: ignore[attr-defined]

    reborn = campaign(tessera, key, [placement], [everyone])
    someone = cookie()
    reply = eventually(
        lambda: decide(tessera, someone, placements=[placement]).decisions[0].campaign_key
    )

    assert reborn.version == 3  # created, deleted, created again
    assert reply == key


def test_create_campaign__frequency_cap_without_period__invalid_argument_names_period(
    tessera: object,
) -> None:
    message = decision_pb2.Campaign(
        key=unique("capped"),
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=["x"],
        frequency_cap=decision_pb2.FrequencyCap(max_decisions=3),
    )
    message.variants.add(key="a", weight=1)

    with pytest.raises(grpc.RpcError) as raised:
        tessera.decision.CreateCampaign(decision_pb2.CreateCampaignRequest(campaign=message))  # type: ignore[attr-defined]

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("campaign.frequency_cap.period: ")


def test_decide__category_page_and_product_views__both_count_as_category_views(
    tessera: object,
) -> None:
    category = unique("cat").replace("-", "_")
    browsing = unique("browsing")
    segment(tessera, browsing, f'session.category_views("{category}") >= 2')
    someone = cookie()
    profile_id = visitor(tessera, someone)
    track(tessera, profile_id, "page_view", category=category)
    once = decide(tessera, someone, placements=["home"])
    track(tessera, profile_id, "product_view", category=category, product_id="sku-1")

    twice = eventually(
        lambda: browsing in decide(tessera, someone, placements=["home"]).segment_keys
    )

    assert browsing not in once.segment_keys
    assert twice


def test_decide__visitor_in_the_experiment_holdout__gets_the_campaign_control(
    tessera: object,
) -> None:
    from tessera.experiments.v1 import experiments_pb2

    everyone, placement = unique("all"), unique("held")
    segment(tessera, everyone, "true")
    created = campaign(tessera, unique("held-out"), [placement], [everyone])
    experiment = tessera.experiments.GetExperiment(  # type: ignore[attr-defined]
        experiments_pb2.GetExperimentRequest(key=created.experiment_key)
    ).experiment
    experiment.holdout.fraction = 0.9
    tessera.experiments.UpdateExperiment(  # type: ignore[attr-defined]
        experiments_pb2.UpdateExperimentRequest(experiment=experiment)
    )
    changed = decision_pb2.Campaign()
    changed.CopyFrom(created)
    changed.priority = 5  # a campaign change keeps the experiment's holdout
    tessera.decision.UpdateCampaign(  # type: ignore[attr-defined]
        decision_pb2.UpdateCampaignRequest(campaign=changed, expected_version=created.version)
    )

    held_out = 0
    for _ in range(10):
        someone = cookie()
        profile_id = visitor(tessera, someone)
        (assignment,) = tessera.experiments.Assign(  # type: ignore[attr-defined]
            experiments_pb2.AssignRequest(
                profile_id=profile_id,
                segment_keys=[everyone],
                experiment_keys=[created.experiment_key],
            )
        ).assignments
        if not assignment.in_holdout:
            continue
        held_out += 1

        def shown(who: common_pb2.Identity = someone) -> decision_pb2.Decision | None:
            # Once the holdout and the new priority have reached the decision service.
            (decision,) = decide(tessera, who, placements=[placement]).decisions
            return decision if "priority 5" in decision.reasons else None

        decision = eventually(shown)
        assert decision is not None
        assert (decision.campaign_key, decision.variant_key) == (created.key, "control")
        assert decision.is_control
        assert dict(decision.payload) == {}
        assert "holdout: show the default" in decision.reasons

    assert held_out > 0


def test_create_campaign__negative_pressure_cost__invalid_argument_names_field(
    tessera: object,
) -> None:
    message = decision_pb2.Campaign(
        key=unique("pushy"),
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=["x"],
        pressure_cost=-1,
    )
    message.variants.add(key="a", weight=1)

    with pytest.raises(grpc.RpcError) as raised:
        tessera.decision.CreateCampaign(decision_pb2.CreateCampaignRequest(campaign=message))  # type: ignore[attr-defined]

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("campaign.pressure_cost: ")


def test_cli__demo_then_decide__prints_the_juicer_campaign(suite: Suite) -> None:
    import json

    env = {
        **os.environ,
        **{f"TESSERA_{n.upper()}_ADDRESS": a for n, a in suite.addresses.items()},
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tessera.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)

    assert cli("demo").returncode == 0
    assert cli("demo").returncode == 0  # a second run changes nothing and still succeeds

    def decided() -> dict[str, object] | None:
        out = cli("decide", "--identity", "cookie=visitor-42", "--placement", "home_hero")
        answer: dict[str, object] = json.loads(out.stdout)
        return answer if answer["decisions"][0].get("campaign_key") else None  # type: ignore[index]

    answer = eventually(decided)

    assert answer is not None
    assert "juicer-fans" in answer["segment_keys"]  # type: ignore[operator]
    (decision,) = answer["decisions"]  # type: ignore[misc]
    assert decision["campaign_key"] == "juicer-promo"
    assert decision["variant_key"] in {"juicer-banner", "control"}


def test_update_campaign__new_payload_and_weights__next_decide_shows_them(tessera: object) -> None:
    from tessera.experiments.v1 import experiments_pb2

    everyone, placement = unique("all"), unique("upd")
    segment(tessera, everyone, "true")
    created = campaign(tessera, unique("evolving"), [placement], [everyone])
    changed = decision_pb2.Campaign()
    changed.CopyFrom(created)
    changed.variants[0].payload.update({"title": "Second edition"})
    changed.variants[1].weight = 0.0  # everyone gets the treatment now

    updated = tessera.decision.UpdateCampaign(  # type: ignore[attr-defined]
        decision_pb2.UpdateCampaignRequest(campaign=changed, expected_version=created.version)
    ).campaign
    someone = cookie()

    def shows_second_edition() -> decision_pb2.Decision | None:
        (decision,) = decide(tessera, someone, placements=[placement]).decisions
        return decision if dict(decision.payload).get("title") == "Second edition" else None

    answer = eventually(shows_second_edition)

    assert updated.version == created.version + 1
    assert answer and answer.variant_key == "treatment"
    retried = tessera.decision.UpdateCampaign(  # type: ignore[attr-defined]
        decision_pb2.UpdateCampaignRequest(campaign=changed, expected_version=created.version)
    ).campaign
    assert retried.version == updated.version  # a retry of the same update changes nothing
    conflicting = decision_pb2.Campaign()
    conflicting.CopyFrom(changed)
    conflicting.priority = 99
    with pytest.raises(grpc.RpcError) as raised:
        tessera.decision.UpdateCampaign(  # type: ignore[attr-defined]
            decision_pb2.UpdateCampaignRequest(
                campaign=conflicting, expected_version=created.version
            )
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    experiment = tessera.experiments.GetExperiment(  # type: ignore[attr-defined]
        experiments_pb2.GetExperimentRequest(key=created.experiment_key)
    ).experiment
    assert [v.weight for v in experiment.variants] == [1.0, 0.0]


def test_update_campaign__concurrent_updates__experiment_matches_the_stored_campaign(
    tessera: object,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tessera.experiments.v1 import experiments_pb2

    everyone = unique("all")
    segment(tessera, everyone, "true")
    created = campaign(tessera, unique("contested"), [unique("p")], [everyone])

    def update_to(weight: float) -> None:
        changed = decision_pb2.Campaign()
        changed.CopyFrom(created)
        changed.variants[0].weight = weight
        tessera.decision.UpdateCampaign(  # type: ignore[attr-defined]
            decision_pb2.UpdateCampaignRequest(campaign=changed)
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(update_to, [float(w) for w in range(2, 14)]))

    stored = tessera.decision.GetCampaign(  # type: ignore[attr-defined]
        decision_pb2.GetCampaignRequest(key=created.key)
    ).campaign
    experiment = tessera.experiments.GetExperiment(  # type: ignore[attr-defined]
        experiments_pb2.GetExperimentRequest(key=created.experiment_key)
    ).experiment
    assert stored.version == created.version + 12
    assert [v.weight for v in experiment.variants] == [v.weight for v in stored.variants]
