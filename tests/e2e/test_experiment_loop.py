"""From a decision to a verdict, as a shop runs it: exposures, sticky variants, results.

A suite of its own (its own PostgreSQL database and Redis prefix), so that
a test may stop and start one of its services.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Clients, clients_for
from prometheus_client.parser import text_string_to_metric_families
from scenario import campaign, cookie, decide, email, eventually, segment, track, unique

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2
from tessera.experiments.domain.statistics import Sample, compare
from tessera.experiments.v1 import experiments_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.sticky import trait_name
from tessera.suite import Suite, start_suite

pytestmark = pytest.mark.e2e

APP = common_pb2.CHANNEL_APP
WEB = common_pb2.CHANNEL_WEB


@contextlib.contextmanager
def own_suite(store_env: dict[str, str], **settings: str) -> Iterator[Suite]:
    """The whole suite on a PostgreSQL database and a Redis prefix of its own."""
    url = store_env["TESSERA_DATABASE_URL"]
    name = f"tessera_loop_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env = {
        **store_env,
        "TESSERA_DATABASE_URL": f"{url.rsplit('/', 1)[0]}/{name}",
        "TESSERA_KEY_PREFIX": f"{store_env['TESSERA_KEY_PREFIX']}loop-{uuid.uuid4().hex[:6]}:",
        "TESSERA_DATA_DIR": tempfile.mkdtemp(prefix="tessera-loop-"),
        "TESSERA_EXPOSURE_LINGER_S": "0.05",
        **settings,
    }
    try:
        running = start_suite(env, free_ports=True)
        try:
            yield running
        finally:
            running.stop()
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def loop_suite(store_env: dict[str, str]) -> Iterator[Suite]:
    with own_suite(store_env) as running:
        yield running


@pytest.fixture(scope="module")
def shop(loop_suite: Suite) -> Iterator[Clients]:
    clients, channels = clients_for(loop_suite)
    yield clients
    for channel in channels:
        channel.close()


def running_campaign(
    shop: Clients, **fields: Any
) -> tuple[decision_pb2.Campaign, str, common_pb2.Identity]:
    """A running campaign for everyone on a placement of its own, seen by Decide.

    Also the first visitor it was shown to (once it reached the decision service).
    """
    everyone, placement = unique("all"), unique("slot")
    segment(shop, everyone, "true")
    created = campaign(shop, unique("loop"), [placement], [everyone], **fields)
    first = cookie()
    eventually(lambda: decide(shop, first, placements=[placement]).decisions[0].campaign_key)
    return created, placement, first


def variant_of(shop: Clients, placement: str, *who: common_pb2.Identity, channel: int = WEB) -> str:
    return decide(shop, *who, placements=[placement], channel=channel).decisions[0].variant_key


def sticky_synced(shop: Clients, profile_id: str, experiment_key: str) -> bool:
    profile = shop.profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=profile_id))
    return trait_name(experiment_key) in profile.profile.traits.fields


def profile_of(shop: Clients, who: common_pb2.Identity) -> str:
    reply = shop.profiles.GetProfile(profiles_pb2.GetProfileRequest(identity=who))
    return str(reply.profile.profile_id)


def results(shop: Clients, key: str) -> experiments_pb2.GetResultsResponse:
    return shop.experiments.GetResults(experiments_pb2.GetResultsRequest(experiment_key=key))


def test_campaign__two_channels_some_convert__results_are_the_statistics_of_the_counts(
    shop: Clients,
) -> None:
    created, placement, first = running_campaign(shop)
    seen = {profile_of(shop, first): variant_of(shop, placement, first)}
    # 40 people seen on the web, 40 on the app; every fourth one also on the
    # other channel. A fifth bought in the days before (CUPED's covariate);
    # some buy after seeing the campaign, more often in the treatment.
    people = [(cookie() if i % 2 else email(), WEB if i % 2 else APP) for i in range(80)]
    bought_before: set[str] = set()
    for index, (who, channel) in enumerate(people):
        profile_id = profile_of_new(shop, who)
        if index % 5 == 0:
            track(shop, profile_id, "purchase", ago=dt.timedelta(days=3), revenue=30.0)
            bought_before.add(profile_id)
        seen[profile_id] = variant_of(shop, placement, who, channel=channel)
        if index % 4 == 0:
            other = APP if channel == WEB else WEB
            assert variant_of(shop, placement, who, channel=other) == seen[profile_id]
    converted = {
        profile_id
        for index, (profile_id, variant) in enumerate(seen.items())
        if index % (2 if variant == "treatment" else 5) == 1
    }
    for profile_id in converted:
        track(shop, profile_id, "purchase", revenue=20.0)

    def sample(variant: str) -> Sample:
        ids = [pid for pid, v in seen.items() if v == variant]
        pre = [1.0 if pid in bought_before else 0.0 for pid in ids]
        post = [1.0 if pid in converted else 0.0 for pid in ids]
        return Sample(
            len(ids),
            sum(post),
            sum(post),
            sum(pre),
            sum(pre),
            sum(x * y for x, y in zip(pre, post, strict=True)),
        )

    expected = compare(sample("control"), sample("treatment"), cuped=True)

    def settled() -> experiments_pb2.GetResultsResponse | None:
        answer = results(shop, created.experiment_key)
        treatment = answer.variants[1]
        done = (
            sum(v.exposures for v in answer.variants) == len(seen)
            and sum(v.conversions for v in answer.variants) == len(converted)
            and treatment.cuped_applied == expected.cuped_applied
            and treatment.absolute_lift == pytest.approx(expected.absolute_lift)
        )
        return answer if done else None

    answer = eventually(settled, timeout_s=20)

    assert answer is not None, (results(shop, created.experiment_key), expected, len(converted))
    control, treatment = answer.variants
    assert (control.variant_key, treatment.variant_key) == ("control", "treatment")
    assert control.exposures == expected.control_n
    assert treatment.exposures == expected.treatment_n
    assert treatment.conversion_rate == pytest.approx(expected.treatment_mean)
    assert treatment.revenue == 20.0 * sum(1 for p in converted if seen[p] == "treatment")
    assert treatment.cuped_applied and expected.cuped_applied
    assert (treatment.absolute_lift_ci_low, treatment.absolute_lift_ci_high) == pytest.approx(
        expected.absolute_ci
    )
    assert treatment.relative_lift == pytest.approx(expected.relative_lift)
    assert treatment.p_value == pytest.approx(expected.p_value)
    assert treatment.sequential_p_value == pytest.approx(expected.sequential_p_value)
    assert treatment.chance_to_beat_control == pytest.approx(expected.chance_to_win)
    assert answer.status == experiments_pb2.RESULT_STATUS_COLLECTING  # under 100 per arm
    assert answer.srm_p_value > 0.001
    assert answer.timeline[-1].variants[1].exposures == treatment.exposures


def profile_of_new(shop: Clients, who: common_pb2.Identity) -> str:
    reply = shop.profiles.Identify(profiles_pb2.IdentifyRequest(identities=[who]))
    return str(reply.profile.profile_id)


def test_sticky__weight_change__exposed_people_keep_their_variant_on_every_channel(
    shop: Clients,
) -> None:
    created, placement, _ = running_campaign(shop)
    people = [cookie() for _ in range(20)]
    first = {who.value: variant_of(shop, placement, who) for who in people}
    for who in people:
        assert eventually(
            lambda w=who: sticky_synced(shop, profile_of(shop, w), created.experiment_key)
        )
    assert set(first.values()) == {"control", "treatment"}

    changed = decision_pb2.Campaign()
    changed.CopyFrom(created)
    for variant in changed.variants:
        variant.weight = 1.0 if variant.key == "treatment" else 0.0
    shop.decision.UpdateCampaign(decision_pb2.UpdateCampaignRequest(campaign=changed))
    assert eventually(
        lambda: all(variant_of(shop, placement, cookie()) == "treatment" for _ in range(5))
    )

    again = {who.value: variant_of(shop, placement, who, channel=APP) for who in people}
    assert again == first


def test_sticky__traffic_ramp_down__exposed_people_stay_in(shop: Clients) -> None:
    created, placement, _ = running_campaign(shop)
    people = [cookie() for _ in range(20)]
    first = {who.value: variant_of(shop, placement, who) for who in people}
    for who in people:
        assert eventually(
            lambda w=who: sticky_synced(shop, profile_of(shop, w), created.experiment_key)
        )

    experiment = shop.experiments.GetExperiment(
        experiments_pb2.GetExperimentRequest(key=created.experiment_key)
    ).experiment
    experiment.traffic_fraction = 0.05
    shop.experiments.UpdateExperiment(
        experiments_pb2.UpdateExperimentRequest(experiment=experiment)
    )
    # Fresh newcomers at each look: one decided before the ramp arrived is
    # exposed, and stays in.
    assert eventually(
        lambda: sum(variant_of(shop, placement, cookie()) == "" for _ in range(20)) >= 15
    )

    again = {who.value: variant_of(shop, placement, who) for who in people}
    assert again == first


def test_sticky__exposed_on_web_first_then_login_to_older_app_profile__web_variant_kept(
    shop: Clients,
) -> None:
    # The app profile is older, so it survives the merge; but the person saw
    # the campaign on the web first, and the first exposure fixes the variant
    # (docs/experiments.md, "Merges"). Several people: at least one whose two
    # profiles drew different variants, so a switch would show.
    created, placement, _ = running_campaign(shop)
    differed = 0
    for _ in range(8):
        account, browser = email(), cookie()
        app_profile = profile_of_new(shop, account)
        on_web = variant_of(shop, placement, browser)
        on_app = variant_of(shop, placement, account, channel=APP)
        web_profile = profile_of(shop, browser)
        for profile_id in (web_profile, app_profile):
            assert eventually(lambda p=profile_id: sticky_synced(shop, p, created.experiment_key))
        differed += on_web != on_app

        logged_in = variant_of(shop, placement, browser, account)
        later = [
            variant_of(shop, placement, browser),
            variant_of(shop, placement, account, channel=APP),
        ]

        assert profile_of(shop, browser) == app_profile
        assert [logged_in, *later] == [on_web] * 3
    assert differed > 0


def metric(suite: Suite, name: str) -> float:
    """One unlabelled sample of the decision service's Prometheus metrics."""
    with urllib.request.urlopen(suite.metrics["decision"], timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    return 0.0


def totals(shop: Clients, key: str) -> tuple[int, int]:
    answer = results(shop, key)
    return sum(v.exposures for v in answer.variants), sum(v.conversions for v in answer.variants)


def test_restarts__experiment_then_decision_service__nothing_lost_nothing_counted_twice(
    loop_suite: Suite, shop: Clients
) -> None:
    created, placement, _ = running_campaign(shop)
    key = created.experiment_key
    people = [cookie() for _ in range(10)]
    loop_suite.stop_one("experiments")
    try:
        # Decide goes on from the definitions it holds; exposures wait in its
        # queue, and purchases wait in the change feed.
        for who in people:
            assert variant_of(shop, placement, who) in {"control", "treatment"}
        for who in people[:4]:
            track(shop, profile_of(shop, who), "purchase", revenue=10.0)
        waiting = metric(loop_suite, "tessera_exposure_queue_depth")
        sent_before = metric(loop_suite, "tessera_exposures_sent_total")
    finally:
        loop_suite.start_one("experiments")

    assert waiting >= 10  # the people decided meanwhile, queued in the decision service
    assert eventually(lambda: totals(shop, key) == (11, 4), timeout_s=20), totals(shop, key)
    assert metric(loop_suite, "tessera_exposures_sent_total") >= sent_before + 10
    assert metric(loop_suite, "tessera_exposure_queue_depth") == 0

    later = [cookie() for _ in range(5)]
    for who in later:
        variant_of(shop, placement, who)
    loop_suite.stop_one("decision")  # flushes its queue as it stops
    loop_suite.start_one("decision")
    assert eventually(lambda: totals(shop, key) == (16, 4), timeout_s=20), totals(shop, key)

    loop_suite.stop_one("experiments")
    loop_suite.start_one("experiments")
    track(shop, profile_of(shop, later[0]), "purchase", revenue=10.0)
    assert eventually(lambda: totals(shop, key) == (16, 5), timeout_s=20), totals(shop, key)


def test_global_holdout__a_share_gets_no_personalization__programme_read_against_it(
    store_env: dict[str, str],
) -> None:
    with own_suite(store_env, TESSERA_GLOBAL_HOLDOUT_FRACTION="0.3") as suite:
        clients, channels = clients_for(suite)
        try:
            check_global_holdout(clients)
        finally:
            for channel in channels:
                channel.close()


def steady_results(shop: Clients, key: str) -> experiments_pb2.GetResultsResponse:
    """Results once the exposures of earlier decisions have all arrived (two reads agree)."""

    def counts(answer: experiments_pb2.GetResultsResponse) -> list[int]:
        return [answer.holdout_exposures, *(v.exposures for v in answer.variants)]

    answer = results(shop, key)
    for _ in range(50):
        time.sleep(0.3)
        again = results(shop, key)
        if counts(again) == counts(answer):
            return again
        answer = again
    raise AssertionError(f"exposures of {key} kept changing")


def check_global_holdout(shop: Clients) -> None:
    created, placement, _ = running_campaign(shop)
    # The campaign's own holdout keeps working beside the global one.
    experiment = shop.experiments.GetExperiment(
        experiments_pb2.GetExperimentRequest(key=created.experiment_key)
    ).experiment
    experiment.holdout.fraction = 0.2
    shop.experiments.UpdateExperiment(
        experiments_pb2.UpdateExperimentRequest(experiment=experiment)
    )
    assert eventually(
        lambda: any(
            "holdout: show the default"
            in decide(shop, cookie(), placements=[placement]).decisions[0].reasons
            for _ in range(20)
        )
    )
    before = steady_results(shop, created.experiment_key)

    held_globally: set[str] = set()
    held_by_campaign: set[str] = set()
    personalised: set[str] = set()
    for _ in range(60):
        who = cookie()
        (decision,) = decide(shop, who, placements=[placement]).decisions
        profile_id = profile_of(shop, who)
        # Never nothing: a held-out visitor gets the campaign's control.
        assert decision.campaign_key == created.key
        if "global holdout: show the default" in decision.reasons:
            assert (decision.variant_key, decision.is_control) == ("control", True)
            assert dict(decision.payload) == {}
            held_globally.add(profile_id)
        elif "holdout: show the default" in decision.reasons:
            assert decision.variant_key == "control"
            held_by_campaign.add(profile_id)
            personalised.add(profile_id)
        else:
            personalised.add(profile_id)
    buyers = sorted(held_globally)[::3] + sorted(personalised)[::2]
    for profile_id in buyers:
        track(shop, profile_id, "purchase", revenue=15.0)

    bought_held = len(sorted(held_globally)[::3])
    bought_personalised = len(sorted(personalised)[::2])

    def programme() -> experiments_pb2.GetResultsResponse | None:
        answer = results(shop, "_global_holdout")
        conversions = {v.variant_key: v.conversions for v in answer.variants}
        wanted = {"holdout": bought_held, "personalized": bought_personalised}
        return answer if conversions == wanted else None

    answer = eventually(programme, timeout_s=20)
    assert answer is not None, results(shop, "_global_holdout")

    everyone_before = 1 + sum(v.exposures for v in before.variants) + before.holdout_exposures
    holdout, personalized = answer.variants
    assert (holdout.variant_key, personalized.variant_key) == ("holdout", "personalized")
    assert holdout.weight == pytest.approx(0.3) and personalized.weight == pytest.approx(0.7)
    assert holdout.exposures >= len(held_globally) > 5
    assert holdout.exposures + personalized.exposures >= 60 + everyone_before - 1
    assert answer.goal.event_type == "purchase"
    assert personalized.relative_lift == pytest.approx(
        personalized.conversion_rate / holdout.conversion_rate - 1
    )
    campaign_results = results(shop, created.experiment_key)
    new_holdouts = campaign_results.holdout_exposures - before.holdout_exposures
    assert new_holdouts == len(held_globally) + len(held_by_campaign)
    assert held_by_campaign
