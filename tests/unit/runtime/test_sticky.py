"""Sticky variants as traits: the earliest exposure wins, whatever order values meet in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tessera.sticky import (
    Kept,
    StickyVariant,
    earliest,
    kept,
    merge_traits,
    patch_traits,
    sticky_from_traits,
    trait_name,
)

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


def value(variant: str, minutes: int, holdout: bool = False) -> str:
    return StickyVariant(variant, holdout, T0 + dt.timedelta(minutes=minutes)).trait()


def test_trait__readable_string__variant_time_and_holdout() -> None:
    assert value("treatment", 0) == "treatment 2025-03-01T09:00:00.000000Z"
    assert value("control", 1, holdout=True) == "control 2025-03-01T09:01:00.000000Z holdout"
    assert kept(value("control", 1, holdout=True)) == Kept("control", True)
    assert kept("control 2025-03-01T09:01:00.000000Z maybe") is None


def test_trait__round_trips_through_sticky_from_traits() -> None:
    traits = {trait_name("campaign-hero"): value("treatment", 5, holdout=True), "plan": "gold"}

    assert sticky_from_traits(traits) == {
        "campaign-hero": StickyVariant("treatment", True, T0 + dt.timedelta(minutes=5))
    }


def test_sticky_from_traits__malformed_value__skipped() -> None:
    traits = {
        trait_name("a"): "treatment",
        trait_name("b"): "x yesterday",
        trait_name("c"): " 2025-03-01T09:00:00.000000Z",
        trait_name("d"): {"variant": "x", "exposed_at": "2025-03-01T09:00:00.000000Z"},
    }

    assert sticky_from_traits(traits) == {}


def test_patch_traits__later_exposure__earlier_kept() -> None:
    name = trait_name("e")
    traits = {name: value("control", 0)}

    patched = patch_traits(traits, {name: value("treatment", 10)})

    assert patched[name] == value("control", 0)


def test_patch_traits__earlier_exposure__replaces() -> None:
    name = trait_name("e")

    patched = patch_traits({name: value("control", 10)}, {name: value("treatment", 0)})

    assert patched[name] == value("treatment", 0)


def test_patch_traits__ordinary_trait_and_none__set_and_removed() -> None:
    patched = patch_traits({"plan": "gold", "tier": 1}, {"plan": "silver", "tier": None})

    assert patched == {"plan": "silver"}


def test_merge_traits__survivor_wins_ordinary_traits_earliest_wins_sticky() -> None:
    name = trait_name("e")
    survivor = {"plan": "gold", name: value("control", 30)}
    merged = {"plan": "free", "country": "FR", name: value("treatment", 5)}

    assert merge_traits(survivor, merged) == {
        "plan": "gold",
        "country": "FR",
        name: value("treatment", 5),
    }


def test_earliest__same_moment__smaller_variant_key() -> None:
    assert earliest(value("b", 0), value("a", 0)) == value("a", 0)
    assert earliest(value("a", 0), value("b", 0)) == value("a", 0)


def test_earliest__malformed_kept__well_formed_replaces_it() -> None:
    assert earliest("junk", value("a", 0)) == value("a", 0)
    assert earliest(value("a", 0), "junk") == value("a", 0)


stickies = st.builds(
    StickyVariant,
    st.sampled_from(["control", "treatment", "b"]),
    st.booleans(),
    st.integers(0, 10_000).map(lambda m: T0 + dt.timedelta(minutes=m)),
)


@given(st.lists(stickies, min_size=1, max_size=8), st.randoms())
def test_patch_traits__any_order_of_writes__ends_on_the_first_exposure(
    exposures: list[StickyVariant], rng: Any
) -> None:
    writes = [e.trait() for e in exposures]
    name = trait_name("e")
    shuffled = list(writes)
    rng.shuffle(shuffled)
    traits: dict[str, Any] = {}

    for write in shuffled:
        traits = patch_traits(traits, {name: write})

    first = min(exposures, key=StickyVariant.order)
    assert traits[name] == first.trait()
