"""The roadmap check: which campaigns compete for the same visitors, where and when.

Two campaigns *collide* when one of them is running, neither is stopped,
and they share a placement, a channel (no channels means every channel) and
a day on which both schedules may be live; the application then sizes the
intersection of their audiences with `SegmentService.EstimateSize`. The
rules, and why, are in docs/roadmap.md. Plain Python: no grpc here.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass

from tessera.channels import CHANNEL_NAMES
from tessera.decision.domain.campaigns import CalendarWindow, CampaignDef, CampaignStatus, Schedule

DAY = dt.timedelta(days=1)
LEAP_GAP_YEARS = 8
"""Calendar windows repeat every year; 29 February at most eight years apart (2096, 2104)."""
_LEAP_YEAR = tuple(dt.datetime(2024, 1, 1) + dt.timedelta(days=n) for n in range(366))
"""Every day of a year with 29 February, to read which days a window holds."""


@dataclass(frozen=True)
class Overlap:
    """Where and from when two campaigns compete, before their audiences are sized."""

    campaign: CampaignDef
    other: CampaignDef
    placements: tuple[str, ...]
    """The placements both may fill, in `campaign`'s order."""
    channels: frozenset[int]
    """The channels both run on; empty for every channel."""
    first_day: dt.date
    """The first UTC day, within the period looked at, on which both may be live."""
    audience_rule: str
    """A segment rule (text notation) for the people in both audiences."""


@dataclass(frozen=True)
class Size:
    """The estimated size of an overlap's audience, or why it is unknown."""

    members: int = -1
    """Profiles in both audiences; -1 when unknown."""
    total: int = 0
    """All profiles."""
    left_out: tuple[str, ...] = ()
    """What the rule reads of a live visit or a request, which sizing cannot count."""
    error: str = ""
    """Why the size is unknown; empty when it is known."""

    @property
    def known(self) -> bool:
        """True when the segment service answered."""
        return self.members >= 0

    @property
    def note(self) -> str:
        """Why the size is unknown, or what it could not count; empty otherwise."""
        if not self.known:
            return self.error
        if self.left_out:
            return (
                "counted between visits: the audiences read "
                f"{', '.join(self.left_out)}, so during a visit more people may be in both"
            )
        return ""

    @property
    def fraction(self) -> float:
        """members / total; -1 when unknown, 0 without profiles."""
        if not self.known:
            return -1.0
        return self.members / self.total if self.total else 0.0


@dataclass(frozen=True)
class Collision:
    """An overlap with its size, as CreateCampaign and GetRoadmap report it."""

    overlap: Overlap
    size: Size
    summary: str


def first_live_day(
    schedules: Sequence[Schedule], since: dt.datetime, until: dt.datetime | None = None
) -> dt.date | None:
    """The first UTC day in [since, until) on which every schedule may be live; None if none.

    Start and end times are compared exactly. Calendar windows are judged by
    day: a day counts when its month and day are inside a window of each
    schedule that has windows (two windows overlap when some day of the year
    is in both), whatever the schedules' time zones, which shift a window by
    less than a day.
    """
    low = max([since, *(s.start_time for s in schedules if s.start_time)])
    ends = [s.end_time for s in schedules if s.end_time]
    if until is not None:
        ends.append(until)
    high = min(ends) if ends else None
    if high is not None and high <= low:
        return None
    windowed = [s for s in schedules if s.windows]
    day = low.astimezone(dt.UTC).date()
    if not windowed:
        return day
    # The days of the year every schedule's windows share, then the first
    # date from `day` on that is one of them: no walk day by day, which for
    # every pair of a roadmap's campaigns held the event loop for seconds.
    shared = frozenset.intersection(*(days_of_year(s.windows) for s in windowed))
    first = next_day_in(shared, day)
    if first is None:
        return None
    if high is not None and dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC) >= high:
        return None
    return first


@functools.lru_cache(maxsize=4096)
def days_of_year(windows: tuple[CalendarWindow, ...]) -> frozenset[tuple[int, int]]:
    """The (month, day) pairs, 29 February included, inside any of the windows."""
    return frozenset(
        (day.month, day.day) for day in _LEAP_YEAR if any(w.contains(day) for w in windows)
    )


