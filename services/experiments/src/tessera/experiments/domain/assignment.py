"""Deterministic, sticky assignment of profiles to experiment variants.

`assign` decides one experiment for one profile; `assign_all` decides every
experiment at once and enforces layers (mutual exclusion). Both are pure: the
same definitions, profile id, segments, time and sticky variants give the same
answer on every replica. The hash and seeds are specified in docs/hashing.md;
the seed helpers below are the single source of those strings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tessera.errors import FailedPrecondition, InvalidArgument, NotFound

from .hashing import bucket
from .model import ExperimentDef, ExperimentStatus, VariantDef

__all__ = [
    "AssignmentReason",
    "AssignmentResult",
    "assign",
    "assign_all",
    "choose_layer_experiment",
    "choose_variant",
    "holdout_seed",
    "layer_seed",
    "traffic_seed",
    "variant_seed",
]

_NO_STICKY: Mapping[str, str] = MappingProxyType({})


class AssignmentReason(StrEnum):
    """Why a profile got, or did not get, a variant."""

    HASH = "hash"
    STICKY = "sticky"
    NOT_IN_AUDIENCE = "not_in_audience"
    NOT_IN_TRAFFIC = "not_in_traffic"
    NOT_RUNNING = "not_running"
    HOLDOUT = "holdout"
    LAYER_TAKEN = "layer_taken"


@dataclass(frozen=True, slots=True)
class AssignmentResult:
    """The outcome for one experiment and one profile.

    `variant_key` is empty when the profile is not in the experiment, and is
    the control when `in_holdout` (held-out profiles see the control but are
    not counted). `payload` is the payload of `variant_key`, empty when none.
    """

    experiment_key: str
    variant_key: str
    in_holdout: bool
    reason: AssignmentReason
    payload: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def in_experiment(self) -> bool:
        """True when the profile takes part (HASH or STICKY) and can be exposed."""
        return self.reason in (AssignmentReason.HASH, AssignmentReason.STICKY)


# Seeds. Each decision hashes the profile under its own seed so that the
# decisions are statistically independent: with one shared seed, a 50% traffic
# fraction would admit only buckets below 0.5, which all fall on the first
# variant of a 50/50 split. Salts cannot contain ":", so no derived seed
# equals another experiment's variant seed.


def variant_seed(salt: str) -> str:
    """Seed of the variant bucket: the salt itself, as GrowthBook seeds by key."""
    return salt


def traffic_seed(salt: str) -> str:
    """Seed of the traffic bucket: `<salt>:traffic`."""
    return f"{salt}:traffic"


def holdout_seed(salt: str) -> str:
    """Seed of the holdout bucket: `<salt>:holdout`."""
    return f"{salt}:holdout"


def layer_seed(layer_key: str) -> str:
    """Seed of the bucket that picks one experiment of a layer: `<layer_key>:layer`."""
    return f"{layer_key}:layer"


def choose_variant(variants: Sequence[VariantDef], bucket_value: float) -> VariantDef:
    """Return the variant whose slice of [0, 1) holds `bucket_value`.

    Weights are normalised by their sum and laid out in the variants' order;
    zero-weight variants get an empty slice and are never chosen by the hash.
    """
    total = sum(v.weight for v in variants if v.weight > 0)
    if total <= 0:
        raise FailedPrecondition("no variant has a weight above 0", field="experiment.variants")
    target = bucket_value * total
    cumulative = 0.0
    chosen: VariantDef | None = None
    for variant in variants:
        if variant.weight <= 0:
            continue
        cumulative += variant.weight
        chosen = variant
        if target < cumulative:
            return variant
    # Only reached when rounding puts the running sum just below target;
    # the last weighted variant owns the top of the range.
    assert chosen is not None
    return chosen


def choose_layer_experiment(
    layer_key: str, experiment_keys: Collection[str], profile_id: str
) -> str:
    """Return which of a layer's experiments the profile may enter.

    The experiments are sorted by key and the profile's bucket under
    `layer_seed(layer_key)` indexes them: each gets an equal share.
    """
    ordered = sorted(experiment_keys)
    if not ordered:
        raise ValueError("a layer needs at least one experiment")
    index = int(bucket(layer_seed(layer_key), profile_id) * len(ordered))
    return ordered[min(index, len(ordered) - 1)]


def assign(
    experiment: ExperimentDef,
    profile_id: str,
    segment_keys: Collection[str],
    now: datetime,
    sticky_variant: str | None = None,
    sticky_holdout: bool = False,
) -> AssignmentResult:
    """Assign one profile to one experiment, ignoring layers.

    In order: the experiment must be RUNNING with `now` in [start, end)
    (else NOT_RUNNING); the profile must be in one of the audience segments,
    if any (else NOT_IN_AUDIENCE); a `sticky_variant` that is still a variant
    is kept (STICKY), whatever the weights, traffic or holdout now say, and
    with `sticky_holdout` (the person was first exposed as held out) kept
    in the holdout on that variant, the control (HOLDOUT); then
    the traffic bucket must fall below the traffic fraction (else
    NOT_IN_TRAFFIC); then a holdout bucket below the holdout fraction holds
    the profile out on the control (HOLDOUT); else the variant bucket picks a
    variant by weight (HASH). `profile_id` must be the canonical id, so that
    a person keeps one assignment across identities.
    """
    if not profile_id:
        raise InvalidArgument("a canonical profile id is required", field="profile_id")
    key = experiment.key
    if not experiment.is_live(now):
        return _outside(key, AssignmentReason.NOT_RUNNING)
    if not _in_audience(experiment, segment_keys):
        return _outside(key, AssignmentReason.NOT_IN_AUDIENCE)

    if sticky_variant:
        kept = experiment.variant(sticky_variant)
        if kept is not None:
            if sticky_holdout:
                return AssignmentResult(key, kept.key, True, AssignmentReason.HOLDOUT, kept.payload)
            return AssignmentResult(key, kept.key, False, AssignmentReason.STICKY, kept.payload)

    salt = experiment.effective_salt
    if bucket(traffic_seed(salt), profile_id) >= experiment.effective_traffic_fraction:
        return _outside(key, AssignmentReason.NOT_IN_TRAFFIC)

    if (
        experiment.holdout_fraction > 0
        and bucket(holdout_seed(salt), profile_id) < experiment.holdout_fraction
    ):
        control = experiment.variant(experiment.control_variant_key)
        if control is None:
            raise FailedPrecondition(
                "must name one of the variants", field="experiment.control_variant_key"
            )
        return AssignmentResult(key, control.key, True, AssignmentReason.HOLDOUT, control.payload)

    chosen = choose_variant(experiment.variants, bucket(variant_seed(salt), profile_id))
    return AssignmentResult(key, chosen.key, False, AssignmentReason.HASH, chosen.payload)


def assign_all(
    experiments: Iterable[ExperimentDef],
    profile_id: str,
    segment_keys: Collection[str],
    now: datetime,
    only_keys: Sequence[str] = (),
    sticky: Mapping[str, str] = _NO_STICKY,
    sticky_holdout: Collection[str] = frozenset(),
) -> list[AssignmentResult]:
    """Assign one profile to many experiments, enforcing layers; sorted by key.

    `sticky` maps experiment key to the variant the profile was first exposed
    to; `sticky_holdout` names the experiments of `sticky` whose first
    exposure was held out.
    With `only_keys` empty, every RUNNING experiment is answered; otherwise
    exactly those keys (NotFound names the first unknown one). Layers are
    always resolved over all of `experiments`, so asking for one key gives
    the same answer as asking for all.

    Among RUNNING experiments sharing a non-empty `layer_key`, the profile
    may enter one: an experiment whose sticky variant `assign` would keep
    (held out or not) wins the layer (the hashed choice first, if it is one of them, else the
    lowest key); otherwise `choose_layer_experiment` picks. Every other live
    experiment of the layer whose audience holds the profile answers
    LAYER_TAKEN.
    """
    if not profile_id:
        raise InvalidArgument("a canonical profile id is required", field="profile_id")
    by_key: dict[str, ExperimentDef] = {}
    for experiment in experiments:
        if experiment.key in by_key:
            raise ValueError(f"experiment {experiment.key!r} given twice")
        by_key[experiment.key] = experiment

    if only_keys:
        for i, wanted in enumerate(only_keys):
            if wanted not in by_key:
                raise NotFound(f"no experiment {wanted!r}", field=f"experiment_keys[{i}]")
        selected = sorted(set(only_keys))
    else:
        selected = sorted(k for k, e in by_key.items() if e.status == ExperimentStatus.RUNNING)

    segments = frozenset(segment_keys)
    # Only the layers of the experiments asked for are resolved: a Decide
    # asks for a few keys among every experiment, and the others' layers
    # cannot change its answer.
    asked_layers = {_layer_of(by_key[key]) for key in selected}
    asked_layers.discard("")
    winners = (
        _layer_winners(
            by_key.values(), profile_id, segments, now, sticky, sticky_holdout, asked_layers
        )
        if asked_layers
        else {}
    )

    results: list[AssignmentResult] = []
    for key in selected:
        experiment = by_key[key]
        layer = _layer_of(experiment)
        if layer and winners[layer] != key:
            results.append(_layer_loser(experiment, segments, now))
        else:
            results.append(
                assign(
                    experiment, profile_id, segments, now, sticky.get(key), key in sticky_holdout
                )
            )
    return results


def _layer_of(experiment: ExperimentDef) -> str:
    # Only RUNNING experiments hold a slot of their layer. One that has
    # passed its end time but is still RUNNING keeps its slot, so the others
    # are not reshuffled by the clock, only by a change of status.
    if experiment.status == ExperimentStatus.RUNNING:
        return experiment.layer_key
    return ""


def _layer_winners(
    experiments: Iterable[ExperimentDef],
    profile_id: str,
    segments: frozenset[str],
    now: datetime,
    sticky: Mapping[str, str],
    sticky_holdout: Collection[str],
    only_layers: Collection[str],
) -> dict[str, str]:
    layers: dict[str, list[ExperimentDef]] = defaultdict(list)
    for experiment in experiments:
        layer = _layer_of(experiment)
        if layer and layer in only_layers:
            layers[layer].append(experiment)

    winners: dict[str, str] = {}
    for layer, members in layers.items():
        hashed = choose_layer_experiment(layer, [m.key for m in members], profile_id)
        kept = sorted(
            m.key
            for m in members
            if m.key in sticky
            and _kept(
                assign(m, profile_id, segments, now, sticky[m.key], m.key in sticky_holdout),
                sticky[m.key],
            )
        )
        if not kept or hashed in kept:
            winners[layer] = hashed
        else:
            winners[layer] = kept[0]
    return winners


def _kept(result: AssignmentResult, sticky_variant: str) -> bool:
    """True when `assign` kept the sticky variant (held out or not)."""
    kept = result.reason in (AssignmentReason.STICKY, AssignmentReason.HOLDOUT)
    return kept and result.variant_key == sticky_variant


def _layer_loser(
    experiment: ExperimentDef, segments: frozenset[str], now: datetime
) -> AssignmentResult:
    # Report the reason that comes first in `assign`'s order: a profile that
    # could never enter should not be told another experiment took its place.
    if not experiment.is_live(now):
        return _outside(experiment.key, AssignmentReason.NOT_RUNNING)
    if not _in_audience(experiment, segments):
        return _outside(experiment.key, AssignmentReason.NOT_IN_AUDIENCE)
    return _outside(experiment.key, AssignmentReason.LAYER_TAKEN)


def _in_audience(experiment: ExperimentDef, segment_keys: Collection[str]) -> bool:
    audience = experiment.audience_segment_keys
    return not audience or any(k in segment_keys for k in audience)


def _outside(experiment_key: str, reason: AssignmentReason) -> AssignmentResult:
    return AssignmentResult(experiment_key, "", False, reason)
