"""Sticky variants as profile traits: the names, the values and the one rule that merges them.

A person's first exposure to an experiment fixes their variant. The
experiment service keeps that record (its `experiments_assignment` table)
and copies it onto the profile as a reserved trait, so that Decide receives
it with the profile in its one hop to the profile service
(docs/experiments.md, "Where the sticky record lives"):

    _variant:<experiment key> = "treatment 2025-03-01T09:30:00.000000Z"
    _variant:<experiment key> = "control 2025-03-01T09:30:00.000000Z holdout"

(the variant, the first exposure in UTC, and `holdout` when the person was
held out). A string, not an object: every Decide reads the profile's traits,
and a string costs a tenth of a nested object to convert.

Three services touch these traits, so the rule lives here, in the runtime
they share: when two values meet (a later write, or two profiles merging),
the **earliest exposure wins**. The rule is a minimum, so writes commute: in
whatever order exposures, trait writes and merges arrive, every copy ends on
the person's first exposure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "GLOBAL_HOLDOUT_KEY",
    "TRAIT_PREFIX",
    "Kept",
    "StickyVariant",
    "earliest",
    "format_time",
    "kept",
    "merge_traits",
    "parse",
    "parse_time",
    "patch_traits",
    "sticky_from_traits",
    "trait_name",
]

TRAIT_PREFIX = "_variant:"
"""Traits named `_variant:<experiment key>` hold sticky variants; nothing else may use it."""

GLOBAL_HOLDOUT_KEY = "_global_holdout"
"""The reserved experiment key of the global holdout (docs/experiments.md)."""

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
HOLDOUT_MARK = "holdout"


@dataclass(frozen=True, slots=True)
class StickyVariant:
    """The variant a person was first exposed to in one experiment, and when."""

    variant_key: str
    in_holdout: bool
    exposed_at: dt.datetime

    def order(self) -> tuple[dt.datetime, str, bool]:
        """What `earliest` compares: time, then variant key, then held out last."""
        return self.exposed_at, self.variant_key, self.in_holdout

    def trait(self) -> str:
        """The trait value that carries it."""
        text = f"{self.variant_key} {format_time(self.exposed_at)}"
        return f"{text} {HOLDOUT_MARK}" if self.in_holdout else text


def trait_name(experiment_key: str) -> str:
    """The trait that holds the sticky variant of `experiment_key`."""
    return TRAIT_PREFIX + experiment_key


def format_time(moment: dt.datetime) -> str:
    """`moment` in UTC as fixed-width RFC 3339 with microseconds (sorts as it compares)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime(_TIME_FORMAT)


def parse_time(text: object) -> dt.datetime | None:
    """The moment `format_time` wrote, or None when `text` is not one."""
    # fromisoformat is a tenth of strptime's cost, and Decide reads these.
    if not isinstance(text, str) or len(text) != 27 or not text.endswith("Z"):
        return None
    try:
        return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def parse(value: Any) -> StickyVariant | None:
    """A sticky trait value, or None when it is malformed (written by hand, say)."""
    if not isinstance(value, str):
        return None
    parts = value.split(" ")
    if len(parts) not in (2, 3) or not parts[0]:
        return None
    if len(parts) == 3 and parts[2] != HOLDOUT_MARK:
        return None
    exposed_at = parse_time(parts[1])
    if exposed_at is None:
        return None
    return StickyVariant(parts[0], len(parts) == 3, exposed_at)


class Kept(NamedTuple):
    """A sticky variant as assignment needs it: the variant, and whether held out."""

    variant_key: str
    in_holdout: bool


def kept(value: str) -> Kept | None:
    """The variant a sticky trait value keeps, without reading its time; None if malformed.

    What Decide calls for every sticky trait of the profile: a split, not a
    date parse and an object per trait.
    """
    parts = value.split(" ")
    if len(parts) == 2 and parts[0]:
        return Kept(parts[0], False)
    if len(parts) == 3 and parts[0] and parts[2] == HOLDOUT_MARK:
        return Kept(parts[0], True)
    return None


def sticky_from_traits(traits: Mapping[str, Any]) -> dict[str, StickyVariant]:
    """Experiment key -> sticky variant, from a profile's traits; malformed ones are skipped."""
    found: dict[str, StickyVariant] = {}
    for name, value in traits.items():
        if name.startswith(TRAIT_PREFIX):
            sticky = parse(value)
            if sticky is not None:
                found[name[len(TRAIT_PREFIX) :]] = sticky
    return found


def earliest(kept: Any, incoming: Any) -> Any:
    """The trait value of the earlier exposure; a well-formed value beats a malformed one.

    Ties (the same microsecond) go to the smaller variant key, then to not
    held out, so every replica and service picks the same one.
    """
    old, new = parse(kept), parse(incoming)
    if new is None:
        return kept if old is not None else incoming
    if old is None:
        return incoming
    if new.order() < old.order():
        return incoming
    return kept


def patch_traits(traits: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`traits` with `patch` applied: None removes a trait; a sticky trait keeps its earliest."""
    result = dict(traits)
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        elif name.startswith(TRAIT_PREFIX) and name in result:
            result[name] = earliest(result[name], value)
        else:
            result[name] = value
    return result


def merge_traits(survivor: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, Any]:
    """Two profiles' traits merged: the survivor's win, but sticky traits keep the earliest."""
    result = {**merged, **survivor}
    for name in survivor.keys() & merged.keys():
        if name.startswith(TRAIT_PREFIX):
            result[name] = earliest(survivor[name], merged[name])
    return result
