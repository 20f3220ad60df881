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
import datetime as dt
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
    ) -> Roadmap:
        """The campaigns live in [start, end) on the placements, and their collisions there."""
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
        shown.sort(key=lambda pair: (-pair[1].priority, pair[1].key))
        found: list[Overlap] = []
        for index, (_, first) in enumerate(shown):
            # Pairs grow as the square of the campaigns (1,000 take about a
            # second): let Decide calls on this event loop run between rows.
            await asyncio.sleep(0)
            for _, second in shown[index + 1 :]:
                # Sorted by rank: `first` is the one a visitor in both gets.
                hit = overlap(first, second, start, end)
                if hit is not None and (not wanted or wanted.intersection(hit.placements)):
                    found.append(hit)
        collisions = await self._sized(found, time_remaining)
        return Roadmap(start, end, [message for message, _ in shown], collisions)

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
