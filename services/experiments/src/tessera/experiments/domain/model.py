"""The definition of an experiment, and its validation.

Plain frozen dataclasses: the servicer converts protobuf messages into these,
the store persists them, and the decision service evaluates them in-process.
`validate_experiment` is the one place that says what a well-formed
experiment is; every error names the field path a caller would fix, in the
shape of the protobuf message (`experiment.variants[1].weight`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from tessera.errors import InvalidArgument
from tessera.sticky import GLOBAL_HOLDOUT_KEY

__all__ = [
    "KEY_PATTERN",
    "SALT_PATTERN",
    "Allocation",
    "ExperimentDef",
    "ExperimentStatus",
    "GoalKind",
    "VariantDef",
    "as_utc",
    "validate_experiment",
]

#: Experiment, variant and layer keys: lowercase letters, digits, "_" and "-".
KEY_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
#: Salts carry no ":" so that no salt can equal a derived seed such as
#: "<salt>:traffic" of another experiment (see docs/hashing.md).
SALT_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_MAX_EVENT_TYPE_LEN = 128
_MAX_VARIANTS = 100


class ExperimentStatus(StrEnum):
    """Where an experiment is in its life; only RUNNING assigns anybody."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class GoalKind(StrEnum):
    """How the goal event is measured."""

    CONVERSION = "conversion"
    REVENUE = "revenue"


class Allocation(StrEnum):
    """How traffic is split between variants."""

    FIXED = "fixed"
    BANDIT = "bandit"


@dataclass(frozen=True, slots=True)
class VariantDef:
    """One arm of an experiment: a key, a relative weight and a payload."""

    key: str
    weight: float
    # Left out of the hash so a variant stays hashable although a dict is not.
    payload: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentDef:
    """An experiment as assignment sees it.

    `traffic_fraction` 0 means 1 and an empty `salt` means the key, as in the
    protobuf contract (proto3 cannot tell 0 or "" from unset). Naive datetimes
    are read as UTC.
    """

    key: str
    variants: tuple[VariantDef, ...]
    control_variant_key: str
    traffic_fraction: float = 1.0
    audience_segment_keys: tuple[str, ...] = ()
    layer_key: str = ""
    holdout_fraction: float = 0.0
    status: ExperimentStatus = ExperimentStatus.DRAFT
    start_time: datetime | None = None
    end_time: datetime | None = None
    salt: str = ""
    goal_event_type: str = ""
    goal_kind: GoalKind = GoalKind.CONVERSION
    allocation: Allocation = Allocation.FIXED
    version: int = 0
    """The stored version (raised on every change); 0 for one not stored."""

    def __post_init__(self) -> None:
        # A caller may pass the plain string values ("running"). Turn known
        # ones into members so that every comparison sees the enum; leave
        # unknown ones for validate_experiment to name the field.
        for name, kind in (
            ("status", ExperimentStatus),
            ("goal_kind", GoalKind),
            ("allocation", Allocation),
        ):
            value = getattr(self, name)
            if isinstance(value, str) and not isinstance(value, kind) and value in set(kind):
                object.__setattr__(self, name, kind(value))

    @property
    def effective_salt(self) -> str:
        """The salt hashed with profile ids: `salt`, or the key when empty."""
        return self.salt or self.key

    @property
    def effective_traffic_fraction(self) -> float:
        """The share of eligible profiles that enter: 0 is read as 1."""
        return self.traffic_fraction if self.traffic_fraction > 0 else 1.0

    def variant(self, key: str) -> VariantDef | None:
        """Return the variant called `key`, or None when there is none."""
        for variant in self.variants:
            if variant.key == key:
                return variant
        return None

    def is_live(self, now: datetime) -> bool:
        """True when the experiment is RUNNING and `now` is in [start, end)."""
        if self.status != ExperimentStatus.RUNNING:
            return False
        at = as_utc(now)
        if self.start_time is not None and at < as_utc(self.start_time):
            return False
        return self.end_time is None or at < as_utc(self.end_time)


