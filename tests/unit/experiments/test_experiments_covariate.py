"""CUPED's covariate: the goal metric in the whole days before the first exposure, from history."""

from __future__ import annotations

import datetime as dt

from tessera.experiments.domain.covariate import pre_exposure_value
from tessera.experiments.domain.model import GoalKind

EXPOSED = dt.datetime(2026, 3, 15, 10, 0, tzinfo=dt.UTC)
DAY = (dt.date(2026, 3, 15) - dt.date(1970, 1, 1)).days
"""Days since 1970-01-01 of the exposure's UTC day."""


def test_revenue__sums_the_window_before_the_exposure_day() -> None:
    days = [DAY - 20, DAY - 14, DAY - 1, DAY]
    counts = [1, 1, 2, 1]
    revenues = [100.0, 10.0, 5.0, 1000.0]

    value = pre_exposure_value(GoalKind.REVENUE, days, counts, revenues, EXPOSED, 14)

    # DAY - 20 is before the window; the exposure's own day is left out.
    assert value == 15.0


def test_conversion__one_when_the_goal_happened_in_the_window() -> None:
    assert pre_exposure_value(GoalKind.CONVERSION, [DAY - 3], [2], None, EXPOSED, 14) == 1.0
    assert pre_exposure_value(GoalKind.CONVERSION, [DAY - 15], [2], None, EXPOSED, 14) == 0.0
    assert pre_exposure_value(GoalKind.CONVERSION, [DAY], [1], None, EXPOSED, 14) == 0.0


def test_revenue__events_without_revenue__zero() -> None:
    assert pre_exposure_value(GoalKind.REVENUE, [DAY - 1], [3], None, EXPOSED, 14) == 0.0
