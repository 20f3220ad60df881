"""Event windows as rules write them: `30d`, `12h`, `15m`."""

from __future__ import annotations

import re

from .nodes import RuleNodeError

_DURATION = re.compile(r"([0-9]+)([dhm])\Z")
_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60}


def parse_duration(text: str) -> int:
    """Seconds in a window written `Nd`, `Nh` or `Nm`; raises RuleNodeError."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise RuleNodeError(f"invalid window {text!r}: write a positive number and d, h or m (30d)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: int) -> str:
    """The shortest `Nd` / `Nh` / `Nm` spelling of a whole number of minutes."""
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    raise RuleNodeError(f"window {seconds}s is not a whole number of minutes")
