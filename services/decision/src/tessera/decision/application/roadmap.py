"""The roadmap check on campaign writes, and the roadmap of a period (docs/roadmap.md).

Runs only on admin calls (CreateCampaign, UpdateCampaign, GetRoadmap), never
on Decide. The stored campaigns are read from the catalog, compared with the
domain rules (`tessera.decision.domain.roadmap`), and each overlap's audience
is sized with `SegmentService.EstimateSize`, concurrently, every call under
one deadline. A sizing that fails or runs out of time leaves that size
unknown (-1, with the reason in the summary): the write it reports on has
succeeded already and stays so.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from tessera.catalog import Catalog
from tessera.decision.domain.campaigns import CampaignDef, CampaignStatus
from tessera.decision.domain.roadmap import (
    Collision,
    Overlap,
    Size,
    first_live_day,
    overlap,
    reported,
    summary,
)
from tessera.decision.transport.convert import campaign_from_proto
from tessera.decision.v1 import decision_pb2
from tessera.errors import InvalidArgument, require
from tessera.segments.v1 import segments_pb2

if TYPE_CHECKING:
    from tessera.segments.v1.segments_pb2_grpc import SegmentServiceAsyncStub

log = logging.getLogger("tessera.decision.roadmap")

PAGE_SIZE = 1000
"""Campaigns read per catalog page."""
DEFAULT_PERIOD = dt.timedelta(days=91)
"""A roadmap without an end covers 13 weeks."""
MAX_PERIOD = dt.timedelta(days=731)
"""The longest roadmap: two years."""
MARGIN = 0.8
"""Share of the caller's remaining time the sizing may take, leaving room to answer."""
ROADMAP_PAGE = 100
"""Campaigns on one GetRoadmap page when the request names no page_size."""
MAX_ROADMAP_PAGE = 1000
"""Most campaigns on one GetRoadmap page."""
PAGE_COLLISIONS = 2000
"""A GetRoadmap page ends after the campaign whose pairs reach this many collisions.

Each campaign brings its pairs with every campaign ranked after it, so a page
bounded by campaigns alone could be large (1,000 campaigns colliding with each
other: half a million pairs). About 330 bytes a collision: some 660 KB a page,
plus the last campaign's own pairs."""


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RoadmapSettings:
    """How the roadmap check sizes overlaps."""

    timeout_s: float = 2.0
    """All sizing of one call finishes within this (TESSERA_ROADMAP_TIMEOUT_S)."""
    concurrency: int = 8
    """EstimateSize calls in flight at once (TESSERA_ROADMAP_CONCURRENCY)."""
    max_sized: int = 200
    """Distinct audiences sized per call at most; the rest are reported unsized."""


@dataclass(frozen=True)
class Roadmap:
    """The campaigns of a period and the collisions between them."""

    start: dt.datetime
    end: dt.datetime
    campaigns: list[decision_pb2.Campaign]
    collisions: list[Collision]
    next_page_token: str = ""


@dataclass(frozen=True)
class _Cursor:
    """Where a roadmap page ended, and the query it belongs to (a page token)."""

    placements: str
    """A digest of the query's placements, sorted: a token stays short however many."""
    start: dt.datetime
    end: dt.datetime
    priority: int
    key: str

    def token(self) -> str:
        fields = {
            "placements": self.placements,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "priority": self.priority,
            "key": self.key,
        }
        return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()

    @classmethod
    def of(cls, token: str) -> _Cursor:
        """The cursor a token of ours holds; INVALID_ARGUMENT for anything else."""
        refused = InvalidArgument("is not a token this service issued", field="page_token")
        try:
            fields = json.loads(
                base64.urlsafe_b64decode(token.encode()), parse_constant=_no_constant
            )
            if not isinstance(fields, dict):
                raise refused
            placements, start, end = fields["placements"], fields["start"], fields["end"]
            priority, key = fields["priority"], fields["key"]
            if not (
                isinstance(placements, str)
                and isinstance(start, str)
                and isinstance(end, str)
                and isinstance(key, str)
                and type(priority) is int
            ):
                raise refused
            cursor = cls(
                placements,
                dt.datetime.fromisoformat(start),
                dt.datetime.fromisoformat(end),
                priority,
                key,
            )
        except (ValueError, KeyError, UnicodeDecodeError, RecursionError) as error:
            raise refused from error
        # Ours are in UTC; another offset could take a period past the calendar's ends.
        if cursor.start.utcoffset() != dt.timedelta(0) or cursor.end.utcoffset() != dt.timedelta(0):
            raise refused
        return cursor


