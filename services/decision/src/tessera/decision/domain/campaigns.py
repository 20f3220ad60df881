"""Campaigns and the choice of one campaign per placement.

Plain Python: the servicer converts protos to these values, and the same
code decides whether segments and assignments come from the in-process
watch caches or over RPC.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tessera.decision.domain.payloads import PayloadTemplate
from tessera.errors import InvalidArgument, require

EXPERIMENT_PREFIX = "campaign-"
"""A campaign's experiment is keyed `campaign-<campaign key>`."""
EXPERIMENT_KEY_CHARS = 64
"""The longest experiment key the experiment service takes."""
MAX_KEY_CHARS = EXPERIMENT_KEY_CHARS - len(EXPERIMENT_PREFIX)
"""55: a campaign key leaves room for the prefix of its experiment's key."""
KEY_PATTERN = re.compile(rf"^[a-z0-9][a-z0-9_-]{{0,{MAX_KEY_CHARS - 1}}}$")
PLACEMENT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
DEFAULT_CONTROL_KEY = "control"


class CampaignStatus(StrEnum):
    """Where a campaign is in its life."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True)
class CalendarWindow:
    """A yearly window, inclusive of both ends, in the schedule's time zone."""

    name: str
    start_month: int
    start_day: int
    end_month: int
    end_day: int

    def contains(self, local: dt.datetime) -> bool:
        """True when `local` falls inside the window (which may span New Year)."""
        today = (local.month, local.day)
        start = (self.start_month, self.start_day)
        end = (self.end_month, self.end_day)
        if start <= end:
            return start <= today <= end
        return today >= start or today <= end


@dataclass(frozen=True)
class Schedule:
    """When a campaign is live."""

    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    windows: tuple[CalendarWindow, ...] = ()
    time_zone: str = ""

    def is_live(self, now: dt.datetime) -> bool:
        """True when `now` is inside the start/end bounds and any window."""
        if self.start_time and now < self.start_time:
            return False
        if self.end_time and now >= self.end_time:
            return False
        if not self.windows:
            return True
        local = now.astimezone(ZoneInfo(self.time_zone or "UTC"))
        return any(window.contains(local) for window in self.windows)


@dataclass(frozen=True)
class CampaignVariant:
    """One version of what a campaign shows."""

    key: str
    weight: float
    payload: Mapping[str, Any] = field(default_factory=dict)
    template: PayloadTemplate | None = None
    """The payload's placeholders, compiled once; None to serve it as written."""


@dataclass(frozen=True)
class CampaignDef:
    """A campaign as the decision path needs it."""

    key: str
    placements: tuple[str, ...]
    variants: tuple[CampaignVariant, ...]
    control_variant_key: str
    experiment_key: str
    status: CampaignStatus
    channels: frozenset[int] = frozenset()
    audience_segment_keys: tuple[str, ...] = ()
    priority: int = 0
    conflict_group: str = ""
    schedule: Schedule = Schedule()
    goal_event_type: str = ""
    goal_kind: str = ""
    pressure_cost: int = 0

    def variant(self, key: str) -> CampaignVariant | None:
        """The variant named `key`."""
        return next((v for v in self.variants if v.key == key), None)

    def is_live(self, now: dt.datetime) -> bool:
        """Running and inside its schedule."""
        return self.status == CampaignStatus.RUNNING and self.schedule.is_live(now)

    def fits(self, placement: str, channel: int, segment_keys: frozenset[str]) -> bool:
        """Whether the campaign may fill `placement` for this visitor and channel."""
        if placement not in self.placements:
            return False
        if self.channels and channel not in self.channels:
            return False
        return not self.audience_segment_keys or any(
            key in segment_keys for key in self.audience_segment_keys
        )


def experiment_key_for(campaign_key: str) -> str:
    """The key of the experiment that splits a campaign's audience."""
    return EXPERIMENT_PREFIX + campaign_key


