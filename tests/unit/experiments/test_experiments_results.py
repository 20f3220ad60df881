"""Results from people and goal events: what counts, the sums for the statistics, the split."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.experiments.domain.model import GoalKind
from tessera.experiments.domain.results import Outcome, compute_results
from tessera.experiments.domain.statistics import Sample, Verdict, compare, srm_p_value

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(days=3)
HOUR = dt.timedelta(hours=1)


def outcome(variant: str, at: dt.datetime = T0, **fields: object) -> Outcome:
    return Outcome(variant, False, at, None, **fields)  # type: ignore[arg-type]


def test_conversion__events_before_exposure_and_after_end__not_counted() -> None:
    people = [("a", outcome("control")), ("b", outcome("treatment")), ("c", outcome("treatment"))]
    events = [
        ("a", T0 - HOUR, 10.0),  # before the exposure
        ("b", T0 + HOUR, 20.0),
        ("b", T0 + 2 * HOUR, 5.0),  # a second purchase: still one conversion
        ("c", T0 + dt.timedelta(days=2), 7.0),  # after the end time
    ]

    results = compute_results(
        ["control", "treatment"],
        [1, 1],
        people,
        events,
        GoalKind.CONVERSION,
        NOW,
        end_time=T0 + dt.timedelta(days=1),
    )

    control, treatment = results.variants
    assert (control.exposures, control.conversions, control.revenue) == (1, 0, 0.0)
    assert (treatment.exposures, treatment.conversions, treatment.revenue) == (2, 1, 25.0)
    assert treatment.mean == 0.5


def test_conversion__comparison_is_the_statistics_of_the_same_counts() -> None:
    people = [(f"c{i}", outcome("control")) for i in range(200)]
    people += [(f"t{i}", outcome("treatment")) for i in range(200)]
    events = [(f"c{i}", T0 + HOUR, 1.0) for i in range(20)]
    events += [(f"t{i}", T0 + HOUR, 1.0) for i in range(40)]

    results = compute_results(
        ["control", "treatment"], [1, 1], people, events, GoalKind.CONVERSION, NOW
    )

    expected = compare(Sample(200, 20, 20), Sample(200, 40, 40), cuped=True)
    assert results.variants[1].comparison == expected
    assert results.srm_p_value == srm_p_value([200, 200], [1, 1]) == 1.0


def test_revenue__metric_is_revenue_per_person_with_its_squares() -> None:
    people = [("a", outcome("control")), ("b", outcome("control"))]
    people += [("c", outcome("treatment")), ("d", outcome("treatment"))]
    events = [("a", T0, 10.0), ("c", T0, 30.0), ("c", T0 + HOUR, 10.0), ("d", T0, 4.0)]

    results = compute_results(
        ["control", "treatment"], [1, 1], people, events, GoalKind.REVENUE, NOW, cuped=False
    )

    expected = compare(Sample(2, 10.0, 100.0), Sample(2, 44.0, 40.0**2 + 4.0**2))
    assert results.variants[1].comparison == expected
    assert results.variants[1].mean == 22.0


def test_cuped__covariates__summed_into_the_sample() -> None:
    people = [
        ("a", Outcome("control", False, T0, 1.0)),
        ("b", Outcome("control", False, T0, 0.0)),
        ("c", Outcome("control", False, T0, 1.0)),
        ("d", Outcome("treatment", False, T0, 1.0)),
        ("e", Outcome("treatment", False, T0, 0.0)),
        ("f", Outcome("treatment", False, T0, 0.0)),
    ]
    events = [("a", T0, 0.0), ("d", T0, 0.0), ("e", T0, 0.0)]

    results = compute_results(
        ["control", "treatment"], [1, 1], people, events, GoalKind.CONVERSION, NOW
    )

    control = Sample(3, 1, 1, pre_total=2, pre_total_squares=2, cross_total=1)
    treatment = Sample(3, 2, 2, pre_total=1, pre_total_squares=1, cross_total=1)
    assert results.variants[1].comparison == compare(control, treatment, cuped=True)


def test_holdout__counted_apart_never_in_a_variant() -> None:
    people = [
        ("a", outcome("control")),
        ("b", Outcome("control", True, T0, None)),
        ("c", outcome("treatment")),
    ]

    results = compute_results(
        ["control", "treatment"], [1, 1], people, [], GoalKind.CONVERSION, NOW
    )

    assert [v.exposures for v in results.variants] == [1, 1]
    assert results.holdout_exposures == 1


def test_srm__weights_changed_midway__each_person_judged_by_their_split() -> None:
    # 900 people under 50/50 (version 1), then 1000 under 10/90 (version 2):
    # against the current weights alone the split looks broken.
    people = [(f"a{i}", outcome("control", version=1)) for i in range(450)]
    people += [(f"b{i}", outcome("treatment", version=1)) for i in range(450)]
    people += [(f"c{i}", outcome("control", version=2)) for i in range(100)]
    people += [(f"d{i}", outcome("treatment", version=2)) for i in range(900)]
    splits = {1: {"control": 1.0, "treatment": 1.0}, 2: {"control": 1.0, "treatment": 9.0}}

    results = compute_results(
        ["control", "treatment"], [1, 9], people, [], GoalKind.CONVERSION, NOW, splits=splits
    )
    naive = srm_p_value([550, 1350], [1, 9])

    assert results.srm_p_value == pytest.approx(srm_p_value([550, 1350], [550, 1350]))
    assert results.srm_p_value > 0.99
    assert naive < 1e-10
    assert results.status is not Verdict.BROKEN


def test_srm__split_off_the_weights__broken_with_a_reason() -> None:
    people = [(f"a{i}", outcome("control")) for i in range(300)]
    people += [(f"b{i}", outcome("treatment")) for i in range(150)]

    results = compute_results(
        ["control", "treatment"], [1, 1], people, [], GoalKind.CONVERSION, NOW
    )

    assert results.status is Verdict.BROKEN
    assert results.srm_p_value < 0.001
    assert "sample ratio mismatch" in results.status_reason


def test_status__few_people__collecting() -> None:
    people = [("a", outcome("control")), ("b", outcome("treatment"))]

    results = compute_results(
        ["control", "treatment"], [1, 1], people, [], GoalKind.CONVERSION, NOW, min_sample=100
    )

    assert results.status is Verdict.COLLECTING
    assert "1 people in the smallest arm" in results.status_reason


def test_timeline__one_day_per_utc_day__cumulative() -> None:
    people = [("a", outcome("control", T0)), ("b", outcome("treatment", T0))]
    people += [("c", outcome("treatment", T0 + dt.timedelta(days=1)))]
    events = [("b", T0 + dt.timedelta(days=2), 1.0)]

    results = compute_results(
        ["control", "treatment"], [1, 1], people, events, GoalKind.CONVERSION, NOW
    )

    assert [d.date.isoformat() for d in results.timeline] == [
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
    ]
    treatment = [(d.variants[1].exposures, d.variants[1].mean) for d in results.timeline]
    assert treatment == [(1, 0.0), (2, 0.0), (2, 0.5), (2, 0.5)]
