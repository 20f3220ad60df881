"""Bandit allocation: what the control keeps."""

from __future__ import annotations

from experiment_builders import build_experiment

from tessera.experiments.application.bandit import control_share
from tessera.experiments.domain.model import VariantDef


def test_control_share__the_controls_part_of_the_weights() -> None:
    experiment = build_experiment(
        variants=(VariantDef("control", 2.0), VariantDef("a", 3.0), VariantDef("b", 3.0))
    )

    assert control_share(experiment) == 0.25


def test_control_share__control_without_weight__nothing_kept() -> None:
    experiment = build_experiment(variants=(VariantDef("control", 0.0), VariantDef("a", 1.0)))

    assert control_share(experiment) == 0.0
