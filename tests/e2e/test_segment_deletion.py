"""Safe deletion: a segment a campaign, an experiment or another segment uses stays.

Driven through the generated clients of the running suite: the segment
service asks the decision and experiment services who uses the segment
(docs/rules.md, "Deleting a segment").
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from scenario import campaign, segment, unique

from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2
from tessera.experiments.v1 import experiments_pb2
from tessera.segments.v1 import segments_pb2


def experiment(tessera: Any, key: str, audience: list[str]) -> experiments_pb2.Experiment:
    created: experiments_pb2.Experiment = tessera.experiments.CreateExperiment(
        experiments_pb2.CreateExperimentRequest(
            experiment=experiments_pb2.Experiment(
                key=key,
                name=key,
                variants=[
                    experiments_pb2.Variant(key="control", weight=1),
                    experiments_pb2.Variant(key="treatment", weight=1),
                ],
                control_variant_key="control",
                audience_segment_keys=audience,
                status=experiments_pb2.EXPERIMENT_STATUS_RUNNING,
                goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
            )
        )
    ).experiment
    return created


def delete(tessera: Any, key: str) -> None:
    tessera.segments.DeleteSegment(segments_pb2.DeleteSegmentRequest(key=key))


def refusal(tessera: Any, key: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        delete(tessera, key)
    return raised.value


def exists(tessera: Any, key: str) -> bool:
    try:
        tessera.segments.GetSegment(segments_pb2.GetSegmentRequest(key=key))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        return False
    return True


def test_delete_segment__used_by_campaign_experiment_and_segment__refused_naming_each(
    tessera: Any,
) -> None:
    base = unique("juicer-fans")
    segment(tessera, base, 'count(product_view where category == "juicers", within=30d) >= 2')
    user = unique("juicer-fans-fr")
    segment(tessera, user, f'segment("{base}") and trait.country == "FR"')
    promo = campaign(tessera, unique("juicer-promo"), [unique("hero")], [base])
    test = experiment(tessera, unique("juicer-copy"), [base])

    error = refusal(tessera, base)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    details = error.details()  # type: ignore[attr-defined]
    assert details == (
        f"key: segment {base!r} is still used by campaigns {promo.key}; "
        f"experiments {test.key}; segments {user}; change or delete them first"
    )
    assert promo.experiment_key not in details  # named through its campaign
    assert exists(tessera, base)

    # Take the users away one by one: each refusal names what is left.
    delete(tessera, user)
    assert f"segments {user}" not in refusal(tessera, base).details()  # type: ignore[attr-defined]
    tessera.decision.DeleteCampaign(decision_pb2.DeleteCampaignRequest(key=promo.key))
    left = refusal(tessera, base).details()  # type: ignore[attr-defined]
    assert left.endswith(f"still used by experiments {test.key}; change or delete them first")
    test.status = experiments_pb2.EXPERIMENT_STATUS_STOPPED
    tessera.experiments.UpdateExperiment(experiments_pb2.UpdateExperimentRequest(experiment=test))

    delete(tessera, base)

    assert not exists(tessera, base)


def test_delete_segment__used_by_a_paused_campaign__still_refused(tessera: Any) -> None:
    audience = unique("dormant")
    segment(tessera, audience, "count(purchase, within=365d) == 0")
    promo = campaign(tessera, unique("win-back"), [unique("hero")], [audience])
    promo.status = decision_pb2.CAMPAIGN_STATUS_PAUSED
    tessera.decision.UpdateCampaign(decision_pb2.UpdateCampaignRequest(campaign=promo))

    error = refusal(tessera, audience)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert f"campaigns {promo.key};" in error.details()  # type: ignore[attr-defined]
    assert exists(tessera, audience)


def test_delete_segment__unknown_key__not_found_without_asking_others(tessera: Any) -> None:
    error = refusal(tessera, unique("never-made"))

    assert error.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
