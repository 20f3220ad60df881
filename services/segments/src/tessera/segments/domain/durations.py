"""Event windows as rules write them: `30d` (also `720h`, `43200m`: whole days)."""

from __future__ import annotations

import re

from .nodes import MAX_WINDOW_DAYS, RuleNodeError

_DURATION = re.compile(r"([0-9]+)([dhm])\Z")
_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60}


def parse_duration(text: str) -> int:
    """Seconds in a window written `Nd`, `Nh` or `Nm`; raises RuleNodeError."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise RuleNodeError(f"invalid window {text!r}: write a positive number and d, h or m (30d)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_window_days(text: str) -> int:
    """Days in a window written `Nd` (or hours or minutes making whole days).

    The event history is kept per UTC day, so a window is a whole number of
    days, at most MAX_WINDOW_DAYS. Raises RuleNodeError.
    """
    seconds = parse_duration(text)
    if seconds % _UNIT_SECONDS["d"]:
        raise RuleNodeError(
            f"window {text!r} is not a whole number of days: event history is kept per "
            "UTC day, so write days, as in within=1d (today) or within=30d"
        )
    days = seconds // _UNIT_SECONDS["d"]
    if days > MAX_WINDOW_DAYS:
        raise RuleNodeError(
            f"window {text!r} reaches back {days} days; event history is kept for "
            f"{MAX_WINDOW_DAYS} days"
        )
    return days
