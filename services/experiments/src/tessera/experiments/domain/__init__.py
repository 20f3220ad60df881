"""The experiment domain: definitions, validation, hashing and assignment.

Plain Python with no grpc, protobuf or SQL, so the decision service can
import it and assign in-process exactly as ExperimentService does.
"""

from .assignment import (
    AssignmentReason,
    AssignmentResult,
    assign,
    assign_all,
    choose_layer_experiment,
    choose_variant,
)
from .hashing import bucket, fnv1a_32
from .model import (
    Allocation,
    ExperimentDef,
    ExperimentStatus,
    GoalKind,
    VariantDef,
    validate_experiment,
)

__all__ = [
    "Allocation",
    "AssignmentReason",
    "AssignmentResult",
    "ExperimentDef",
    "ExperimentStatus",
    "GoalKind",
    "VariantDef",
    "assign",
    "assign_all",
    "bucket",
    "choose_layer_experiment",
    "choose_variant",
    "fnv1a_32",
    "validate_experiment",
]
