"""Exposures: that a profile saw a variant, their ids, their checks and the sticky rule.

An exposure is recorded for every decision that served an experiment's
variant or its control, and for every holdout decision. The person's first
exposure fixes their variant (`first_exposure`); every later exposure of
theirs is kept as a fact but changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tessera.errors import InvalidArgument
from tessera.sticky import GLOBAL_HOLDOUT_KEY, StickyVariant

from .model import KEY_PATTERN, as_utc

__all__ = [
    "GLOBAL_HOLDOUT_KEY",
    "GLOBAL_HOLDOUT_VARIANTS",
    "Exposure",
    "exposure_id_for",
    "first_exposure",
    "validate_exposures",
]

GLOBAL_HOLDOUT_VARIANTS = ("holdout", "personalized")
"""The arms of the global holdout: the control first."""

MAX_ID_CHARS = 256
"""Longest exposure id and profile id (the guard's id limit, and the columns')."""


@dataclass(frozen=True, slots=True)
class Exposure:
    """One profile saw one variant of one experiment at `seen_at` (aware UTC)."""

    exposure_id: str
    experiment_key: str
    variant_key: str
    profile_id: str
    seen_at: dt.datetime
    in_holdout: bool = False

    def sticky(self) -> StickyVariant:
        """The sticky variant this exposure fixes if it is the person's first."""
        return StickyVariant(self.variant_key, self.in_holdout, self.seen_at)


def exposure_id_for(
    profile_id: str, experiment_key: str, variant_key: str, in_holdout: bool, day: dt.date
) -> str:
    """The id Decide gives an exposure: one per person, experiment, variant and UTC day.

    Derived, not random, so that a batch sent again after a lost answer, or
    the same person decided again that day on any replica, is stored once:
    results count people, and the first exposure is what fixes a variant.
    """
    text = f"{profile_id}\x1f{experiment_key}\x1f{variant_key}\x1f{int(in_holdout)}\x1f{day}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def validate_exposures(exposures: Sequence[Exposure]) -> None:
    """Raise InvalidArgument naming `exposures[i].<field>` for the first malformed one."""
    if not exposures:
        raise InvalidArgument("send at least one exposure", field="exposures")
    for index, exposure in enumerate(exposures):
        path = f"exposures[{index}]"
        if not exposure.exposure_id.strip():
            raise InvalidArgument("is required", field=f"{path}.exposure_id")
        if len(exposure.exposure_id) > MAX_ID_CHARS:
            raise InvalidArgument(
                f"must be at most {MAX_ID_CHARS} characters", field=f"{path}.exposure_id"
            )
        if exposure.experiment_key != GLOBAL_HOLDOUT_KEY and not KEY_PATTERN.fullmatch(
            exposure.experiment_key
        ):
            raise InvalidArgument(
                f'must be 1 to 64 lowercase letters, digits, "_" or "-", '
                f"got {exposure.experiment_key!r}",
                field=f"{path}.experiment_key",
            )
        if not KEY_PATTERN.fullmatch(exposure.variant_key):
            raise InvalidArgument(
                f'must be 1 to 64 lowercase letters, digits, "_" or "-", '
                f"got {exposure.variant_key!r}",
                field=f"{path}.variant_key",
            )
        if not exposure.profile_id.strip() or len(exposure.profile_id) > MAX_ID_CHARS:
            raise InvalidArgument(
                f"must be a profile id of 1 to {MAX_ID_CHARS} characters",
                field=f"{path}.profile_id",
            )


def first_exposure(exposures: Iterable[Exposure]) -> Exposure:
    """The exposure that fixes the variant: the earliest, ties to the smaller variant key.

    The same rule as `tessera.sticky.earliest`, so the experiment service's
    record and the trait on the profile always agree.
    """
    return min(exposures, key=lambda e: (as_utc(e.seen_at), e.variant_key, e.in_holdout))
