"""The channels a visitor is met on, by number and by the short name rules use.

Plain Python, so every service's domain can name channels without protobuf;
the numbers are `tessera.common.v1.Channel`'s, and a unit test holds the two
in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

CHANNEL_NAMES: Mapping[int, str] = MappingProxyType(
    {
        1: "web",
        2: "app",
        3: "email",
        4: "sms",
        5: "push",
        6: "call_center",
        7: "store",
    }
)
"""tessera.common.v1.Channel numbers -> short names ("web", "call_center", ...)."""

CHANNELS: tuple[str, ...] = tuple(CHANNEL_NAMES.values())
"""Every channel's short name, in the enum's order."""
