"""Experiment protos to domain values, shared with the decision service."""

from __future__ import annotations

import datetime as dt

from tessera.common.v1 import common_pb2
from tessera.convert import struct_to_dict, timestamp_to_datetime
from tessera.errors import InvalidArgument
from tessera.experiments.domain import (
    Allocation,
    AssignmentReason,
    ExperimentDef,
    ExperimentStatus,
    GoalKind,
    VariantDef,
)
from tessera.experiments.domain.exposures import Exposure
from tessera.experiments.v1 import experiments_pb2

STATUS_FROM_PROTO = {
    experiments_pb2.EXPERIMENT_STATUS_UNSPECIFIED: ExperimentStatus.DRAFT,
    experiments_pb2.EXPERIMENT_STATUS_DRAFT: ExperimentStatus.DRAFT,
    experiments_pb2.EXPERIMENT_STATUS_RUNNING: ExperimentStatus.RUNNING,
    experiments_pb2.EXPERIMENT_STATUS_PAUSED: ExperimentStatus.PAUSED,
    experiments_pb2.EXPERIMENT_STATUS_STOPPED: ExperimentStatus.STOPPED,
}
GOAL_FROM_PROTO = {
    common_pb2.GOAL_KIND_CONVERSION: GoalKind.CONVERSION,
    common_pb2.GOAL_KIND_REVENUE: GoalKind.REVENUE,
}
ALLOCATION_FROM_PROTO = {
    experiments_pb2.ALLOCATION_UNSPECIFIED: Allocation.FIXED,
    experiments_pb2.ALLOCATION_FIXED: Allocation.FIXED,
    experiments_pb2.ALLOCATION_BANDIT: Allocation.BANDIT,
}
REASON_TO_PROTO = {
    reason: experiments_pb2.AssignmentReason.Value(f"ASSIGNMENT_REASON_{reason.name}")
    for reason in AssignmentReason
}


def experiment_from_proto(message: experiments_pb2.Experiment) -> ExperimentDef:
    """The domain view of an experiment message; enums are checked here."""
    if message.status not in STATUS_FROM_PROTO:
        raise InvalidArgument(f"unknown status {message.status}", field="experiment.status")
    if message.goal.kind not in GOAL_FROM_PROTO:
        raise InvalidArgument(
            "must be GOAL_KIND_CONVERSION or GOAL_KIND_REVENUE", field="experiment.goal.kind"
        )
    if message.allocation not in ALLOCATION_FROM_PROTO:
        raise InvalidArgument(
            f"unknown allocation {message.allocation}", field="experiment.allocation"
        )
    return ExperimentDef(
        key=message.key,
        variants=tuple(
            VariantDef(v.key, v.weight, struct_to_dict(v.payload)) for v in message.variants
        ),
        control_variant_key=message.control_variant_key,
        traffic_fraction=message.traffic_fraction,
        audience_segment_keys=tuple(message.audience_segment_keys),
        layer_key=message.layer_key,
        holdout_fraction=message.holdout.fraction,
        status=STATUS_FROM_PROTO[message.status],
        start_time=timestamp_to_datetime(message.start_time),
        end_time=timestamp_to_datetime(message.end_time),
        salt=message.salt,
        goal_event_type=message.goal.event_type,
        goal_kind=GOAL_FROM_PROTO[message.goal.kind],
        allocation=ALLOCATION_FROM_PROTO[message.allocation],
        version=message.version,
    )


def exposure_from_proto(message: experiments_pb2.Exposure, received_at: dt.datetime) -> Exposure:
    """The domain view of an exposure; an unset timestamp means `received_at`."""
    return Exposure(
        exposure_id=message.exposure_id,
        experiment_key=message.experiment_key,
        variant_key=message.variant_key,
        profile_id=message.profile_id,
        seen_at=timestamp_to_datetime(message.timestamp) or received_at,
        in_holdout=message.in_holdout,
    )
