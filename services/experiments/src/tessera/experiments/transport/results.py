"""Results to GetResultsResponse (apart from convert.py, which the decision service imports)."""

from __future__ import annotations

from tessera.common.v1 import common_pb2
from tessera.convert import datetime_to_timestamp
from tessera.experiments.application.results import Answer
from tessera.experiments.domain.results import VariantResults
from tessera.experiments.transport.convert import GOAL_FROM_PROTO
from tessera.experiments.v1 import experiments_pb2

GOAL_TO_PROTO = {kind: value for value, kind in GOAL_FROM_PROTO.items()}
STATUS_TO_PROTO = {
    "collecting": experiments_pb2.RESULT_STATUS_COLLECTING,
    "significant": experiments_pb2.RESULT_STATUS_SIGNIFICANT,
    "inconclusive": experiments_pb2.RESULT_STATUS_INCONCLUSIVE,
    "broken": experiments_pb2.RESULT_STATUS_BROKEN,
}


def _variant_result(row: VariantResults) -> experiments_pb2.VariantResult:
    message = experiments_pb2.VariantResult(
        variant_key=row.variant_key,
        exposures=row.exposures,
        conversions=row.conversions,
        conversion_rate=row.conversions / row.exposures if row.exposures else 0.0,
        revenue=row.revenue,
        mean_revenue=row.revenue / row.exposures if row.exposures else 0.0,
        weight=row.weight,
    )
    compared = row.comparison
    if compared is not None:
        message.absolute_lift = compared.absolute_lift
        message.absolute_lift_ci_low, message.absolute_lift_ci_high = compared.absolute_ci
        message.relative_lift = compared.relative_lift
        message.relative_lift_ci_low, message.relative_lift_ci_high = compared.relative_ci
        (
            message.relative_lift_sequential_ci_low,
            message.relative_lift_sequential_ci_high,
        ) = compared.sequential_ci
        message.p_value = compared.p_value
        message.sequential_p_value = compared.sequential_p_value
        message.chance_to_beat_control = compared.chance_to_win
        message.cuped_applied = compared.cuped_applied
    return message


def _day_result(row: VariantResults) -> experiments_pb2.DayResult:
    message = experiments_pb2.DayResult(
        variant_key=row.variant_key, exposures=row.exposures, mean=row.mean
    )
    compared = row.comparison
    if compared is not None:
        message.absolute_lift = compared.absolute_lift
        message.relative_lift = compared.relative_lift
        message.relative_lift_ci_low, message.relative_lift_ci_high = compared.relative_ci
        (
            message.relative_lift_sequential_ci_low,
            message.relative_lift_sequential_ci_high,
        ) = compared.sequential_ci
    return message


def results_to_proto(answer: Answer) -> experiments_pb2.GetResultsResponse:
    """GetResults' answer: per variant (the control first), the split check, status, timeline."""
    results = answer.results
    return experiments_pb2.GetResultsResponse(
        experiment_key=answer.experiment_key,
        variants=[_variant_result(row) for row in results.variants],
        srm_p_value=results.srm_p_value,
        updated_at=datetime_to_timestamp(answer.computed_at),
        status=STATUS_TO_PROTO[results.status.value],
        status_reason=results.status_reason,
        goal=common_pb2.Goal(
            event_type=answer.goal_event_type, kind=GOAL_TO_PROTO[answer.goal_kind]
        ),
        holdout_exposures=results.holdout_exposures,
        timeline=[
            experiments_pb2.ResultsDay(
                date=day.date.isoformat(), variants=[_day_result(row) for row in day.variants]
            )
            for day in results.timeline
        ],
    )
