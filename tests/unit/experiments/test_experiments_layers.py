"""assign_all: many experiments at once, layers, selection and order."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from experiment_builders import NOW, PROFILE_IDS_20K, build_experiment

from tessera.errors import InvalidArgument, NotFound
from tessera.experiments.domain.assignment import (
    AssignmentReason,
    assign,
    assign_all,
    choose_layer_experiment,
)
from tessera.experiments.domain.model import ExperimentDef, ExperimentStatus

NO_SEGMENTS: frozenset[str] = frozenset()
IDS = PROFILE_IDS_20K[:4_000]


def layer(*keys: str, **overrides: object) -> list[ExperimentDef]:
    """RUNNING 50/50 experiments sharing the layer "checkout"."""
    return [build_experiment(key=key, layer_key="checkout", **overrides) for key in keys]


def test_assign_all__layer_of_three__profile_enters_at_most_one_third_each() -> None:
    experiments = layer("banner", "button", "copy")

    entered: Counter[str] = Counter()
    for pid in IDS:
        results = assign_all(experiments, pid, NO_SEGMENTS, NOW)
        inside = [r.experiment_key for r in results if r.in_experiment]
        assert len(inside) == 1, (pid, results)
        entered[inside[0]] += 1
        taken = [r for r in results if r.reason is AssignmentReason.LAYER_TAKEN]
        assert len(taken) == 2 and all(r.variant_key == "" for r in taken)

    sd = math.sqrt(len(IDS) * (1 / 3) * (2 / 3))
    assert all(abs(entered[k] - len(IDS) / 3) <= 4 * sd for k in ("banner", "button", "copy"))


def test_assign_all__layer_choice__is_the_documented_hash() -> None:
    # docs/hashing.md: bucket("checkout:layer", "profile-000042") = 0.4431,
    # int(0.4431 * 3) = 1, so the second key in order.
    assert choose_layer_experiment("checkout", ["copy", "banner", "button"], "profile-000042") == (
        "button"
    )
    results = assign_all(layer("copy", "banner", "button"), "profile-000042", NO_SEGMENTS, NOW)
    assert [r.reason for r in results] == [
        AssignmentReason.LAYER_TAKEN,  # banner
        AssignmentReason.HASH,  # button
        AssignmentReason.LAYER_TAKEN,  # copy
    ]


def test_assign_all__no_layer__profile_can_enter_every_experiment() -> None:
    experiments = [build_experiment(key="a"), build_experiment(key="b")]

    results = assign_all(experiments, "profile-000001", NO_SEGMENTS, NOW)

    assert [(r.experiment_key, r.reason) for r in results] == [
        ("a", AssignmentReason.HASH),
        ("b", AssignmentReason.HASH),
    ]


def test_assign_all__sticky_in_layer__wins_the_layer() -> None:
    """A profile exposed to one experiment of a layer keeps that one.

    The domain rule; Decide passes the sticky variants the profile carries
    (tests/e2e/test_experiment_loop.py keeps people through changes).
    """
    experiments = layer("banner", "button", "copy")
    # Profiles the hash sends elsewhere, but who were exposed to "copy".
    elsewhere = [
        pid
        for pid in IDS[:600]
        if choose_layer_experiment("checkout", ["banner", "button", "copy"], pid) != "copy"
    ]

    for pid in elsewhere:
        results = {
            r.experiment_key: r
            for r in assign_all(experiments, pid, NO_SEGMENTS, NOW, sticky={"copy": "treatment"})
        }
        assert results["copy"].reason is AssignmentReason.STICKY
        assert results["copy"].variant_key == "treatment"
        assert results["banner"].reason is AssignmentReason.LAYER_TAKEN
        assert results["button"].reason is AssignmentReason.LAYER_TAKEN


def test_assign_all__two_stickies_in_one_layer__only_one_kept() -> None:
    """After a merge, two exposures in one layer: exclusivity holds, choice is fixed.

    The domain rule; Decide passes the sticky variants the profile carries
    (tests/e2e/test_experiment_loop.py keeps people through changes).
    """
    experiments = layer("banner", "button", "copy")
    sticky = {"banner": "control", "copy": "treatment"}

    for pid in IDS[:300]:
        results = assign_all(experiments, pid, NO_SEGMENTS, NOW, sticky=sticky)
        inside = [r.experiment_key for r in results if r.in_experiment]
        hashed = choose_layer_experiment("checkout", ["banner", "button", "copy"], pid)
        assert inside == [hashed if hashed in sticky else "banner"]


def test_assign_all__stale_sticky_in_layer__does_not_win() -> None:
    """A sticky variant that no longer exists holds no claim on the layer.

    The domain rule; Decide passes the sticky variants the profile carries
    (tests/e2e/test_experiment_loop.py keeps people through changes).
    """
    experiments = layer("banner", "button", "copy")

    for pid in IDS[:300]:
        results = assign_all(experiments, pid, NO_SEGMENTS, NOW, sticky={"copy": "removed"})
        inside = [r.experiment_key for r in results if r.in_experiment]
        assert inside == [choose_layer_experiment("checkout", ["banner", "button", "copy"], pid)]


def test_assign_all__non_running_member__holds_no_slot() -> None:
    experiments = [
        *layer("banner", "button"),
        build_experiment(key="copy", layer_key="checkout", status=ExperimentStatus.PAUSED),
    ]

    entered = Counter(
        r.experiment_key
        for pid in IDS[:3_000]
        for r in assign_all(experiments, pid, NO_SEGMENTS, NOW)
        if r.in_experiment
    )

    assert entered["banner"] + entered["button"] == 3_000


def test_assign_all__chosen_experiment_excludes_by_audience__others_still_taken() -> None:
    # Each experiment's slot is a fixed random share of the layer; an audience
    # narrows who is in it but never hands the slot to another experiment,
    # which would bias that experiment's population.
    experiments = [
        build_experiment(key="banner", layer_key="checkout", audience_segment_keys=("vip",)),
        build_experiment(key="button", layer_key="checkout"),
    ]
    pid = next(
        p for p in IDS if choose_layer_experiment("checkout", ["banner", "button"], p) == "banner"
    )

    results = assign_all(experiments, pid, {"not-vip"}, NOW)

    assert [r.reason for r in results] == [
        AssignmentReason.NOT_IN_AUDIENCE,
        AssignmentReason.LAYER_TAKEN,
    ]


def test_assign_all__layer_loser_outside_audience__reports_audience_first() -> None:
    experiments = [
        build_experiment(key="banner", layer_key="checkout"),
        build_experiment(key="button", layer_key="checkout", audience_segment_keys=("vip",)),
    ]
    pid = next(
        p for p in IDS if choose_layer_experiment("checkout", ["banner", "button"], p) == "banner"
    )

    results = assign_all(experiments, pid, NO_SEGMENTS, NOW)

    assert [r.reason for r in results] == [
        AssignmentReason.HASH,
        AssignmentReason.NOT_IN_AUDIENCE,
    ]


def test_assign_all__layer_winner__variant_split_unaffected_by_layer_hash() -> None:
    experiments = layer("banner", "button")

    variants = Counter(
        r.variant_key
        for pid in IDS
        for r in assign_all(experiments, pid, NO_SEGMENTS, NOW, only_keys=["banner"])
        if r.in_experiment
    )

    n = variants["control"] + variants["treatment"]
    assert abs(variants["treatment"] - n / 2) <= 4 * math.sqrt(n / 4), variants


def test_assign_all__only_keys__same_answer_as_asking_for_all() -> None:
    experiments = [*layer("banner", "button", "copy"), build_experiment(key="solo")]

    for pid in IDS[:300]:
        everything = {r.experiment_key: r for r in assign_all(experiments, pid, NO_SEGMENTS, NOW)}
        one = assign_all(experiments, pid, NO_SEGMENTS, NOW, only_keys=["copy"])
        assert one == [everything["copy"]]


def test_assign_all__unknown_only_key__not_found_naming_it() -> None:
    experiments = [build_experiment(key="a")]

    with pytest.raises(NotFound) as raised:
        assign_all(experiments, "p", NO_SEGMENTS, NOW, only_keys=["a", "missing"])

    assert raised.value.field == "experiment_keys[1]"


def test_assign_all__default__running_experiments_sorted_by_key() -> None:
    experiments = [
        build_experiment(key="zeta"),
        build_experiment(key="draft", status=ExperimentStatus.DRAFT),
        build_experiment(key="alpha"),
        build_experiment(key="mid", status=ExperimentStatus.STOPPED),
    ]

    default = assign_all(experiments, "p", NO_SEGMENTS, NOW)
    asked = assign_all(experiments, "p", NO_SEGMENTS, NOW, only_keys=["mid", "alpha", "mid"])

    assert [r.experiment_key for r in default] == ["alpha", "zeta"]
    assert [(r.experiment_key, r.reason) for r in asked] == [
        ("alpha", AssignmentReason.HASH),
        ("mid", AssignmentReason.NOT_RUNNING),
    ]


def test_assign_all__matches_assign_outside_layers() -> None:
    experiments = [build_experiment(key="a", traffic_fraction=0.5, holdout_fraction=0.2)]

    for pid in IDS[:500]:
        assert assign_all(experiments, pid, {"x"}, NOW) == [assign(experiments[0], pid, {"x"}, NOW)]


def test_assign_all__empty_profile_id__invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as raised:
        assign_all([build_experiment()], "", NO_SEGMENTS, NOW)

    assert raised.value.field == "profile_id"
