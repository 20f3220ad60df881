"""Campaigns and the choice of one campaign per placement.

Plain Python: the servicer converts protos to these values, and the same
code decides whether segments and assignments come from the in-process
watch caches or over RPC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tessera.decision.domain.payloads import PayloadTemplate
from tessera.decision.domain.pressure import (
    NO_COUNTERS,
    Counters,
    FrequencyCap,
    ProbabilityRange,
    counted,
)
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
MIN_CAP_PERIOD_S = 1
MAX_CAP_PERIOD_S = 366 * 86_400
"""A frequency cap's window: one second to a (leap) year."""


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
    frequency_cap: FrequencyCap | None = None
    """Most decisions per person per window; None for no cap."""
    probability_range: ProbabilityRange | None = None
    """Predicted conversion probabilities it is for; None for every visitor."""

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

    def fits_probability(self, probability: float | None) -> bool:
        """Whether a visitor of this predicted conversion probability is for it.

        None (the probability is not known) fits only campaigns without a range.
        """
        if self.probability_range is None:
            return True
        return probability is not None and self.probability_range.contains(probability)

    def eligible(
        self,
        segment_keys: frozenset[str],
        now: dt.datetime,
        probability: float | None,
    ) -> bool:
        """Whether the person may get it at all now, whatever the placement and channel."""
        return (
            self.is_live(now)
            and (
                not self.audience_segment_keys
                or any(key in segment_keys for key in self.audience_segment_keys)
            )
            and self.fits_probability(probability)
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
    cap = campaign.frequency_cap
    if cap is not None:
        path = "campaign.frequency_cap"
        require(cap.max_decisions > 0, f"{path}.max_decisions", "must be positive")
        require(
            MIN_CAP_PERIOD_S <= cap.period_s <= MAX_CAP_PERIOD_S,
            f"{path}.period",
            f"must be {MIN_CAP_PERIOD_S} s to {MAX_CAP_PERIOD_S} s (366 days)",
        )
    chances = campaign.probability_range
    if chances is not None:
        path = "campaign.conversion_probability"
        require(
            math.isfinite(chances.min) and 0.0 <= chances.min <= 1.0,
            f"{path}.min",
            "must be a number from 0 to 1",
        )
        require(
            math.isfinite(chances.max) and 0.0 <= chances.max <= 1.0,
            f"{path}.max",
            "must be a number from 0 to 1 (1 for no upper bound)",
        )
        require(chances.min <= chances.max, f"{path}.max", "must not be below min")
        # An empty range (both 0) is almost surely a range left unfilled: it
        # would show the campaign to nobody with any predicted chance at all.
        require(
            chances.max > 0,
            f"{path}.max",
            "must be above 0 (1 for no upper bound); leave the range unset for every visitor",
        )
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


@dataclass(frozen=True, slots=True)
class Assignments:
    """A visitor's place in the experiments of the candidate campaigns.

    `variants` maps experiment key to the visitor's variant (empty or
    missing: outside the experiment's traffic or audience). `held_out` holds
    the experiments whose holdout the visitor is in: they see the control,
    and are not counted in the experiment.
    """

    variants: Mapping[str, str] = field(default_factory=dict)
    held_out: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
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


SKIP_NOT_RUNNING = "not running"
SKIP_SCHEDULE = "schedule"
SKIP_CHANNEL = "channel"
SKIP_AUDIENCE = "audience"
SKIP_PROBABILITY = "probability range"
SKIP_EXPERIMENT = "experiment"
SKIP_CONFLICT = "conflict group"
SKIP_CAP = "frequency cap"
SKIP_BUDGET = "pressure budget"
SKIP_PRIORITY = "lower priority"
SKIP_UNCOUNTED = "counters unavailable"
RULE_SKIPS = frozenset({SKIP_CONFLICT, SKIP_CAP, SKIP_BUDGET, SKIP_UNCOUNTED})
"""Skips said even without explain: why a better campaign gave way (docs/decide.md)."""
NOTHING_FITS = "no live campaign fits this placement"


@dataclass(frozen=True, slots=True)
class Skip:
    """A campaign of a placement that was not chosen, and the rule that skipped it."""

    campaign: CampaignDef
    rule: str
    detail: str = ""

    def text(self) -> str:
        """`skipped <key>: <rule>` and the detail in brackets: stable for machines."""
        tail = f" ({self.detail})" if self.detail else ""
        return f"skipped {self.campaign.key}: {self.rule}{tail}"


def candidates(
    campaigns: Sequence[CampaignDef],
    placements: Sequence[str],
    channel: int,
    segment_keys: frozenset[str],
    now: dt.datetime,
    probability: float | None = None,
) -> list[CampaignDef]:
    """Live campaigns that fit at least one requested placement, best first.

    With `probability` given, a campaign with a probability range fits only
    visitors inside it; without, only campaigns without a range fit.
    """
    fitting = [
        c
        for c in campaigns
        if c.is_live(now)
        and c.fits_probability(probability)
        and any(c.fits(p, channel, segment_keys) for p in placements)
    ]
    return sorted(fitting, key=_rank)


def _rank(campaign: CampaignDef) -> tuple[int, str]:
    return (-campaign.priority, campaign.key)


def static_skip(
    campaign: CampaignDef,
    channel: int,
    segment_keys: frozenset[str],
    now: dt.datetime,
    probability: float | None,
) -> Skip | None:
    """Why a campaign listing the placement is not a candidate at all; None if it is."""
    if campaign.status != CampaignStatus.RUNNING:
        return Skip(campaign, SKIP_NOT_RUNNING, campaign.status.value)
    if not campaign.schedule.is_live(now):
        return Skip(campaign, SKIP_SCHEDULE, "not live now")
    if campaign.channels and channel not in campaign.channels:
        return Skip(campaign, SKIP_CHANNEL)
    if campaign.audience_segment_keys and not any(
        key in segment_keys for key in campaign.audience_segment_keys
    ):
        return Skip(campaign, SKIP_AUDIENCE)
    if not campaign.fits_probability(probability):
        chances = campaign.probability_range
        bounds = f"{chances.min:g} to {chances.max:g}" if chances else ""
        # Without features the probability is unknown, not 0: say so.
        known = f"{probability:g}" if probability is not None else "unknown,"
        return Skip(campaign, SKIP_PROBABILITY, f"{known} not in {bounds}")
    return None


def static_skips(
    campaigns: Sequence[CampaignDef],
    placements: Sequence[str],
    channel: int,
    segment_keys: frozenset[str],
    now: dt.datetime,
    probability: float | None,
) -> dict[str, list[Skip]]:
    """Per requested placement, the campaigns listing it that are not candidates, and why."""
    found: dict[str, list[Skip]] = {p: [] for p in placements}
    for campaign in sorted(campaigns, key=_rank):
        skip = static_skip(campaign, channel, segment_keys, now, probability)
        if skip is None:
            continue
        for placement in placements:
            if placement in campaign.placements:
                found[placement].append(skip)
    return found


def holding(
    holds: Mapping[str, str],
    campaigns: Iterable[CampaignDef],
    segment_keys: frozenset[str],
    now: dt.datetime,
    probability: float | None,
) -> dict[str, CampaignDef]:
    """Conflict group to the campaign that holds it and may still be shown to the person.

    A hold whose campaign is gone, moved to another group, ended, or no longer
    for this person (audience, probability) frees its group. The request's
    channel does not, so it is not asked: a group is one offer per person
    across channels, and a holder that runs only on the web keeps the group
    on an e-mail Decide too (freed by the channel, two members would claim
    the group in turn, one per channel, on every call).
    """
    found: dict[str, CampaignDef] = {}
    if not holds:
        return found
    by_key = {c.key: c for c in campaigns}
    for group, key in holds.items():
        campaign = by_key.get(key)
        if (
            campaign is not None
            and campaign.conflict_group == group
            and campaign.eligible(segment_keys, now, probability)
        ):
            found[group] = campaign
    return found


def choose(
    placements: Sequence[str],
    ranked: Sequence[CampaignDef],
    variants: Mapping[str, str],
    channel: int,
    segment_keys: frozenset[str],
    held_out: frozenset[str] = frozenset(),
    global_holdout: bool = False,
    *,
    counters: Counters | None = None,
    budget: int = 0,
    holders: Mapping[str, CampaignDef] | None = None,
    explain: Mapping[str, Sequence[Skip]] | None = None,
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

    The person's `counters` add three rules (docs/decide.md): a campaign
    whose cap window is full is skipped; one whose pressure cost would take
    the person over `budget` (0: no budget) is skipped, costs adding up over
    the placements of this decision; a conflict group in `holders` (held by
    a campaign still eligible, neither capped nor over budget) belongs to
    that campaign. A skipped campaign's placement goes to the next one.
    When the counters could not be read (`counters.unavailable`), every
    campaign that needs them is skipped and the others still decide.

    `explain`, when given, holds per placement the campaigns that were not
    candidates and why; every choice then lists every skip of its
    placement. Without it, only rule skips (cap, budget, conflict group) of
    better campaigns are said.
    """
    counters = counters or NO_COUNTERS
    spent = counters.pressure_spent
    filled: dict[str, Choice] = {}
    skips: dict[str, list[Skip]] = {p: [] for p in placements}
    group_owner: dict[str, str] = {}

    def capped(campaign: CampaignDef) -> bool:
        cap = campaign.frequency_cap
        return cap is not None and counters.decisions.get(campaign.key, 0) >= cap.max_decisions

    def unaffordable(campaign: CampaignDef) -> bool:
        return budget > 0 and campaign.pressure_cost > 0 and spent + campaign.pressure_cost > budget

    for group, holder in (holders or {}).items():
        if not capped(holder) and not unaffordable(holder):
            group_owner[group] = holder.key

    open_places: list[str] = []

    def skip(campaign: CampaignDef, rule: str, detail: str = "") -> None:
        for placement in open_places:
            skips[placement].append(Skip(campaign, rule, detail))

    for campaign in ranked:
        holdout = global_holdout or campaign.experiment_key in held_out
        variant_key = (
            campaign.control_variant_key if holdout else variants.get(campaign.experiment_key, "")
        )
        # The placements it fits, asked once: the open ones it may fill, the
        # filled ones where it gave way to a better campaign.
        open_places = []
        for placement in placements:
            if not campaign.fits(placement, channel, segment_keys):
                continue
            winner = filled.get(placement)
            if winner is None:
                open_places.append(placement)
            elif winner.campaign is not None:
                detail = f"placement filled by {winner.campaign.key}"
                skips[placement].append(Skip(campaign, SKIP_PRIORITY, detail))
        if not open_places:
            continue
        if not variant_key or campaign.variant(variant_key) is None:
            # Outside the experiment's traffic, or an experiment not yet in
            # line with its campaign: show nothing rather than a wrong thing.
            skip(campaign, SKIP_EXPERIMENT, "outside its traffic, or not running or loaded")
            continue
        if counters.unavailable and counted(campaign, budget):
            # Its cap, budget or group cannot be checked: not shown rather than over-shown.
            skip(campaign, SKIP_UNCOUNTED, "its cap, budget or group cannot be checked")
            continue
        owner = group_owner.get(campaign.conflict_group)
        if campaign.conflict_group and owner not in (None, campaign.key):
            skip(campaign, SKIP_CONFLICT, f"{campaign.conflict_group} held by {owner}")
            continue
        if capped(campaign):
            cap = campaign.frequency_cap
            assert cap is not None  # capped() said so
            skip(campaign, SKIP_CAP, f"{cap.max_decisions} per {cap.period_s}s reached")
            continue
        if unaffordable(campaign):
            skip(
                campaign,
                SKIP_BUDGET,
                f"{spent} spent + {campaign.pressure_cost} over {budget}",
            )
            continue
        for placement in open_places:
            filled[placement] = Choice(
                placement,
                campaign,
                variant_key,
                _reasons(campaign, variant_key, segment_keys, holdout, global_holdout),
                holdout,
            )
        if budget > 0:
            spent += campaign.pressure_cost
        if campaign.conflict_group:
            group_owner[campaign.conflict_group] = campaign.key
    choices: list[Choice] = []
    for placement in placements:
        choice = filled.get(placement) or Choice(placement, reasons=(NOTHING_FITS,))
        said = [s for s in skips[placement] if explain is not None or s.rule in RULE_SKIPS]
        if explain is not None:
            said += [
                s
                for s in explain.get(placement, ())
                if choice.campaign is None or s.campaign.key != choice.campaign.key
            ]
            said.sort(key=lambda s: _rank(s.campaign))
        if said:
            choice = dataclasses.replace(
                choice, reasons=(*choice.reasons, *(s.text() for s in said))
            )
        choices.append(choice)
    return choices


def shown(choices: Iterable[Choice]) -> list[CampaignDef]:
    """Each campaign the choices show (variant or control), once, in placement order."""
    seen: dict[str, CampaignDef] = {}
    for choice in choices:
        if choice.campaign is not None:
            seen.setdefault(choice.campaign.key, choice.campaign)
    return list(seen.values())


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
    if campaign.probability_range is not None:
        chances = campaign.probability_range
        reasons.append(f"probability range {chances.min:g} to {chances.max:g}")
    if global_holdout:
        reasons.append("global holdout: show the default")
    elif held_out:
        reasons.append("holdout: show the default")
    elif variant_key == campaign.control_variant_key:
        reasons.append("control group: show the default")
    return tuple(reasons)


def possible(
    campaigns: Sequence[CampaignDef],
    placements: Sequence[str],
    channel: int,
    now: dt.datetime,
) -> list[CampaignDef]:
    """The campaigns whose counters a Decide may need, known before the profile is.

    Live campaigns listing a requested placement on this channel, and the
    live campaigns of their conflict groups (one of them may hold the group).
    """
    live = [c for c in campaigns if c.is_live(now) and (not c.channels or channel in c.channels)]
    near = [c for c in live if any(p in c.placements for p in placements)]
    keys = {c.key for c in near}
    groups = {c.conflict_group for c in near if c.conflict_group}
    return near + [c for c in live if c.conflict_group in groups and c.key not in keys]
