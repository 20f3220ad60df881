"""Decide: who the visitor is, their segments and variants, one campaign per placement.

The fan-out lives here and the picking rules in `tessera.decision.domain`,
so what is added to the hot path later (pressure budgets read beside the
profile, caps, exposures sent off the request path, failing open when a
peer is slow) grows this module, not the servicer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from google.protobuf import struct_pb2

from tessera.clients import peer_error
from tessera.common.v1 import common_pb2
from tessera.decision.domain.campaigns import (
    Assignments,
    CampaignDef,
    Choice,
    candidates,
    choose,
)
from tessera.definitions import DefinitionCache
from tessera.profiles.v1 import profiles_pb2

if TYPE_CHECKING:
    from tessera.decision.transport.evaluation import Evaluator
    from tessera.profiles.v1.profiles_pb2_grpc import ProfileServiceAsyncStub


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC: what campaign schedules compare against."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class DecideQuery:
    """What a Decide asks: for this visitor, on this channel, fill these placements."""

    identities: Sequence[common_pb2.Identity]
    channel: common_pb2.Channel.ValueType
    placements: Sequence[str]
    context: struct_pb2.Struct


@dataclass(frozen=True)
class Decisions:
    """What a Decide answers: one choice per placement, in the query's order, and why."""

    profile_id: str
    choices: Sequence[Choice]
    segment_keys: Sequence[str]
    conversion_probability: float


class Decider:
    """Runs Decide over the campaign cache, the profile service and an evaluator."""

    def __init__(
        self,
        campaigns: DefinitionCache[CampaignDef],
        evaluator: Evaluator,
        profiles: ProfileServiceAsyncStub,
        deadline_s: float,
        now: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.campaigns = campaigns
        self.evaluator = evaluator
        self.profiles = profiles
        self.deadline_s = deadline_s
        self.now = now

    def timeout(self, time_remaining: float | None) -> float:
        """The deadline of each internal call: the setting, or less if the caller's is nearer."""
        if time_remaining is None:
            return self.deadline_s
        return min(self.deadline_s, time_remaining)

    async def decide(self, query: DecideQuery, time_remaining: float | None = None) -> Decisions:
        """Resolve the profile, find its segments and variants, pick per placement.

        `time_remaining` is the caller's own deadline, if it set one. Segments
        need the profile and assignments need the segments, so the three
        steps run in turn; assignment is skipped when no campaign can fill a
        placement.
        """
        timeout = self.timeout(time_remaining)
        profile = await self._profile(query, timeout)
        segment_keys = await self.evaluator.segments(profile, query.channel, query.context, timeout)
        in_segments = frozenset(segment_keys)
        ranked = candidates(
            list(self.campaigns.items.values()),
            query.placements,
            query.channel,
            in_segments,
            self.now(),
        )
        assignments = Assignments()
        if ranked:
            assignments = await self.evaluator.assign(
                profile.profile_id,
                segment_keys,
                query.channel,
                [c.experiment_key for c in ranked],
                timeout,
            )
        return Decisions(
            profile_id=profile.profile_id,
            choices=choose(
                query.placements,
                ranked,
                assignments.variants,
                query.channel,
                in_segments,
                assignments.held_out,
            ),
            segment_keys=segment_keys,
            conversion_probability=profile.features.conversion_probability,
        )

    async def _profile(self, query: DecideQuery, timeout: float) -> profiles_pb2.Profile:
        """The visitor's profile, created on first sight, with session and features."""
        try:
            identified = await self.profiles.Identify(
                profiles_pb2.IdentifyRequest(identities=query.identities, channel=query.channel),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "profiles") from error
        return identified.profile