def as_utc(moment: datetime) -> datetime:
    """Return `moment` as an aware UTC datetime; a naive one is taken as UTC.

    Protobuf's `Timestamp.ToDatetime()` returns naive UTC by default, so
    refusing naive values would only move the bug to the servicer.
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def validate_experiment(exp: ExperimentDef) -> None:
    """Raise InvalidArgument, naming the field path, unless `exp` is well formed.

    Checks run in field order and the first problem is reported, so a caller
    fixes one named field at a time.
    """
    _check_key(exp.key, "experiment.key")
    if exp.key == GLOBAL_HOLDOUT_KEY:
        raise InvalidArgument(
            f"{GLOBAL_HOLDOUT_KEY!r} is reserved for the global holdout", field="experiment.key"
        )
    _check_variants(exp.variants)

    if exp.variant(exp.control_variant_key) is None:
        raise InvalidArgument(
            f"must name one of the variants, got {exp.control_variant_key!r}",
            field="experiment.control_variant_key",
        )
    _check_fraction(exp.traffic_fraction, "experiment.traffic_fraction")

    seen_segments: set[str] = set()
    for i, segment_key in enumerate(exp.audience_segment_keys):
        path = f"experiment.audience_segment_keys[{i}]"
        if not isinstance(segment_key, str) or not segment_key.strip():
            raise InvalidArgument("must be a non-empty segment key", field=path)
        if segment_key in seen_segments:
            raise InvalidArgument(f"duplicate segment key {segment_key!r}", field=path)
        seen_segments.add(segment_key)

    if exp.layer_key:
        _check_key(exp.layer_key, "experiment.layer_key")

    _check_fraction(exp.holdout_fraction, "experiment.holdout.fraction")
    if exp.holdout_fraction >= 1:
        # A holdout of everyone leaves nobody to test: surely a mistake.
        raise InvalidArgument("must be below 1", field="experiment.holdout.fraction")

    if exp.status not in set(ExperimentStatus):
        raise InvalidArgument(
            f"must be one of {', '.join(ExperimentStatus)}", field="experiment.status"
        )
    if (
        exp.start_time is not None
        and exp.end_time is not None
        and as_utc(exp.end_time) <= as_utc(exp.start_time)
    ):
        raise InvalidArgument("must be after start_time", field="experiment.end_time")

    if exp.salt == GLOBAL_HOLDOUT_KEY:
        # Its bucket would be the global holdout's: held-out people would all
        # land on the same variants.
        raise InvalidArgument(
            f"{GLOBAL_HOLDOUT_KEY!r} is reserved for the global holdout", field="experiment.salt"
        )
    if exp.salt and not SALT_PATTERN.fullmatch(exp.salt):
        raise InvalidArgument(
            'must be 1 to 128 letters, digits, "_", "." or "-" (no ":"), or empty for the key',
            field="experiment.salt",
        )

    event_type = exp.goal_event_type
    if not event_type or not event_type.strip():
        raise InvalidArgument(
            "an experiment needs a goal event type", field="experiment.goal.event_type"
        )
    if len(event_type) > _MAX_EVENT_TYPE_LEN or any(c.isspace() for c in event_type):
        raise InvalidArgument(
            f"must be at most {_MAX_EVENT_TYPE_LEN} characters without spaces",
            field="experiment.goal.event_type",
        )
    if exp.goal_kind not in set(GoalKind):
        raise InvalidArgument(f"must be one of {', '.join(GoalKind)}", field="experiment.goal.kind")
    if exp.allocation not in set(Allocation):
        raise InvalidArgument(
            f"must be one of {', '.join(Allocation)}", field="experiment.allocation"
        )
    if exp.allocation == Allocation.BANDIT and exp.goal_kind != GoalKind.CONVERSION:
        # Thompson sampling draws conversion rates from Beta posteriors.
        raise InvalidArgument(
            "bandit allocation needs a conversion goal (GOAL_KIND_CONVERSION)",
            field="experiment.allocation",
        )


def _check_key(value: object, path: str) -> None:
    if not isinstance(value, str) or not KEY_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f'must be 1 to 64 lowercase letters, digits, "_" or "-", got {value!r}',
            field=path,
        )


def _check_fraction(value: object, path: str) -> None:
    # bool is an int; a True fraction is a bug in the caller, not 1.0.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise InvalidArgument(f"must be a number from 0 to 1, got {value!r}", field=path)


def _check_variants(variants: tuple[VariantDef, ...]) -> None:
    if len(variants) < 2:
        raise InvalidArgument(
            "an experiment needs at least two variants", field="experiment.variants"
        )
    if len(variants) > _MAX_VARIANTS:
        raise InvalidArgument(
            f"an experiment has at most {_MAX_VARIANTS} variants", field="experiment.variants"
        )
    seen: set[str] = set()
    for i, variant in enumerate(variants):
        path = f"experiment.variants[{i}]"
        _check_key(variant.key, f"{path}.key")
        if variant.key in seen:
            raise InvalidArgument(f"duplicate variant key {variant.key!r}", field=f"{path}.key")
        seen.add(variant.key)
        weight = variant.weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise InvalidArgument(
                f"must be a finite number >= 0, got {weight!r}", field=f"{path}.weight"
            )
        if not isinstance(variant.payload, Mapping) or not all(
            isinstance(k, str) for k in variant.payload
        ):
            raise InvalidArgument("must be an object with string keys", field=f"{path}.payload")
    if not any(v.weight > 0 for v in variants):
        raise InvalidArgument(
            "at least one variant needs a weight above 0", field="experiment.variants"
        )
    # Weights near the float maximum each pass, but their sum is infinite and
    # every share of it 0: the hash would give everyone the last variant.
    if not math.isfinite(sum(v.weight for v in variants)):
        raise InvalidArgument(
            "the weights must add up to a finite number; they are relative, use small ones",
            field="experiment.variants",
        )
