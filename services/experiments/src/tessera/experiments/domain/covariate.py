"""The CUPED covariate: a person's goal metric in the days before their first exposure.

CUPED (Deng, Xu, Kohavi and Walker, "Improving the Sensitivity of Online
Controlled Experiments by Utilizing Pre-Experiment Data", WSDM 2013) narrows
the interval of a lift by the part of each person's metric their own past
predicts. The covariate must not depend on the variant, so it is measured
strictly before the exposure: over the `window_days` whole UTC days before
the day of the first exposure, from the daily counts and sums the profile
service keeps of every person's events (its event history, read at the
day's granularity it is kept at). The exposure's own day is left out, so an
event after the exposure can never leak into it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from .model import GoalKind

__all__ = ["DEFAULT_WINDOW_DAYS", "pre_exposure_value"]

DEFAULT_WINDOW_DAYS = 14
"""TESSERA_CUPED_WINDOW_DAYS: days before the exposure the covariate covers."""

_EPOCH = dt.date(1970, 1, 1)


def pre_exposure_value(
    goal_kind: GoalKind,
    days: Sequence[int],
    counts: Sequence[int],
    revenues: Sequence[float] | None,
    exposed_at: dt.datetime,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> float:
    """The goal metric over the window before `exposed_at`.

    `days` (days since 1970-01-01, UTC), `counts` and `revenues` are one
    event type's daily series, aligned; `revenues` is None when no event of
    the type carried revenue. A conversion goal gives 1.0 when the person did
    the goal event on some day of the window, else 0.0; a revenue goal gives
    the revenue summed over the window.
    """
    exposed_day = (exposed_at.astimezone(dt.UTC).date() - _EPOCH).days
    first_day = exposed_day - window_days
    total = 0.0
    converted = False
    for index, day in enumerate(days):
        if first_day <= day < exposed_day:
            converted = converted or counts[index] > 0
            if revenues is not None:
                total += revenues[index]
    if goal_kind is GoalKind.CONVERSION:
        return 1.0 if converted else 0.0
    return total