def with_control(
    variants: Sequence[CampaignVariant], control_key: str
) -> tuple[tuple[CampaignVariant, ...], str]:
    """The variants with a control added unless one is named, and the control's key.

    The added control takes the mean weight of the other variants, so one
    treatment and its control split the audience evenly: the split that
    detects a difference soonest.
    """
    key = control_key or DEFAULT_CONTROL_KEY
    if any(v.key == key for v in variants):
        return tuple(variants), key
    mean = sum(v.weight for v in variants) / len(variants) if variants else 1.0
    return (*variants, CampaignVariant(key, mean or 1.0, {})), key


def validate_campaign(campaign: CampaignDef) -> None:
    """Raise InvalidArgument naming the first field that is wrong."""
    require(
        bool(KEY_PATTERN.match(campaign.key)),
        "campaign.key",
        f"must be 1 to {MAX_KEY_CHARS} lowercase letters, digits, '_' or '-', starting with "
        f"a letter or digit (its experiment's key, {EXPERIMENT_PREFIX!r} and the campaign "
        f"key, must fit {EXPERIMENT_KEY_CHARS})",
    )
    require(
        bool(campaign.goal_event_type),
        "campaign.goal.event_type",
        "is required: every campaign serves a goal",
    )
    require(
        campaign.goal_kind in ("conversion", "revenue"),
        "campaign.goal.kind",
        "must be GOAL_KIND_CONVERSION or GOAL_KIND_REVENUE",
    )
    require(bool(campaign.placements), "campaign.placements", "name at least one placement")
    for index, placement in enumerate(campaign.placements):
        require(
            bool(PLACEMENT_PATTERN.match(placement)),
            f"campaign.placements[{index}]",
            "must be lowercase letters, digits, '_', '-' or '.' (at most 64)",
        )
    require(
        len(set(campaign.placements)) == len(campaign.placements),
        "campaign.placements",
        "must not repeat a placement",
    )
    treatments = [v for v in campaign.variants if v.key != campaign.control_variant_key]
    require(bool(treatments), "campaign.variants", "add at least one variant besides the control")
    seen: set[str] = set()
    for index, variant in enumerate(campaign.variants):
        path = f"campaign.variants[{index}]"
        require(
            bool(KEY_PATTERN.match(variant.key)),
            f"{path}.key",
            "must be lowercase letters, digits, '_' or '-'",
        )
        require(variant.key not in seen, f"{path}.key", f"repeats variant {variant.key!r}")
        seen.add(variant.key)
        require(variant.weight >= 0, f"{path}.weight", "must not be negative")
    total = sum(v.weight for v in campaign.variants)
    require(math.isfinite(total), "campaign.variants", "weights must add up to a finite number")
    require(total > 0, "campaign.variants", "at least one weight must be positive")
    require(campaign.pressure_cost >= 0, "campaign.pressure_cost", "must not be negative")
    schedule = campaign.schedule
    if schedule.start_time and schedule.end_time:
        require(
            schedule.end_time > schedule.start_time,
            "campaign.schedule.end_time",
            "must be after start_time",
        )
    if schedule.time_zone:
        try:
            ZoneInfo(schedule.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise InvalidArgument(
                f"unknown time zone {schedule.time_zone!r}", field="campaign.schedule.time_zone"
            ) from error
    for index, window in enumerate(schedule.windows):
        path = f"campaign.schedule.windows[{index}]"
        for name in ("start", "end"):
            month, day = getattr(window, f"{name}_month"), getattr(window, f"{name}_day")
            require(1 <= month <= 12, f"{path}.{name}_month", "must be 1 to 12")
            require(1 <= day <= 31, f"{path}.{name}_day", "must be 1 to 31")


@dataclass(frozen=True)
class Assignments:
    """A visitor's place in the experiments of the candidate campaigns.

    `variants` maps experiment key to the visitor's variant (empty or
    missing: outside the experiment's traffic or audience). `held_out` holds
    the experiments whose holdout the visitor is in: they see the control,
    and are not counted in the experiment.
    """

    variants: Mapping[str, str] = field(default_factory=dict)
    held_out: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Choice:
    """What one placement shows."""

    placement: str
    campaign: CampaignDef | None = None
    variant_key: str = ""
    reasons: tuple[str, ...] = ()
    held_out: bool = False

    @property
    def is_control(self) -> bool:
        """True when the visitor is in the campaign's control group."""
        return self.campaign is not None and self.variant_key == self.campaign.control_variant_key


def candidates(
    campaigns: Sequence[CampaignDef],
    placements: Sequence[str],
    channel: int,
    segment_keys: frozenset[str],
    now: dt.datetime,
) -> list[CampaignDef]:
    """Live campaigns that fit at least one requested placement, best first."""
    fitting = [
        c
        for c in campaigns
        if c.is_live(now) and any(c.fits(p, channel, segment_keys) for p in placements)
    ]
    return sorted(fitting, key=lambda c: (-c.priority, c.key))


def choose(
    placements: Sequence[str],
    ranked: Sequence[CampaignDef],
    variants: Mapping[str, str],
    channel: int,
    segment_keys: frozenset[str],
    held_out: frozenset[str] = frozenset(),
    global_holdout: bool = False,
) -> list[Choice]:
    """One choice per placement, in request order.

    `ranked` is best first; `variants` maps experiment key to the visitor's
    variant (missing or empty: the visitor is outside the experiment's
    traffic and the campaign is skipped). A visitor in the holdout of a
    campaign's experiment (`held_out`) gets the campaign's control variant,
    as every control member does: the campaign still claims the placement
    and its conflict group, so the channel shows its default, not another
    campaign. A visitor in the global holdout (`global_holdout`) is held
    out of every campaign the same way: no personalization at all, every
    placement shows its default. Campaigns claim placements in rank
    order, so a conflict group goes to its best campaign whichever placement
    was asked for first; once a group has filled a placement, no other
    campaign of the group is shown in this decision.
    """
    filled: dict[str, Choice] = {}
    group_owner: dict[str, str] = {}
    for campaign in ranked:
        holdout = global_holdout or campaign.experiment_key in held_out
        variant_key = (
            campaign.control_variant_key if holdout else variants.get(campaign.experiment_key, "")
        )
        if not variant_key or campaign.variant(variant_key) is None:
            # Outside the experiment's traffic, or an experiment not yet in
            # line with its campaign: show nothing rather than a wrong thing.
            continue
        owner = group_owner.get(campaign.conflict_group)
        if campaign.conflict_group and owner not in (None, campaign.key):
            continue
        for placement in placements:
            if placement in filled or not campaign.fits(placement, channel, segment_keys):
                continue
            filled[placement] = Choice(
                placement,
                campaign,
                variant_key,
                _reasons(campaign, variant_key, segment_keys, holdout, global_holdout),
                holdout,
            )
            if campaign.conflict_group:
                group_owner[campaign.conflict_group] = campaign.key
    return [
        filled.get(p) or Choice(p, reasons=("no live campaign fits this placement",))
        for p in placements
    ]


def _reasons(
    campaign: CampaignDef,
    variant_key: str,
    segment_keys: frozenset[str],
    held_out: bool,
    global_holdout: bool = False,
) -> tuple[str, ...]:
    reasons = [f"priority {campaign.priority}"]
    matched = sorted(set(campaign.audience_segment_keys) & segment_keys)
    reasons += [f"segment:{key}" for key in matched] or ["audience: everyone"]
    if campaign.conflict_group:
        reasons.append(f"conflict group {campaign.conflict_group}")
    if global_holdout:
        reasons.append("global holdout: show the default")
    elif held_out:
        reasons.append("holdout: show the default")
    elif variant_key == campaign.control_variant_key:
        reasons.append("control group: show the default")
    return tuple(reasons)
