"""ExperimentService on PostgreSQL, through the generated client."""

from __future__ import annotations

import uuid

import grpc
import pytest
from support import field_of

from tessera.common.v1 import common_pb2
from tessera.experiments.domain import bucket
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc

pytestmark = pytest.mark.integration

Stub = experiments_pb2_grpc.ExperimentServiceStub


def experiment(
    weights: tuple[float, float] = (1, 1), **fields: object
) -> experiments_pb2.Experiment:
    return experiments_pb2.Experiment(
        key=f"exp-{uuid.uuid4().hex[:8]}",
        name="Hero banner",
        variants=[
            experiments_pb2.Variant(key="control", weight=weights[0]),
            experiments_pb2.Variant(key="treatment", weight=weights[1]),
        ],
        control_variant_key="control",
        status=experiments_pb2.EXPERIMENT_STATUS_RUNNING,
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        **fields,  # type: ignore[arg-type]
    )


def assign(experiments: Stub, key: str, profile_id: str) -> experiments_pb2.Assignment:
    reply = experiments.Assign(
        experiments_pb2.AssignRequest(profile_id=profile_id, experiment_keys=[key])
    )
    (assignment,) = reply.assignments
    return assignment


def test_assign__same_profile__same_variant_as_documented_hash(experiments: Stub) -> None:
    created = experiments.CreateExperiment(
        experiments_pb2.CreateExperimentRequest(experiment=experiment())
    ).experiment

    for index in range(20):
        profile_id = f"profile-{index}"
        expected = "control" if bucket(created.key, profile_id) < 0.5 else "treatment"
        first = assign(experiments, created.key, profile_id)
        again = assign(experiments, created.key, profile_id)
        assert first.variant_key == again.variant_key == expected
        assert first.reason == experiments_pb2.ASSIGNMENT_REASON_HASH


def test_assign__all_weight_on_treatment__everyone_gets_it(experiments: Stub) -> None:
    created = experiments.CreateExperiment(
        experiments_pb2.CreateExperimentRequest(experiment=experiment(weights=(0, 1)))
    ).experiment

    variants = {assign(experiments, created.key, f"p{i}").variant_key for i in range(50)}

    assert variants == {"treatment"}


def test_assign__draft__not_running_and_no_variant(experiments: Stub) -> None:
    draft = experiment(weights=(1, 1))
    draft.status = experiments_pb2.EXPERIMENT_STATUS_DRAFT
    experiments.CreateExperiment(experiments_pb2.CreateExperimentRequest(experiment=draft))

    assignment = assign(experiments, draft.key, "p1")

    assert assignment.variant_key == ""
    assert assignment.reason == experiments_pb2.ASSIGNMENT_REASON_NOT_RUNNING


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.ClearField("goal"), "experiment.goal"),
        (lambda e: setattr(e, "control_variant_key", "nope"), "experiment.control_variant_key"),
        (lambda e: setattr(e.variants[1], "weight", -1), "experiment.variants[1].weight"),
        (lambda e: setattr(e, "traffic_fraction", 1.5), "experiment.traffic_fraction"),
        (lambda e: setattr(e, "key", "Bad Key"), "experiment.key"),
    ],
)
def test_create__bad_experiment__invalid_argument_names_field(
    experiments: Stub, mutate: object, field: str
) -> None:
    bad = experiment()
    mutate(bad)  # type: ignore[operator]

    with pytest.raises(grpc.RpcError) as raised:
        experiments.CreateExperiment(experiments_pb2.CreateExperimentRequest(experiment=bad))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == field


def test_update__weights__new_version_and_watchers_see_it(experiments: Stub) -> None:
    created = experiments.CreateExperiment(
        experiments_pb2.CreateExperimentRequest(experiment=experiment())
    ).experiment
    stream = experiments.WatchExperiments(experiments_pb2.WatchExperimentsRequest())
    snapshot = next(stream)
    changed = experiment(weights=(0, 1))
    changed.key = created.key

    updated = experiments.UpdateExperiment(
        experiments_pb2.UpdateExperimentRequest(experiment=changed, expected_version=1)
    ).experiment
    change = next(stream)
    stream.cancel()

    assert created.key in {e.key for e in snapshot.experiments}
    assert updated.version == 2
    assert [(e.key, e.version) for e in change.experiments] == [(created.key, 2)]


def test_get__unknown_key__not_found(experiments: Stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        experiments.GetExperiment(experiments_pb2.GetExperimentRequest(key="missing"))

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_assign__unknown_key__answered_unknown_not_an_error(experiments: Stub) -> None:
    created = experiments.CreateExperiment(
        experiments_pb2.CreateExperimentRequest(experiment=experiment(weights=(0, 1)))
    ).experiment

    reply = experiments.Assign(
        experiments_pb2.AssignRequest(profile_id="p1", experiment_keys=["zz-missing", created.key])
    )

    assert [(a.experiment_key, a.variant_key, a.reason) for a in reply.assignments] == [
        (created.key, "treatment", experiments_pb2.ASSIGNMENT_REASON_HASH),
        ("zz-missing", "", experiments_pb2.ASSIGNMENT_REASON_UNKNOWN_EXPERIMENT),
    ]
