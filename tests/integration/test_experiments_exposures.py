"""Exposures, sticky variants, merges and erasures: experiments and profiles on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from conftest import _settings
from support import ServerThread, field_of
from test_experiments_service import assign, experiment

from tessera.common.v1 import common_pb2
from tessera.experiments import results_report
from tessera.experiments.server import ExperimentsService, ExperimentsSettings
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.sticky import trait_name

pytestmark = pytest.mark.integration

Experiments = experiments_pb2_grpc.ExperimentServiceStub
Profiles = profiles_pb2_grpc.ProfileServiceStub
T = TypeVar("T")

START = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


def eventually(check: Callable[[], T], timeout_s: float = 10.0) -> T:
    """The first truthy result of `check` (background work: the sync, the feed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def person(profiles: Profiles) -> str:
    identity = common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)
    reply = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[identity]))
    return reply.profile.profile_id


def exposure(
    key: str, variant: str, profile_id: str, at: dt.datetime = START, **fields: Any
) -> experiments_pb2.Exposure:
    message = experiments_pb2.Exposure(
        exposure_id=uuid.uuid4().hex,
        experiment_key=key,
        variant_key=variant,
        profile_id=profile_id,
        **fields,
    )
    message.timestamp.FromDatetime(at)
    return message


def record(experiments: Experiments, *exposures: experiments_pb2.Exposure) -> tuple[int, int]:
    reply = experiments.RecordExposures(experiments_pb2.RecordExposuresRequest(exposures=exposures))
    return reply.accepted, reply.duplicates


def sticky_trait(profiles: Profiles, profile_id: str, key: str) -> str | None:
    traits = profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=profile_id)).profile
    value = traits.traits.fields.get(trait_name(key))
    return None if value is None else value.string_value


def running(experiments: Experiments, weights: tuple[float, float] = (1, 1)) -> str:
    created = experiments.CreateExperiment(
        experiments_pb2.CreateExperimentRequest(experiment=experiment(weights=weights))
    ).experiment
    return str(created.key)


def test_record_exposures__same_batch_again__stored_once(
    experiments: Experiments, profiles: Profiles
) -> None:
    key, profile_id = running(experiments), person(profiles)
    batch = [exposure(key, "control", profile_id), exposure(key, "control", profile_id)]

    first = record(experiments, *batch)
    again = record(experiments, *batch)

    assert first == (2, 0)
    assert again == (0, 2)


def test_record_exposures__first_exposure__profile_carries_it_as_sticky_trait(
    experiments: Experiments, profiles: Profiles
) -> None:
    key, profile_id = running(experiments), person(profiles)

    record(experiments, exposure(key, "treatment", profile_id))
    trait = eventually(lambda: sticky_trait(profiles, profile_id, key))

    assert trait == "treatment 2025-03-01T09:00:00.000000Z"


def test_record_exposures__earlier_exposure_arrives_later__earliest_stays_sticky(
    experiments: Experiments, profiles: Profiles
) -> None:
    # Two replicas' batches may arrive in any order: the first exposure in
    # time fixes the variant, not the first to arrive.
    key, profile_id = running(experiments), person(profiles)
    record(experiments, exposure(key, "control", profile_id, START + dt.timedelta(hours=1)))
    eventually(lambda: sticky_trait(profiles, profile_id, key))

    record(experiments, exposure(key, "treatment", profile_id, START))
    trait = eventually(
        lambda: (t := sticky_trait(profiles, profile_id, key)) and t.startswith("treatment ") and t
    )

    assert trait == "treatment 2025-03-01T09:00:00.000000Z"
    assignment = assign(experiments, key, profile_id)
    assert (assignment.variant_key, assignment.reason) == (
        "treatment",
        experiments_pb2.ASSIGNMENT_REASON_STICKY,
    )


def test_assign__exposed_then_weights_change__keeps_variant(
    experiments: Experiments, profiles: Profiles
) -> None:
    key = running(experiments, weights=(1, 0))
    people = [person(profiles) for _ in range(5)]
    record(experiments, *(exposure(key, "control", p) for p in people))
    changed = experiment(weights=(0, 1))
    changed.key = key
    experiments.UpdateExperiment(experiments_pb2.UpdateExperimentRequest(experiment=changed))

    kept = [assign(experiments, key, p) for p in people]
    newcomer = assign(experiments, key, person(profiles))

    assert {(a.variant_key, a.reason) for a in kept} == {
        ("control", experiments_pb2.ASSIGNMENT_REASON_STICKY)
    }
    assert newcomer.variant_key == "treatment"


def test_assign__exposed_in_holdout__stays_held_out_when_the_holdout_ends(
    experiments: Experiments, profiles: Profiles
) -> None:
    key, profile_id = running(experiments), person(profiles)
    record(experiments, exposure(key, "control", profile_id, in_holdout=True))

    assignment = assign(experiments, key, profile_id)

    assert (assignment.variant_key, assignment.in_holdout, assignment.reason) == (
        "control",
        True,
        experiments_pb2.ASSIGNMENT_REASON_HOLDOUT,
    )


