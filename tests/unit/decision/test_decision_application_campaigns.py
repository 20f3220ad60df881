"""The campaign lifecycle: each campaign stored with its experiment in line.

Against the product's catalog on SQLite and in-memory experiment and
segment services that answer as the real ones do.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from decision_fakes import FakeExperiments, FakeSegments, campaign, run_with_catalog

from tessera.catalog import Catalog
from tessera.decision.application.campaigns import Campaigns, experiment_for, normalised
from tessera.decision.v1 import decision_pb2
from tessera.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
)
from tessera.experiments.v1 import experiments_pb2

Catalogue = Catalog[decision_pb2.Campaign]


def weights(experiment: experiments_pb2.Experiment) -> dict[str, float]:
    return {v.key: v.weight for v in experiment.variants}


def test_normalised__no_control_no_status__control_added_draft_and_experiment_key() -> None:
    message = normalised(campaign("juicers", version=7))

    assert [(v.key, v.weight) for v in message.variants] == [("treatment", 1.0), ("control", 1.0)]
    assert message.control_variant_key == "control"
    assert message.status == decision_pb2.CAMPAIGN_STATUS_DRAFT
    assert message.experiment_key == "campaign-juicers"
    assert message.version == 0  # service-set fields are not taken from the caller


def test_normalised__pressure_cost__unimplemented_names_field() -> None:
    with pytest.raises(Unimplemented) as raised:
        normalised(campaign(pressure_cost=2))

    assert raised.value.field == "campaign.pressure_cost"


def test_normalised__probability_range_not_read_by_decide__unimplemented_names_field() -> None:
    # It was stored and ignored: a 0.9-1 campaign went to a visitor at 0.
    bounds = decision_pb2.ProbabilityRange(min=0.9, max=1.0)

    with pytest.raises(Unimplemented) as raised:
        normalised(campaign(conversion_probability=bounds))

    assert raised.value.field == "campaign.conversion_probability"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"pressure_cost": -1}, "campaign.pressure_cost"),
        (
            {"frequency_cap": decision_pb2.FrequencyCap(max_decisions=-3)},
            "campaign.frequency_cap.max_decisions",
        ),
        (
            {"frequency_cap": {"max_decisions": 3, "period": {"seconds": -60}}},
            "campaign.frequency_cap.period",
        ),
        ({"frequency_cap": {"period": {"seconds": -60}}}, "campaign.frequency_cap.period"),
    ],
)
def test_normalised__negative_pressure_or_cap__invalid_argument_names_field(
    fields: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        normalised(campaign(**fields))

    assert raised.value.field == field
    assert not isinstance(raised.value, Unimplemented)


def test_normalised__valid_frequency_cap__unimplemented_names_field() -> None:
    with pytest.raises(Unimplemented) as raised:
        normalised(campaign(frequency_cap={"max_decisions": 3, "period": {"seconds": 3600}}))

    assert raised.value.field == "campaign.frequency_cap"


def test_normalised__key_of_55_characters__accepted_and_experiment_key_fills_64() -> None:
    message = normalised(campaign("k" * 55))

    assert len(message.experiment_key) == 64


def test_normalised__key_of_56_characters__invalid_argument_says_55() -> None:
    with pytest.raises(InvalidArgument) as raised:
        normalised(campaign("k" * 56))

    assert raised.value.field == "campaign.key"
    assert "1 to 55" in str(raised.value)


def test_experiment_for__running_campaign__same_split_goal_and_status_whole_traffic() -> None:
    message = normalised(
        campaign(
            status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
            audience_segment_keys=["juicer-browsers"],
        )
    )

    experiment = experiment_for(message)

    assert experiment.key == "campaign-juicers"
    assert weights(experiment) == {"treatment": 1.0, "control": 1.0}
    assert experiment.control_variant_key == "control"
    assert experiment.status == experiments_pb2.EXPERIMENT_STATUS_RUNNING
    assert experiment.traffic_fraction == 1.0
    assert list(experiment.audience_segment_keys) == ["juicer-browsers"]
    assert experiment.goal == message.goal


def test_create__new_campaign__stored_with_control_and_its_experiment_created(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> decision_pb2.Campaign:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())
        return await catalog.get("juicers")

    stored = run_with_catalog(tmp_path, scenario)

    assert stored.version == 1
    assert [v.key for v in stored.variants] == ["treatment", "control"]
    assert experiments.calls == ["create campaign-juicers"]
    assert weights(experiments.experiments["campaign-juicers"]) == {
        "treatment": 1.0,
        "control": 1.0,
    }


def test_create__experiment_left_from_earlier_try__brought_in_line_and_campaign_stored(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()
    experiments.experiments["campaign-juicers"] = experiments_pb2.Experiment(
        key="campaign-juicers",
        variants=[experiments_pb2.Variant(key="old", weight=9.0)],
        status=experiments_pb2.EXPERIMENT_STATUS_STOPPED,
    )

    async def scenario(catalog: Catalogue) -> decision_pb2.Campaign:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        return await campaigns.create(campaign())

    stored = run_with_catalog(tmp_path, scenario)

    assert stored.key == "juicers"
    assert experiments.calls == ["create campaign-juicers", "update campaign-juicers"]
    experiment = experiments.experiments["campaign-juicers"]
    assert weights(experiment) == {"treatment": 1.0, "control": 1.0}
    assert experiment.status == experiments_pb2.EXPERIMENT_STATUS_DRAFT


def test_create__key_taken__already_exists_and_experiment_untouched(tmp_path: Path) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())
        with pytest.raises(AlreadyExists) as raised:
            await campaigns.create(campaign(variants=[{"key": "other", "weight": 5.0}]))
        assert raised.value.field == "campaign.key"

    run_with_catalog(tmp_path, scenario)

    assert experiments.calls == ["create campaign-juicers"]
    assert "other" not in weights(experiments.experiments["campaign-juicers"])


def test_create__unknown_audience_segment__invalid_argument_names_it_and_nothing_written(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments("vip").stub(), experiments.stub())
        with pytest.raises(InvalidArgument) as raised:
            await campaigns.create(campaign(audience_segment_keys=["vip", "ghosts"]))
        assert raised.value.field == "campaign.audience_segment_keys[1]"
        with pytest.raises(NotFound):
            await catalog.get("juicers")

    run_with_catalog(tmp_path, scenario)

    assert experiments.calls == []


def test_create__segment_service_down__unavailable_naming_segments(tmp_path: Path) -> None:
    segments = FakeSegments("vip")
    segments.fail_next = grpc.StatusCode.UNAVAILABLE

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, segments.stub(), FakeExperiments().stub())
        with pytest.raises(Unavailable, match="segments"):
            await campaigns.create(campaign(audience_segment_keys=["vip"]))

    run_with_catalog(tmp_path, scenario)


def test_create__same_key_created_meanwhile__already_exists_and_experiment_follows_it(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())

        async def other_replica() -> None:
            await catalog.create(normalised(campaign(variants=[{"key": "a", "weight": 2.0}])))

        experiments.before_create = other_replica
        with pytest.raises(AlreadyExists):
            await campaigns.create(campaign())

    run_with_catalog(tmp_path, scenario)

    assert weights(experiments.experiments["campaign-juicers"]) == {"a": 2.0, "control": 2.0}


def test_create__experiment_service_down__unavailable_and_campaign_not_stored(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()
    experiments.fail_next = grpc.StatusCode.UNAVAILABLE

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        with pytest.raises(Unavailable, match="experiments"):
            await campaigns.create(campaign())
        with pytest.raises(NotFound):
            await catalog.get("juicers")

    run_with_catalog(tmp_path, scenario)


def test_update__new_weights_and_status__experiment_settled_to_the_stored_campaign(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> decision_pb2.Campaign:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())
        changed = campaign(
            status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
            variants=[{"key": "treatment", "weight": 3.0}, {"key": "control", "weight": 1.0}],
        )
        return await campaigns.update(changed, expected_version=1)

    stored = run_with_catalog(tmp_path, scenario)

    assert stored.version == 2
    experiment = experiments.experiments["campaign-juicers"]
    assert weights(experiment) == {"treatment": 3.0, "control": 1.0}
    assert experiment.status == experiments_pb2.EXPERIMENT_STATUS_RUNNING


def test_update__holdout_set_on_the_experiment__kept_through_the_update(tmp_path: Path) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())
        experiments.experiments["campaign-juicers"].holdout.fraction = 0.05
        experiments.experiments["campaign-juicers"].salt = "kept"
        await campaigns.update(campaign(priority=3), expected_version=1)

    run_with_catalog(tmp_path, scenario)

    experiment = experiments.experiments["campaign-juicers"]
    assert experiment.holdout.fraction == pytest.approx(0.05)
    assert experiment.salt == "kept"


def test_update__experiment_service_down__unavailable_and_campaign_as_it_was(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()
    changed = campaign(variants=[{"key": "treatment", "weight": 4.0}])

    async def scenario(catalog: Catalogue) -> decision_pb2.Campaign:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())
        experiments.fail_next = grpc.StatusCode.UNAVAILABLE
        with pytest.raises(Unavailable, match="experiments"):
            await campaigns.update(changed, expected_version=1)
        return await catalog.get("juicers")

    stored = run_with_catalog(tmp_path, scenario)

    assert stored.version == 1
    assert weights(experiments.experiments["campaign-juicers"])["treatment"] == 1.0
    assert [v.weight for v in stored.variants] == [1.0, 1.0]


def test_update__retry_after_experiment_service_came_back__stored_once(tmp_path: Path) -> None:
    experiments = FakeExperiments()
    changed = campaign(variants=[{"key": "treatment", "weight": 4.0}])

    async def scenario(catalog: Catalogue) -> decision_pb2.Campaign:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())
        experiments.fail_next = grpc.StatusCode.UNAVAILABLE
        with pytest.raises(Unavailable):
            await campaigns.update(changed, expected_version=1)
        return await campaigns.update(changed, expected_version=1)

    stored = run_with_catalog(tmp_path, scenario)

    assert stored.version == 2
    assert weights(experiments.experiments["campaign-juicers"])["treatment"] == 4.0


def test_update__retry_after_answer_lost__finishes_instead_of_refusing(tmp_path: Path) -> None:
    experiments = FakeExperiments()
    changed = campaign(variants=[{"key": "treatment", "weight": 4.0}])

    async def scenario(catalog: Catalogue) -> decision_pb2.Campaign:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())
        await campaigns.update(changed, expected_version=1)
        return await campaigns.update(changed, expected_version=1)

    stored = run_with_catalog(tmp_path, scenario)

    assert stored.version == 2
    assert weights(experiments.experiments["campaign-juicers"])["treatment"] == 4.0


def test_update__other_update_stored_while_experiment_written__refused_and_experiment_restored(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> decision_pb2.Campaign:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())

        async def other_writer() -> None:
            heavier = campaign(variants=[{"key": "treatment", "weight": 7.0}])
            await catalog.update(normalised(heavier))

        experiments.before_update = other_writer
        with pytest.raises(FailedPrecondition):
            await campaigns.update(
                campaign(variants=[{"key": "treatment", "weight": 4.0}]), expected_version=1
            )
        return await catalog.get("juicers")

    stored = run_with_catalog(tmp_path, scenario)

    assert stored.version == 2
    assert weights(experiments.experiments["campaign-juicers"])["treatment"] == 7.0


def test_update__stale_version_with_other_content__failed_precondition(tmp_path: Path) -> None:
    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments().stub(), FakeExperiments().stub())
        await campaigns.create(campaign())
        await campaigns.update(campaign(priority=1), expected_version=1)
        with pytest.raises(FailedPrecondition):
            await campaigns.update(campaign(priority=2), expected_version=1)
        assert (await catalog.get("juicers")).priority == 1

    run_with_catalog(tmp_path, scenario)


def test_settle__another_update_lands_during_sync__experiment_follows_the_latest(
    tmp_path: Path,
) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())

        async def other_writer() -> None:
            heavier = campaign(variants=[{"key": "treatment", "weight": 7.0}])
            await catalog.update(normalised(heavier))

        experiments.before_update = other_writer
        await campaigns.settle("juicers")

    run_with_catalog(tmp_path, scenario)

    assert experiments.calls[1:] == ["update campaign-juicers", "update campaign-juicers"]
    assert weights(experiments.experiments["campaign-juicers"])["treatment"] == 7.0


def test_delete__campaign_removed_and_its_experiment_stopped_not_removed(tmp_path: Path) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign(status=decision_pb2.CAMPAIGN_STATUS_RUNNING))
        await campaigns.delete("juicers")
        with pytest.raises(NotFound):
            await campaigns.get("juicers")

    run_with_catalog(tmp_path, scenario)

    experiment = experiments.experiments["campaign-juicers"]
    assert experiment.status == experiments_pb2.EXPERIMENT_STATUS_STOPPED


def test_delete__experiment_service_down__campaign_kept(tmp_path: Path) -> None:
    experiments = FakeExperiments()

    async def scenario(catalog: Catalogue) -> None:
        campaigns = Campaigns(catalog, FakeSegments().stub(), experiments.stub())
        await campaigns.create(campaign())
        experiments.fail_next = grpc.StatusCode.UNAVAILABLE
        with pytest.raises(Unavailable):
            await campaigns.delete("juicers")
        assert (await campaigns.get("juicers")).key == "juicers"

    run_with_catalog(tmp_path, scenario)
