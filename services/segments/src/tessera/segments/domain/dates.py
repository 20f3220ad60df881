"""Dates as rules read them: the UTC day of a trait such as `signup_date`.

`days_since(trait.signup_date)` is the number of whole UTC days from the
date to the day the rule is evaluated on, the same day numbers event
windows count in (`subject.utc_day`). One reading of a date, here, serves
the per-profile evaluator and the vectorised one, so they agree on every
value.

A date is a string in one of the ISO 8601 forms that JSON traits carry:

- `YYYY-MM-DD`: that calendar day, as it is written (no time zone to
  convert from);
- `YYYY-MM-DDTHH:MM`, optionally `:SS` and a fraction of a second, then
  optionally `Z` or an offset `+HH:MM` / `-HH:MM` (a space may stand for
  the `T`): the UTC day of that moment; without an offset the time is UTC.

Anything else (a missing trait, a number, `"yesterday"`, `"2024-02-30"`, a
year before 1 or after 9999) is no date: `days_since` is null for it.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]{1,9})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?)?\Z"
)
MAX_DATE_CHARS = 40
"""Longer strings are not dates (and are not worth a regular expression)."""


def _day_of(text: str) -> int | None:
    match = _DATE.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        date = dt.date(int(year), int(month), int(day))
    except ValueError:
        return None
    number = date.toordinal() - _EPOCH_ORDINAL
    if hour is None:
        return number
    if int(hour) > 23 or int(minute) > 59 or (second is not None and int(second) > 59):
        return None
    minutes = int(hour) * 60 + int(minute)
    if offset is not None and offset != "Z":
        offset_hours, offset_minutes = int(offset[1:3]), int(offset[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            return None
        shift = offset_hours * 60 + offset_minutes
        # 10:00+02:00 is 08:00 UTC: subtract the offset to reach UTC.
        minutes -= shift if offset[0] == "+" else -shift
    return number + minutes // 1440


_cached_day_of = lru_cache(maxsize=4096)(_day_of)


def date_day(value: object) -> int | None:
    """The UTC day number (days since 1970-01-01) of a date value; None when it is no date."""
    if type(value) is not str or len(value) > MAX_DATE_CHARS:
        return None
    return _cached_day_of(value)