def test_merge__both_exposed__survivor_keeps_the_earliest_exposure(
    experiments: Experiments, profiles: Profiles
) -> None:
    # The app profile is created first (it survives the merge), but the web
    # profile was exposed first: the web variant stays, on every channel.
    key = running(experiments)
    account = common_pb2.Identity(type="email", value=f"{uuid.uuid4().hex[:10]}@example.com")
    browser = common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)
    on_app = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[account])).profile
    on_web = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[browser])).profile
    record(experiments, exposure(key, "treatment", on_web.profile_id, START))
    record(experiments, exposure(key, "control", on_app.profile_id, START + dt.timedelta(hours=2)))
    eventually(lambda: sticky_trait(profiles, on_web.profile_id, key))
    eventually(lambda: sticky_trait(profiles, on_app.profile_id, key))

    merged = profiles.Identify(profiles_pb2.IdentifyRequest(identities=[account, browser]))

    assert merged.profile.profile_id == on_app.profile_id
    assert sticky_trait(profiles, on_app.profile_id, key) == "treatment 2025-03-01T09:00:00.000000Z"
    survivor = eventually(
        lambda: (a := assign(experiments, key, on_app.profile_id)).variant_key == "treatment" and a
    )
    assert survivor and survivor.reason == experiments_pb2.ASSIGNMENT_REASON_STICKY
    assert assign(experiments, key, on_web.profile_id).variant_key == "treatment"


def test_erasure__exposed_person__sticky_record_removed(
    experiments: Experiments, profiles: Profiles
) -> None:
    key = running(experiments, weights=(1, 0))
    profile_id = person(profiles)
    record(experiments, exposure(key, "treatment", profile_id))
    eventually(lambda: sticky_trait(profiles, profile_id, key))

    profiles.DeleteProfile(profiles_pb2.DeleteProfileRequest(profile_id=profile_id))
    after = eventually(
        lambda: (
            (a := assign(experiments, key, profile_id)).reason
            == experiments_pb2.ASSIGNMENT_REASON_HASH
            and a
        )
    )

    assert after and after.variant_key == "control"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: setattr(e, "exposure_id", ""), "exposures[0].exposure_id"),
        (lambda e: setattr(e, "experiment_key", "Not A Key"), "exposures[0].experiment_key"),
        (lambda e: setattr(e, "variant_key", ""), "exposures[0].variant_key"),
        (lambda e: setattr(e, "profile_id", ""), "exposures[0].profile_id"),
    ],
)
def test_record_exposures__bad_exposure__invalid_argument_names_field(
    experiments: Experiments, mutate: Callable[[experiments_pb2.Exposure], None], field: str
) -> None:
    bad = exposure("some-experiment", "control", "p1")
    mutate(bad)

    with pytest.raises(grpc.RpcError) as raised:
        record(experiments, bad)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert field_of(raised.value) == field


def test_record_exposures__none__invalid_argument(experiments: Experiments) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        record(experiments)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert field_of(raised.value) == "exposures"


def track(
    profiles: Profiles, profile_id: str, kind: str, at: dt.datetime, **properties: Any
) -> None:
    event = common_pb2.Event(event_id=uuid.uuid4().hex, profile_id=profile_id, type=kind)
    event.timestamp.FromDatetime(at)
    event.properties.update(properties)
    profiles.Track(profiles_pb2.TrackRequest(event=event))


def results(experiments: Experiments, key: str) -> experiments_pb2.GetResultsResponse:
    return experiments.GetResults(experiments_pb2.GetResultsRequest(experiment_key=key))


def test_get_results__goal_events_from_the_feed__conversions_after_first_exposure(
    experiments: Experiments, profiles: Profiles
) -> None:
    key = running(experiments)
    now = dt.datetime.now(dt.UTC)
    control = [person(profiles) for _ in range(3)]
    treatment = [person(profiles) for _ in range(3)]
    record(experiments, *(exposure(key, "control", p, now) for p in control))
    record(experiments, *(exposure(key, "treatment", p, now) for p in treatment))
    # Before the exposure: not a conversion. Another event type: not the goal.
    track(profiles, control[0], "purchase", now - dt.timedelta(hours=1), revenue=50.0)
    track(profiles, control[1], "add_to_cart", now + dt.timedelta(seconds=1))
    track(profiles, treatment[0], "purchase", now + dt.timedelta(seconds=1), revenue=20.0)
    track(profiles, treatment[0], "purchase", now + dt.timedelta(seconds=2), revenue=5.0)
    track(profiles, treatment[1], "purchase", now + dt.timedelta(seconds=3), revenue=10.0)

    answer = eventually(lambda: (r := results(experiments, key)).variants[1].conversions == 2 and r)

    assert answer
    by_key = {v.variant_key: v for v in answer.variants}
    assert [v.variant_key for v in answer.variants] == ["control", "treatment"]
    assert (by_key["control"].exposures, by_key["control"].conversions) == (3, 0)
    assert (by_key["treatment"].exposures, by_key["treatment"].conversions) == (3, 2)
    assert by_key["treatment"].revenue == 35.0
    assert by_key["treatment"].conversion_rate == pytest.approx(2 / 3)
    assert answer.status == experiments_pb2.RESULT_STATUS_COLLECTING
    assert answer.goal.event_type == "purchase"
    assert answer.timeline and answer.timeline[-1].variants[1].exposures == 3


