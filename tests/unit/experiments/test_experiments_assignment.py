"""Assignment of one experiment: order of checks, splits, stickiness, seeds.

The sticky-variant tests pin `assign`'s domain rule; a person keeping their
variant end to end (exposures recorded, the sticky record on the profile) is
pinned by tests/e2e/test_experiment_loop.py.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta

import pytest
from experiment_builders import NOW, PROFILE_IDS_20K, build_experiment
from scipy import stats

from tessera.errors import InvalidArgument
from tessera.experiments.domain.assignment import (
    AssignmentReason,
    AssignmentResult,
    assign,
    choose_variant,
)
from tessera.experiments.domain.model import ExperimentStatus, VariantDef

NO_SEGMENTS: frozenset[str] = frozenset()


def within_binomial(count: int, n: int, p: float, sds: float = 4.0) -> bool:
    """True when `count` of `n` is within `sds` binomial sds of n*p.

    4 sd keeps a correct hash passing with probability 0.99994 for a random
    population; with our fixed population the outcome is constant anyway.
    """
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


def test_assign__documented_example__matches_docs_hashing_md() -> None:
    # The worked example of docs/hashing.md: buckets 0.1714 (traffic),
    # 0.4432 (holdout) and 0.1027 (variant) for profile-000042.
    experiment = build_experiment(traffic_fraction=0.5, holdout_fraction=0.1)

    result = assign(experiment, "profile-000042", NO_SEGMENTS, NOW)

    assert result == AssignmentResult(
        "checkout-button", "control", False, AssignmentReason.HASH, {"color": "grey"}
    )
    # A traffic fraction just below the traffic bucket leaves the profile out.
    out = assign(build_experiment(traffic_fraction=0.1714), "profile-000042", NO_SEGMENTS, NOW)
    assert out.reason is AssignmentReason.NOT_IN_TRAFFIC
    # Weights 10/90 put the variant bucket 0.1027 just past the control's 0.10.
    shifted = build_experiment(
        variants=(VariantDef("control", 10.0), VariantDef("treatment", 90.0))
    )
    assert assign(shifted, "profile-000042", NO_SEGMENTS, NOW).variant_key == "treatment"


def test_assign__weights_90_10__split_matches_within_tolerance() -> None:
    experiment = build_experiment(
        variants=(VariantDef("control", 90.0), VariantDef("treatment", 10.0))
    )

    counts = Counter(
        assign(experiment, pid, NO_SEGMENTS, NOW).variant_key for pid in PROFILE_IDS_20K
    )

    assert set(counts) == {"control", "treatment"}
    assert within_binomial(counts["treatment"], len(PROFILE_IDS_20K), 0.10), counts


def test_assign__three_equal_variants__uniform_split() -> None:
    experiment = build_experiment(
        variants=(VariantDef("a", 1.0), VariantDef("b", 1.0), VariantDef("c", 1.0)),
        control_variant_key="a",
    )

    counts = Counter(
        assign(experiment, pid, NO_SEGMENTS, NOW).variant_key for pid in PROFILE_IDS_20K
    )

    assert stats.chisquare([counts["a"], counts["b"], counts["c"]]).pvalue > 0.001, counts


def test_assign__zero_weight_variant__never_chosen_by_hash() -> None:
    experiment = build_experiment(
        variants=(VariantDef("control", 1.0), VariantDef("off", 0.0), VariantDef("on", 1.0))
    )

    chosen = {
        assign(experiment, pid, NO_SEGMENTS, NOW).variant_key for pid in PROFILE_IDS_20K[:5_000]
    }

    assert chosen == {"control", "on"}


@pytest.mark.parametrize(
    ("bucket_value", "expected"),
    [(0.0, "a"), (0.2499, "a"), (0.25, "b"), (0.9999, "b")],
)
def test_choose_variant__slices__laid_out_in_variant_order(
    bucket_value: float, expected: str
) -> None:
    variants = (VariantDef("a", 1.0), VariantDef("skip", 0.0), VariantDef("b", 3.0))

    assert choose_variant(variants, bucket_value).key == expected


def test_assign__weights_change__sticky_keeps_variant() -> None:
    """A sticky variant is kept when weights change; without it the hash moves people.

    Domain only: production does not reach this path yet. No caller passes
    a sticky variant (the Assign servicer and the decision service call
    assign_all without `sticky`, and RecordExposures is unimplemented), so
    this pins the rule the exposure-wiring issue will rely on, not
    end-to-end stickiness.
    """
    before = build_experiment()
    after = build_experiment(variants=(VariantDef("control", 0.0), VariantDef("treatment", 1.0)))
    ids = PROFILE_IDS_20K[:2_000]
    exposed = {pid: assign(before, pid, NO_SEGMENTS, NOW).variant_key for pid in ids}

    kept = [assign(after, pid, NO_SEGMENTS, NOW, sticky_variant=exposed[pid]) for pid in ids]
    rehashed = [assign(after, pid, NO_SEGMENTS, NOW) for pid in ids]

    assert "control" in exposed.values()
    assert [r.variant_key for r in kept] == [exposed[pid] for pid in ids]
    assert {r.reason for r in kept} == {AssignmentReason.STICKY}
    assert {r.variant_key for r in rehashed} == {"treatment"}


def test_assign__sticky_beats_traffic_and_holdout() -> None:
    """A sticky variant is kept when traffic shrinks or a holdout is added.

    Moving people already exposed would spoil the comparison.

    Domain only: production does not reach this path yet. No caller passes
    a sticky variant (the Assign servicer and the decision service call
    assign_all without `sticky`, and RecordExposures is unimplemented), so
    this pins the rule the exposure-wiring issue will rely on, not
    end-to-end stickiness.
    """
    experiment = build_experiment(traffic_fraction=0.0001, holdout_fraction=0.9999)

    results = [
        assign(experiment, pid, NO_SEGMENTS, NOW, sticky_variant="treatment")
        for pid in PROFILE_IDS_20K[:500]
    ]

    assert {(r.variant_key, r.reason, r.in_holdout) for r in results} == {
        ("treatment", AssignmentReason.STICKY, False)
    }


def test_assign__sticky_variant_removed__falls_back_to_hash() -> None:
    """A sticky variant that no longer exists is ignored.

    Domain only: production does not reach this path yet. No caller passes
    a sticky variant (the Assign servicer and the decision service call
    assign_all without `sticky`, and RecordExposures is unimplemented), so
    this pins the rule the exposure-wiring issue will rely on, not
    end-to-end stickiness.
    """
    experiment = build_experiment()

    result = assign(experiment, "profile-000001", NO_SEGMENTS, NOW, sticky_variant="gone")

    assert result.reason is AssignmentReason.HASH
    assert result.variant_key in {"control", "treatment"}


def test_assign__sticky_but_left_audience__not_in_audience() -> None:
    """Audience is checked before the sticky variant.

    Domain only: production does not reach this path yet. No caller passes
    a sticky variant (the Assign servicer and the decision service call
    assign_all without `sticky`, and RecordExposures is unimplemented), so
    this pins the rule the exposure-wiring issue will rely on, not
    end-to-end stickiness.
    """
    experiment = build_experiment(audience_segment_keys=("vip",))

    result = assign(experiment, "profile-000001", {"other"}, NOW, sticky_variant="control")

    assert result == AssignmentResult(
        "checkout-button", "", False, AssignmentReason.NOT_IN_AUDIENCE
    )


@pytest.mark.parametrize(
    "status", [ExperimentStatus.DRAFT, ExperimentStatus.PAUSED, ExperimentStatus.STOPPED]
)
def test_assign__status_not_running__not_running_even_when_sticky(
    status: ExperimentStatus,
) -> None:
    """Status is checked before the sticky variant.

    Domain only: production does not reach this path yet. No caller passes
    a sticky variant (the Assign servicer and the decision service call
    assign_all without `sticky`, and RecordExposures is unimplemented), so
    this pins the rule the exposure-wiring issue will rely on, not
    end-to-end stickiness.
    """
    experiment = build_experiment(status=status)

    result = assign(experiment, "profile-000001", NO_SEGMENTS, NOW, sticky_variant="control")

    assert result == AssignmentResult("checkout-button", "", False, AssignmentReason.NOT_RUNNING)


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (NOW + timedelta(seconds=1), None, AssignmentReason.NOT_RUNNING),
        (None, NOW, AssignmentReason.NOT_RUNNING),
        (NOW, NOW + timedelta(seconds=1), AssignmentReason.HASH),
        (None, None, AssignmentReason.HASH),
    ],
)
def test_assign__time_window__assigns_from_start_until_before_end(
    start: object, end: object, reason: AssignmentReason
) -> None:
    experiment = build_experiment(start_time=start, end_time=end)

    assert assign(experiment, "profile-000001", NO_SEGMENTS, NOW).reason is reason


def test_assign__naive_now__read_as_utc() -> None:
    experiment = build_experiment(start_time=NOW)

    before = assign(experiment, "p", NO_SEGMENTS, NOW.replace(tzinfo=None) - timedelta(hours=1))
    after = assign(experiment, "p", NO_SEGMENTS, NOW.replace(tzinfo=None))

    assert (before.reason, after.reason) == (AssignmentReason.NOT_RUNNING, AssignmentReason.HASH)


@pytest.mark.parametrize(
    ("audience", "segments", "admitted"),
    [
        ((), set(), True),
        (("vip", "fr"), {"fr"}, True),
        (("vip", "fr"), {"de", "vip"}, True),
        (("vip", "fr"), {"de"}, False),
        (("vip",), set(), False),
    ],
)
def test_assign__audience__any_listed_segment_admits(
    audience: tuple[str, ...], segments: set[str], admitted: bool
) -> None:
    experiment = build_experiment(audience_segment_keys=audience)

    result = assign(experiment, "profile-000001", segments, NOW)

    assert (result.reason is not AssignmentReason.NOT_IN_AUDIENCE) is admitted


def test_assign__traffic_fraction_30pct__admits_30pct_within_tolerance() -> None:
    experiment = build_experiment(traffic_fraction=0.3)

    results = [assign(experiment, pid, NO_SEGMENTS, NOW) for pid in PROFILE_IDS_20K]

    admitted = sum(r.reason is AssignmentReason.HASH for r in results)
    outside = [r for r in results if r.reason is AssignmentReason.NOT_IN_TRAFFIC]
    assert admitted + len(outside) == len(results)
    assert within_binomial(admitted, len(results), 0.3), admitted
    assert {(r.variant_key, r.in_holdout) for r in outside} == {("", False)}


def test_assign__traffic_fraction_zero__means_everyone() -> None:
    experiment = build_experiment(traffic_fraction=0.0)

    reasons = {assign(experiment, pid, NO_SEGMENTS, NOW).reason for pid in PROFILE_IDS_20K[:5_000]}

    assert reasons == {AssignmentReason.HASH}


def test_assign__traffic_raised__admitted_keep_their_variant_and_newcomers_are_added() -> None:
    # Traffic and variant use separate seeds, so ramping traffic up only adds
    # people: nobody already in changes variant, nobody already in drops out.
    small = build_experiment(traffic_fraction=0.2)
    large = build_experiment(traffic_fraction=0.6)
    ids = PROFILE_IDS_20K[:5_000]

    before = {pid: assign(small, pid, NO_SEGMENTS, NOW) for pid in ids}
    after = {pid: assign(large, pid, NO_SEGMENTS, NOW) for pid in ids}

    was_in = [pid for pid in ids if before[pid].in_experiment]
    assert was_in
    assert all(after[pid].variant_key == before[pid].variant_key for pid in was_in)
    assert sum(r.in_experiment for r in after.values()) > len(was_in)


def test_assign__traffic_50pct__admitted_split_is_still_50_50() -> None:
    # Had traffic and variant shared one seed, everyone admitted (bucket < 0.5)
    # would land on the control of a 50/50 split.
    experiment = build_experiment(traffic_fraction=0.5)

    admitted = [
        r
        for r in (assign(experiment, pid, NO_SEGMENTS, NOW) for pid in PROFILE_IDS_20K)
        if r.in_experiment
    ]

    treated = sum(r.variant_key == "treatment" for r in admitted)
    assert within_binomial(treated, len(admitted), 0.5), (treated, len(admitted))


def test_assign__holdout_10pct__holds_out_on_control_within_tolerance() -> None:
    experiment = build_experiment(holdout_fraction=0.1)

    results = [assign(experiment, pid, NO_SEGMENTS, NOW) for pid in PROFILE_IDS_20K]

    held = [r for r in results if r.reason is AssignmentReason.HOLDOUT]
    assert within_binomial(len(held), len(results), 0.1), len(held)
    assert {(r.variant_key, r.in_holdout) for r in held} == {("control", True)}
    assert held[0].payload == {"color": "grey"}
    assert not any(r.in_experiment for r in held)
    # Holdout and variant use separate seeds: the rest still splits 50/50.
    rest = [r for r in results if r.reason is AssignmentReason.HASH]
    treated = sum(r.variant_key == "treatment" for r in rest)
    assert within_binomial(treated, len(rest), 0.5), (treated, len(rest))


def test_assign__holdout_within_traffic__fraction_of_admitted() -> None:
    # The holdout is taken from the profiles the traffic fraction admits.
    experiment = build_experiment(traffic_fraction=0.5, holdout_fraction=0.2)

    reasons = Counter(assign(experiment, pid, NO_SEGMENTS, NOW).reason for pid in PROFILE_IDS_20K)

    n = len(PROFILE_IDS_20K)
    assert within_binomial(reasons[AssignmentReason.NOT_IN_TRAFFIC], n, 0.5), reasons
    assert within_binomial(reasons[AssignmentReason.HOLDOUT], n, 0.1), reasons
    assert within_binomial(reasons[AssignmentReason.HASH], n, 0.4), reasons


def test_assign__salt__empty_means_key_and_a_new_salt_reshuffles() -> None:
    by_key = build_experiment(salt="")
    explicit = build_experiment(salt="checkout-button")
    renamed = build_experiment(salt="checkout-button-v2")
    ids = PROFILE_IDS_20K[:4_000]

    same = [
        assign(by_key, p, NO_SEGMENTS, NOW) == assign(explicit, p, NO_SEGMENTS, NOW) for p in ids
    ]
    moved = sum(
        assign(by_key, p, NO_SEGMENTS, NOW).variant_key
        != assign(renamed, p, NO_SEGMENTS, NOW).variant_key
        for p in ids
    )

    assert all(same)
    # Two independent 50/50 draws differ half of the time.
    assert within_binomial(moved, len(ids), 0.5), moved


def test_assign__empty_profile_id__invalid_argument_on_profile_id() -> None:
    with pytest.raises(InvalidArgument) as raised:
        assign(build_experiment(), "", NO_SEGMENTS, NOW)

    assert raised.value.field == "profile_id"