def next_day_in(days: frozenset[tuple[int, int]], since: dt.date) -> dt.date | None:
    """The first date on or after `since` whose (month, day) is in `days`; None if none.

    29 February alone may be eight years away (2096, then 2104); the end of
    the calendar (9999-12-31) ends the search.
    """
    ordered = sorted(days)
    for year in range(since.year, min(since.year + LEAP_GAP_YEARS, dt.MAXYEAR) + 1):
        for month, day in ordered:
            if year == since.year and (month, day) < (since.month, since.day):
                continue
            if month == 2 and day == 29 and not calendar.isleap(year):
                continue
            return dt.date(year, month, day)
    return None


def shared_channels(a: CampaignDef, b: CampaignDef) -> frozenset[int] | None:
    """The channels both run on (empty: every channel); None when they share none."""
    if not a.channels or not b.channels:
        return a.channels or b.channels
    shared = a.channels & b.channels
    return shared or None


def audience_rule(a: Sequence[str], b: Sequence[str]) -> str:
    """A rule for the people in both audiences; an empty audience is everyone (`true`)."""

    def any_of(keys: Sequence[str]) -> str:
        return " or ".join(f"segment({json.dumps(key)})" for key in keys)

    if a and b:
        return f"({any_of(a)}) and ({any_of(b)})"
    if a or b:
        return any_of(a or b)
    return "true"


def overlap(
    campaign: CampaignDef,
    other: CampaignDef,
    since: dt.datetime,
    until: dt.datetime | None = None,
) -> Overlap | None:
    """How `campaign` and `other` collide in [since, until), audiences aside; None if not.

    One of them must be running and neither stopped: a draft or paused
    campaign is checked against running ones, so it shows the collisions it
    will have when it runs.
    """
    if campaign.key == other.key:
        return None
    statuses = {campaign.status, other.status}
    if CampaignStatus.STOPPED in statuses or CampaignStatus.RUNNING not in statuses:
        return None
    placements = tuple(p for p in campaign.placements if p in other.placements)
    if not placements:
        return None
    channels = shared_channels(campaign, other)
    if channels is None:
        return None
    day = first_live_day([campaign.schedule, other.schedule], since, until)
    if day is None:
        return None
    rule = audience_rule(campaign.audience_segment_keys, other.audience_segment_keys)
    return Overlap(campaign, other, placements, channels, day, rule)


def first_ranked(a: CampaignDef, b: CampaignDef) -> CampaignDef:
    """The one that fills a shared placement for a visitor in both (as Decide ranks them)."""
    return min(a, b, key=lambda c: (-c.priority, c.key))


def reported(size: Size) -> bool:
    """Whether a sized overlap is a collision worth reporting.

    Not when the segment service counted no one in both audiences and the
    rule reads nothing of a live visit: the audiences are disjoint today.
    An unknown size, or 0 for audiences defined by the live visit (which
    sizing counts as between visits), is reported.
    """
    return not size.known or size.members > 0 or bool(size.left_out)


def summary(found: Overlap, size: Size) -> str:
    """The collision in one sentence for people: where, from when, how many, who wins."""
    channels = (
        ", ".join(CHANNEL_NAMES.get(c, str(c)) for c in sorted(found.channels))
        if found.channels
        else "every channel"
    )
    where = (
        f"{found.other.key} shares {', '.join(found.placements)} on {channels} "
        f"from {found.first_day.isoformat()}"
    )
    if not size.known:
        people = f"overlap size unknown ({size.error})"
    else:
        people = (
            f"about {size.members:,} profiles ({size.fraction:.1%} of {size.total:,}) "
            "are in both audiences"
        )
        if size.left_out:
            people += (
                f" between visits; during a visit more may be, as the audiences read "
                f"{', '.join(size.left_out)}"
            )
    winner = first_ranked(found.campaign, found.other)
    loser = found.other if winner is found.campaign else found.campaign
    if winner.conflict_group and winner.conflict_group == loser.conflict_group:
        who = (
            f"both are in conflict group {winner.conflict_group}: "
            f"{winner.key} is shown, {loser.key} not"
        )
    else:
        who = f"{winner.key} wins there ({why_first(winner, loser)})"
    return f"{where}: {people}; {who}"


def why_first(winner: CampaignDef, loser: CampaignDef) -> str:
    """Why `winner` (first_ranked of the two) fills a shared placement, in a few words."""
    if winner.conflict_group and winner.conflict_group == loser.conflict_group:
        return f"conflict group {winner.conflict_group}"
    if winner.priority != loser.priority:
        return f"priority {winner.priority} over {loser.priority}"
    return f"same priority {winner.priority}, smaller key"