def test_get_results__unknown_experiment__not_found(experiments: Experiments) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        results(experiments, "no-such-experiment")

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert field_of(raised.value) == "experiment_key"


def test_report__live_experiment__table_and_chart_from_get_results(
    experiments: Experiments,
    profiles: Profiles,
    experiments_server: ServerThread,
    tmp_path: Path,
) -> None:
    # 200 people exposed over five days; the treatment converts more.
    key = running(experiments)
    now = dt.datetime.now(dt.UTC)
    people = [person(profiles) for _ in range(200)]
    exposures = []
    for index, profile_id in enumerate(people):
        variant = "treatment" if index % 2 else "control"
        seen = now - dt.timedelta(days=5 - index % 5, hours=1)
        exposures.append(exposure(key, variant, profile_id, seen))
        # Every 5th control person converts (20 of 100), every 5th treatment
        # person and the one after (40 of 100).
        if (index // 2) % 5 == 0 or (variant == "treatment" and (index // 2) % 5 == 1):
            track(profiles, profile_id, "purchase", seen + dt.timedelta(minutes=5), revenue=9.0)
    record(experiments, *exposures)
    assert eventually(lambda: results(experiments, key).variants[1].conversions == 40)
    out, err = io.StringIO(), io.StringIO()

    code = results_report.run(
        experiments_server.address, key, tmp_path / "lift.png", out=out, err=err
    )

    assert code == 0, err.getvalue()
    built = results_report.report_from_results(results(experiments, key))
    control, treatment = built.variants
    assert (control.exposures, control.conversions) == (100, 20)
    assert (treatment.exposures, treatment.conversions) == (100, 40)
    assert treatment.relative_lift == pytest.approx(1.0)
    assert len({p.at for p in built.timeline}) >= 5
    printed = out.getvalue()
    assert "treatment" in printed and "+100.00%" in printed
    assert (tmp_path / "lift.png").stat().st_size > 10_000


def test_bandit__best_arm_converts_more__new_version_sends_it_the_traffic(
    experiments: Experiments,
    profiles: Profiles,
    store_env: dict[str, str],
    profiles_server: ServerThread,
) -> None:
    bandit = experiment()
    bandit.variants.add(key="one-click", weight=1)
    bandit.allocation = experiments_pb2.ALLOCATION_BANDIT
    key = experiments.CreateExperiment(
        experiments_pb2.CreateExperimentRequest(experiment=bandit)
    ).experiment.key
    now = dt.datetime.now(dt.UTC)
    people = {
        variant: [person(profiles) for _ in range(60)]
        for variant in ("control", "treatment", "one-click")
    }
    record(
        experiments, *(exposure(key, v, p, now) for v, members in people.items() for p in members)
    )
    for variant, converting in (("control", 6), ("treatment", 3), ("one-click", 30)):
        for profile_id in people[variant][:converting]:
            track(profiles, profile_id, "purchase", now + dt.timedelta(seconds=1))
    # A second replica of the experiment service, whose bandit runs every
    # 0.3 s (the module's own replica keeps the default hour).
    settings = {
        **_settings(store_env),
        "profiles_address": profiles_server.address,
        "bandit_interval_s": 0.3,
    }
    replica = ServerThread(lambda: ExperimentsService(ExperimentsSettings(**settings))).start()
    try:

        def allocated() -> experiments_pb2.Experiment | None:
            found = experiments.GetExperiment(experiments_pb2.GetExperimentRequest(key=key))
            weights = {v.key: v.weight for v in found.experiment.variants}
            best = weights["one-click"] / sum(weights.values())
            return found.experiment if best > 0.6 else None

        reallocated = eventually(allocated, timeout_s=20)
    finally:
        replica.stop()

    assert reallocated is not None
    weights = {v.key: v.weight for v in reallocated.variants}
    assert weights["control"] == pytest.approx(1 / 3, abs=1e-5)  # the control keeps its share
    assert weights["treatment"] < 0.01
    assert reallocated.version > 1
    kept = assign(experiments, key, people["treatment"][0])
    assert (kept.variant_key, kept.reason) == (
        "treatment",
        experiments_pb2.ASSIGNMENT_REASON_STICKY,
    )

    def watched_version() -> int:
        # The other replica's watchers get the new version within a second.
        stream = experiments.WatchExperiments(experiments_pb2.WatchExperimentsRequest())
        snapshot = next(stream)
        stream.cancel()
        return {e.key: e.version for e in snapshot.experiments}[key]

    assert eventually(lambda: watched_version() >= reallocated.version)
    # Everyone was exposed under the first, even split: no mismatch, although
    # the weights are now far from even.
    assert results(experiments, key).srm_p_value == pytest.approx(1.0)