def _no_constant(name: str) -> object:
    """json.loads' hook for NaN and Infinity: never in a token of ours."""
    raise ValueError(f"{name} is not in a page token")


def _digest(placements: Sequence[str]) -> str:
    """Which placements a roadmap query names, in 16 hex digits (order and repeats aside)."""
    return hashlib.sha256("\n".join(sorted(set(placements))).encode()).hexdigest()[:16]


def _rank(campaign: CampaignDef) -> tuple[int, str]:
    """A roadmap's order: highest priority first, then by key."""
    return (-campaign.priority, campaign.key)


class RoadmapCheck:
    """Finds the running campaigns a campaign collides with, and sizes the overlaps."""

    def __init__(
        self,
        catalog: Catalog[decision_pb2.Campaign],
        segments: SegmentServiceAsyncStub,
        settings: RoadmapSettings | None = None,
        now: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.catalog = catalog
        self.segments = segments
        self.settings = settings or RoadmapSettings()
        self.now = now

    async def collisions(
        self, campaign: decision_pb2.Campaign, time_remaining: float | None = None
    ) -> list[Collision]:
        """The running campaigns the (stored) campaign collides with, from now on.

        Checked whatever the campaign's status but stopped, so a draft shows
        the collisions it will have once it runs. The write has succeeded
        when this runs: if the stored campaigns cannot be read, the answer
        carries no collisions (logged) rather than an error that would make
        the caller retry a write that is done.
        """
        mine = campaign_from_proto(campaign)
        try:
            stored = await self._stored()
        except Exception:  # logged: the write itself succeeded
            log.warning(
                "roadmap check skipped: the stored campaigns could not be read",
                extra={"key": campaign.key},
                exc_info=True,
            )
            return []
        now = self.now()
        # Only running campaigns are collided with (the contract's "running
        # campaigns it competes with"); a stored draft reports its own
        # collisions when it is written to run. GetRoadmap shows drafts too.
        found = [
            hit
            for other in stored
            if other.status == decision_pb2.CAMPAIGN_STATUS_RUNNING
            and (hit := overlap(mine, campaign_from_proto(other), now)) is not None
        ]
        return await self._sized(found, time_remaining)

    async def roadmap(
        self,
        placements: Sequence[str],
        start: dt.datetime | None,
        end: dt.datetime | None,
        time_remaining: float | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Roadmap:
        """A page of the campaigns live in [start, end) on the placements, and the
        collisions there of each campaign on the page with those ranked after it.

        A page token pins the query: the same placements, and the first
        page's period (which a later page may leave unset).
        """
        require(page_size >= 0, "page_size", "must not be negative")
        size = min(page_size or ROADMAP_PAGE, MAX_ROADMAP_PAGE)
        after: tuple[int, str] | None = None
        if page_token:
            cursor = _Cursor.of(page_token)
            if _digest(placements) != cursor.placements:
                raise InvalidArgument(
                    "was issued for other placements: ask a later page with the first's",
                    field="page_token",
                )
            for name, asked, kept in (
                ("start_time", start, cursor.start),
                ("end_time", end, cursor.end),
            ):
                if asked is not None and asked != kept:
                    raise InvalidArgument(
                        f"is not the first page's ({kept.isoformat()}): leave it unset "
                        "on a later page",
                        field=name,
                    )
            start, end = cursor.start, cursor.end
            after = (-cursor.priority, cursor.key)
        start = start or self.now()
        if end is None:
            try:
                end = start + DEFAULT_PERIOD
            except OverflowError:
                raise InvalidArgument(
                    f"leaves no room for the default period of {DEFAULT_PERIOD.days} days: "
                    "set end_time",
                    field="start_time",
                ) from None
        require(end > start, "end_time", "must be after start_time")
        if end - start > MAX_PERIOD:
            raise InvalidArgument(
                f"a roadmap covers at most {MAX_PERIOD.days} days", field="end_time"
            )
        for index, placement in enumerate(placements):
            require(bool(placement), f"placements[{index}]", "must not be empty")
        wanted = set(placements)
        shown: list[tuple[decision_pb2.Campaign, CampaignDef]] = []
        for message in await self._stored():
            campaign = campaign_from_proto(message)
            if campaign.status == CampaignStatus.STOPPED:
                continue
            if wanted and not wanted.intersection(campaign.placements):
                continue
            if first_live_day([campaign.schedule], start, end) is None:
                continue
            shown.append((message, campaign))
        shown.sort(key=lambda pair: _rank(pair[1]))
        # Keyset paging: the page begins after the last campaign of the one
        # before, so campaigns written between pages shift nothing.
        first = 0 if after is None else bisect.bisect_right([_rank(c) for _, c in shown], after)
        last = first
        found: list[Overlap] = []
        while last < min(first + size, len(shown)) and len(found) < PAGE_COLLISIONS:
            winner = shown[last][1]
            # Pairs grow as the square of the campaigns (1,000 take about a
            # second): let Decide calls on this event loop run between rows.
            await asyncio.sleep(0)
            for _, second in shown[last + 1 :]:
                # Sorted by rank: `winner` is the one a visitor in both gets.
                hit = overlap(winner, second, start, end)
                if hit is not None and (not wanted or wanted.intersection(hit.placements)):
                    found.append(hit)
            last += 1
        collisions = await self._sized(found, time_remaining)
        token = ""
        if last < len(shown):
            final = shown[last - 1][1]
            token = _Cursor(_digest(placements), start, end, final.priority, final.key).token()
        return Roadmap(start, end, [message for message, _ in shown[first:last]], collisions, token)

    async def _stored(self) -> list[decision_pb2.Campaign]:
        """Every stored campaign, page by page."""
        stored: list[decision_pb2.Campaign] = []
        token = ""
        while True:
            page, token = await self.catalog.page(PAGE_SIZE, token)
            stored.extend(page)
            if not token:
                return stored

    async def _sized(
        self, found: Sequence[Overlap], time_remaining: float | None
    ) -> list[Collision]:
        """Each overlap with its audience sized, the ones worth reporting, in order."""
        budget = self.settings.timeout_s
        if time_remaining is not None:
            budget = min(budget, max(time_remaining * MARGIN, 0.0))
        deadline = time.monotonic() + budget
        rules = list(dict.fromkeys(hit.audience_rule for hit in found))
        limit = asyncio.Semaphore(self.settings.concurrency)
        sizes = await asyncio.gather(
            *(
                self._size(rule, deadline, limit)
                if index < self.settings.max_sized
                else _unsized(f"not sized: more than {self.settings.max_sized} overlaps at once")
                for index, rule in enumerate(rules)
            )
        )
        by_rule = dict(zip(rules, sizes, strict=True))
        collisions = []
        for hit in found:
            size = by_rule[hit.audience_rule]
            if reported(size):
                collisions.append(Collision(hit, size, summary(hit, size)))
        return collisions

    async def _size(self, rule: str, deadline: float, limit: asyncio.Semaphore) -> Size:
        """EstimateSize of one audience rule; unknown, with why, when it cannot be had."""
        async with limit:
            left = deadline - time.monotonic()
            if left <= 0:
                return Size(error="not sized: the roadmap check ran out of time")
            request = segments_pb2.EstimateSizeRequest(rule=segments_pb2.Rule(text=rule))
            try:
                reply = await self.segments.EstimateSize(request, timeout=left)
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "roadmap check could not size an overlap",
                    extra={"rule": rule, "code": error.code().name},
                )
                return Size(error=f"segments: {error.code().name}: {error.details() or ''}")
        return Size(
            members=reply.members,
            total=reply.total,
            left_out=tuple(item.attribute for item in reply.left_out),
        )


async def _unsized(error: str) -> Size:
    return Size(error=error)
