"""Builders shared by the experiment domain tests.

A plain module with a unique name rather than a conftest.py, so that
`from experiment_builders import ...` cannot pick up another folder's conftest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tessera.experiments.domain.model import ExperimentDef, ExperimentStatus, VariantDef

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# A fixed population: every statistical test draws the same ids, so a test
# that passes once passes always (and one that fails points at a real change).
PROFILE_IDS_20K = tuple(f"profile-{i:06d}" for i in range(20_000))


def build_experiment(**overrides: Any) -> ExperimentDef:
    """A valid, RUNNING 50/50 experiment; `overrides` replace any field."""
    fields: dict[str, Any] = {
        "key": "checkout-button",
        "variants": (
            VariantDef("control", 1.0, {"color": "grey"}),
            VariantDef("treatment", 1.0, {"color": "green"}),
        ),
        "control_variant_key": "control",
        "status": ExperimentStatus.RUNNING,
        "goal_event_type": "purchase",
    }
    fields.update(overrides)
    return ExperimentDef(**fields)
