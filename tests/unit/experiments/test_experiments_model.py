"""Validation of experiment definitions: each problem names its field path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from experiment_builders import NOW, build_experiment

from tessera.errors import InvalidArgument
from tessera.experiments.domain.assignment import AssignmentReason, assign, assign_all
from tessera.experiments.domain.model import (
    Allocation,
    ExperimentStatus,
    GoalKind,
    VariantDef,
    validate_experiment,
)

CONTROL = VariantDef("control", 1.0)
TREATMENT = VariantDef("treatment", 1.0)


WELL_FORMED: dict[str, Any] = {
    "traffic_fraction": 0.5,
    "holdout_fraction": 0.1,
    "audience_segment_keys": ("vip", "fr-buyers"),
    "layer_key": "checkout",
    "salt": "Salt_2025.v1",
    "start_time": NOW,
    "end_time": NOW + timedelta(days=14),
}


def _variants(n: int) -> tuple[VariantDef, ...]:
    return (CONTROL, *(VariantDef(f"v{i}", 1.0) for i in range(1, n)))


# Each row: a well-formed experiment with one field at its limit, the same
# field one step past it, and the field path the rejection must name. The
# accepted side pins that validation is not stricter than documented; the
# rejected side pins that the accepted value really is the limit.
@pytest.mark.parametrize(
    ("at_limit", "past_limit", "field"),
    [
        ({}, {"holdout_fraction": 1.0}, "experiment.holdout.fraction"),
        ({"key": "x" * 64}, {"key": "x" * 65}, "experiment.key"),
        ({"layer_key": "l" * 64}, {"layer_key": "l" * 65}, "experiment.layer_key"),
        ({"salt": "S" * 128}, {"salt": "S" * 129}, "experiment.salt"),
        ({"salt": "Az09_.-"}, {"salt": "Az09_.-:"}, "experiment.salt"),
        ({"traffic_fraction": 1.0}, {"traffic_fraction": 1.0001}, "experiment.traffic_fraction"),
        ({"traffic_fraction": 0.0}, {"traffic_fraction": -0.0001}, "experiment.traffic_fraction"),
        ({"holdout_fraction": 0.999}, {"holdout_fraction": 1.0}, "experiment.holdout.fraction"),
        ({"variants": _variants(100)}, {"variants": _variants(101)}, "experiment.variants"),
        ({"variants": _variants(2)}, {"variants": _variants(1)}, "experiment.variants"),
        (
            {"variants": (CONTROL, VariantDef("treatment", 0.0))},
            {"variants": (VariantDef("control", 0.0), VariantDef("treatment", 0.0))},
            "experiment.variants",
        ),
        (
            {"goal_event_type": "e" * 128},
            {"goal_event_type": "e" * 129},
            "experiment.goal.event_type",
        ),
        (
            {"end_time": NOW + timedelta(microseconds=1)},
            {"end_time": NOW},
            "experiment.end_time",
        ),
    ],
)
def test_validate__well_formed_at_limit__accepted_and_one_past_rejected(
    at_limit: dict[str, Any], past_limit: dict[str, Any], field: str
) -> None:
    accepted = build_experiment(**{**WELL_FORMED, **at_limit})
    rejected = build_experiment(**{**WELL_FORMED, **past_limit})

    assert validate_experiment(accepted) is None
    with pytest.raises(InvalidArgument) as raised:
        validate_experiment(rejected)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": ""}, "experiment.key"),
        ({"key": "Checkout"}, "experiment.key"),
        ({"key": "check out"}, "experiment.key"),
        ({"key": "x" * 65}, "experiment.key"),
        ({"variants": (CONTROL,)}, "experiment.variants"),
        ({"variants": (CONTROL, VariantDef("control", 2.0))}, "experiment.variants[1].key"),
        ({"variants": (CONTROL, VariantDef("", 1.0))}, "experiment.variants[1].key"),
        ({"variants": (CONTROL, VariantDef("treatment", -0.1))}, "experiment.variants[1].weight"),
        (
            {"variants": (CONTROL, VariantDef("treatment", float("nan")))},
            "experiment.variants[1].weight",
        ),
        (
            {"variants": (VariantDef("control", 0.0), VariantDef("treatment", 0.0))},
            "experiment.variants",
        ),
        (
            {"variants": (VariantDef("control", 1e308), VariantDef("treatment", 1e308))},
            "experiment.variants",
        ),
        (
            {"variants": (CONTROL, VariantDef("treatment", 1.0, {1: "x"}))},
            "experiment.variants[1].payload",
        ),
        ({"control_variant_key": "baseline"}, "experiment.control_variant_key"),
        ({"control_variant_key": ""}, "experiment.control_variant_key"),
        ({"traffic_fraction": 1.5}, "experiment.traffic_fraction"),
        ({"traffic_fraction": -0.1}, "experiment.traffic_fraction"),
        ({"traffic_fraction": float("inf")}, "experiment.traffic_fraction"),
        ({"audience_segment_keys": ("vip", "")}, "experiment.audience_segment_keys[1]"),
        ({"audience_segment_keys": ("vip", "vip")}, "experiment.audience_segment_keys[1]"),
        ({"layer_key": "Check Out"}, "experiment.layer_key"),
        ({"holdout_fraction": -0.5}, "experiment.holdout.fraction"),
        ({"holdout_fraction": 1.0}, "experiment.holdout.fraction"),
        ({"status": "live"}, "experiment.status"),
        ({"start_time": NOW, "end_time": NOW}, "experiment.end_time"),
        ({"start_time": NOW, "end_time": NOW - timedelta(seconds=1)}, "experiment.end_time"),
        ({"salt": "a:b"}, "experiment.salt"),
        ({"goal_event_type": ""}, "experiment.goal.event_type"),
        ({"goal_event_type": "add to cart"}, "experiment.goal.event_type"),
        ({"goal_kind": "clicks"}, "experiment.goal.kind"),
        ({"allocation": "random"}, "experiment.allocation"),
    ],
)
def test_validate__bad_field__invalid_argument_names_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    experiment = build_experiment(**overrides)

    with pytest.raises(InvalidArgument) as raised:
        validate_experiment(experiment)

    assert raised.value.field == field


def test_validate__naive_end_before_aware_start__compared_as_utc() -> None:
    # Naive datetimes are read as UTC, as protobuf's ToDatetime() returns them.
    naive_end = datetime(2025, 3, 1, 11, 0)
    experiment = build_experiment(start_time=NOW, end_time=naive_end)

    with pytest.raises(InvalidArgument) as raised:
        validate_experiment(experiment)

    assert raised.value.field == "experiment.end_time"


def test_validate__plain_string_enums__accepted_and_assigns() -> None:
    # A caller may pass the str values. Validation accepts them, so assignment
    # must treat "running" as RUNNING too: an experiment that validates but
    # never assigns anybody is a silent outage.
    experiment = build_experiment(status="running", goal_kind="conversion", allocation="bandit")

    validate_experiment(experiment)

    # Normalised at the boundary, so identity checks elsewhere hold too.
    assert experiment.status is ExperimentStatus.RUNNING
    assert experiment.goal_kind is GoalKind.CONVERSION
    assert experiment.allocation is Allocation.BANDIT
    assert experiment.is_live(NOW)
    result = assign(experiment, "profile-000001", frozenset(), NOW)
    assert result.reason in (AssignmentReason.HASH, AssignmentReason.HOLDOUT)
    assert result.variant_key in {"control", "treatment"}


def test_assign_all__plain_string_status_in_layer__assigns_like_the_enum() -> None:
    # assign_all picks RUNNING experiments and layer slots by status too.
    as_enum = [
        build_experiment(key=key, layer_key="checkout", status=ExperimentStatus.RUNNING)
        for key in ("banner", "copy")
    ]
    as_str = [
        build_experiment(key=key, layer_key="checkout", status="running")
        for key in ("banner", "copy")
    ]

    for pid in ("profile-000001", "profile-000002", "profile-000003"):
        expected = assign_all(as_enum, pid, frozenset(), NOW)
        got = assign_all(as_str, pid, frozenset(), NOW)

        assert [r.experiment_key for r in got] == ["banner", "copy"]
        assert got == expected
        assert sum(r.in_experiment for r in got) == 1


def test_experiment__empty_salt_and_zero_traffic__read_as_key_and_everyone() -> None:
    experiment = build_experiment(salt="", traffic_fraction=0.0)

    assert experiment.effective_salt == "checkout-button"
    assert experiment.effective_traffic_fraction == 1.0
    assert build_experiment(salt="s1").effective_salt == "s1"


@pytest.mark.parametrize(
    ("now", "live"),
    [
        (NOW - timedelta(microseconds=1), False),
        (NOW, True),
        (NOW + timedelta(days=1) - timedelta(microseconds=1), True),
        (NOW + timedelta(days=1), False),
        (datetime(2025, 3, 1, 13, 0, tzinfo=UTC).replace(tzinfo=None), True),
    ],
)
def test_experiment__time_window__live_from_start_until_before_end(
    now: datetime, live: bool
) -> None:
    experiment = build_experiment(start_time=NOW, end_time=NOW + timedelta(days=1))

    assert experiment.is_live(now) is live


def test_validate__bandit_on_a_revenue_goal__invalid_argument_names_allocation() -> None:
    experiment = build_experiment(goal_kind="revenue", allocation="bandit")

    with pytest.raises(InvalidArgument) as raised:
        validate_experiment(experiment)

    assert raised.value.field == "experiment.allocation"


@pytest.mark.parametrize("field", ["key", "salt"])
def test_validate__global_holdout_key_or_salt__reserved(field: str) -> None:
    experiment = build_experiment(**{field: "_global_holdout"})

    with pytest.raises(InvalidArgument) as raised:
        validate_experiment(experiment)

    assert raised.value.field == f"experiment.{field}"
