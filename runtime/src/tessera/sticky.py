"""Sticky variants as profile traits: the names, the values and the one rule that merges them.

A person's first exposure to an experiment fixes their variant. The
experiment service keeps that record (its `experiments_assignment` table)
and copies it onto the profile as a reserved trait, so that Decide receives
it with the profile in its one hop to the profile service
(docs/experiments.md, "Where the sticky record lives"):

    _variant:<experiment key> = {"variant": "treatment", "holdout": false,
                                 "exposed_at": "2025-03-01T09:30:00.000000Z"}

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
from typing import Any

__all__ = [
    "GLOBAL_HOLDOUT_KEY",
    "TRAIT_PREFIX",
    "StickyVariant",
    "earliest",
    "format_time",
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


@dataclass(frozen=True, slots=True)
class StickyVariant:
    """The variant a person was first exposed to in one experiment, and when."""

    variant_key: str
    in_holdout: bool
    exposed_at: dt.datetime

    def order(self) -> tuple[dt.datetime, str, bool]:
        """What `earliest` compares: time, then variant key, then held out last."""
        return self.exposed_at, self.variant_key, self.in_holdout

    def trait(self) -> dict[str, Any]:
        """The trait value that carries it."""
        return {
            "variant": self.variant_key,
            "holdout": self.in_holdout,
            "exposed_at": format_time(self.exposed_at),
        }


def trait_name(experiment_key: str) -> str:
    """The trait that holds the sticky variant of `experiment_key`."""
    return TRAIT_PREFIX + experiment_key


def format_time(moment: dt.datetime) -> str:
    """`moment` in UTC as fixed-width RFC 3339 with microseconds (sorts as it compares)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> dt.datetime | None:
    """The moment `format_time` wrote, or None when `text` is not one."""
    try:
        return dt.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return None


def parse(value: Any) -> StickyVariant | None:
    """A sticky trait value, or None when it is malformed (written by hand, say)."""
    if not isinstance(value, Mapping):
        return None
    variant = value.get("variant")
    exposed_at = parse_time(value.get("exposed_at"))  # type: ignore[arg-type]
    if not isinstance(variant, str) or not variant or exposed_at is None:
        return None
    return StickyVariant(variant, value.get("holdout") is True, exposed_at)


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
