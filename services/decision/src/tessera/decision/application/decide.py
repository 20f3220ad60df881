"""Decide: who the visitor is, their segments and variants, one campaign per placement.

The fan-out lives here and the picking rules in `tessera.decision.domain`,
so what is added to the hot path (pressure budgets read beside the
profile, caps, exposures sent off the request path) grows this module, not
the servicer.

Every internal call is bounded by what is left of one budget: the caller's
deadline (less a reserve to answer in) capped by TESSERA_DECIDE_DEADLINE_S,
read again at each call. Decide fails open: a profile service that is down
or slow gives every placement its default experience with a reason, and a
campaign whose audience segments or experiment this replica cannot evaluate
is skipped with a reason while the others are served (docs/decide.md,
"Degraded modes").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf import struct_pb2

from tessera import metrics, sticky
from tessera.clients import peer_error
from tessera.common.v1 import common_pb2
from tessera.decision.application.payloads import render_payloads
from tessera.decision.domain.campaigns import (
    Assignments,
    CampaignDef,
    Choice,
    candidates,
    choose,
    holding,
    possible,
    static_skips,
)
from tessera.decision.domain.pressure import (
    NO_COUNTERS,
    NOTHING_COUNTED,
    Counters,
    CounterSpec,
    counted,
)
from tessera.definitions import DefinitionCache
from tessera.errors import DeadlineExceeded, Unavailable
from tessera.experiments.domain.exposures import (
    GLOBAL_HOLDOUT_KEY,
    GLOBAL_HOLDOUT_VARIANTS,
    Exposure,
    exposure_id_for,
)
from tessera.experiments.domain.hashing import bucket
from tessera.profiles.v1 import profiles_pb2

if TYPE_CHECKING:
    from tessera.decision.application.pressure import PressureGate
    from tessera.decision.transport.evaluation import Evaluator

log = logging.getLogger("tessera.decision.decide")


class Identifier(Protocol):
    """Who resolves visitors: the profile service's stub, or IdentifyStreams over it.

    Either fails as the unary call does (`grpc.aio.AioRpcError`).
    """

    def Identify(
        self, request: profiles_pb2.IdentifyRequest, *, timeout: float | None = None
    ) -> Awaitable[profiles_pb2.IdentifyResponse]:
        """Resolve the visitor's profile within `timeout` seconds."""


PEER_DOWN = (Unavailable, DeadlineExceeded)
"""What a peer that is down, draining or too slow raises: Decide serves without it."""

ANSWER_RESERVE = 0.1
"""Share of the caller's remaining time kept to build and send the answer.

Internal calls end before the caller's deadline, so a Decide that fails
open still reaches the caller in time.
"""

PROFILE_DOWN = "profile service unavailable: default experience"
SEGMENTS_DOWN = "segment service unavailable"
EXPERIMENTS_DOWN = "experiment service unavailable"


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC: what campaign schedules compare against."""
    return dt.datetime.now(dt.UTC)


class ExposureSink(Protocol):
    """Where Decide hands its exposures: queued, never waited for."""

    def emit(self, exposures: Iterable[Exposure]) -> None:
        """Take exposures to send to the experiment service."""


def sticky_of(traits: struct_pb2.Struct) -> dict[str, sticky.Kept]:
    """The person's sticky variants, from the `_variant:` traits of their profile."""
    found: dict[str, sticky.Kept] = {}
    prefix = sticky.TRAIT_PREFIX
    fields = traits.fields
    # Names first: reading a value out of the map costs more than its name,
    # and most traits are not sticky variants.
    for name in fields:
        if name.startswith(prefix):
            held = sticky.kept(fields[name].string_value)
            if held is not None:
                found[name[len(prefix) :]] = held
    return found


def exposures_of(
    profile_id: str, choices: Iterable[Choice], now: dt.datetime
) -> Iterable[Exposure]:
    """One exposure per campaign shown: its variant or control, or held out on the control."""
    day = now.date()
    for choice in choices:
        campaign = choice.campaign
        if campaign is None:
            continue
        key, variant = campaign.experiment_key, choice.variant_key
        yield Exposure(
            exposure_id_for(profile_id, key, variant, choice.held_out, day),
            key,
            variant,
            profile_id,
            now,
            choice.held_out,
        )


def in_global_holdout(
    profile_id: str, fraction: float, first_exposures: dict[str, sticky.Kept]
) -> bool | None:
    """Whether the person is in the global holdout; None when there is none (fraction 0).

    The bucket of the canonical profile id under the seed `_global_holdout`
    (the assignment hash, docs/hashing.md) below `fraction`; once exposed, the
    person's first answer sticks, whatever the fraction says later.
    """
    if fraction <= 0:
        return None
    first = first_exposures.get(GLOBAL_HOLDOUT_KEY)
    if first is not None and first.variant_key in GLOBAL_HOLDOUT_VARIANTS:
        return first.variant_key == GLOBAL_HOLDOUT_VARIANTS[0]
    return bucket(GLOBAL_HOLDOUT_KEY, profile_id) < fraction


def global_exposure(profile_id: str, held_out: bool, now: dt.datetime) -> Exposure:
    """The person's exposure to the programme: held out, or personalised."""
    variant = GLOBAL_HOLDOUT_VARIANTS[0] if held_out else GLOBAL_HOLDOUT_VARIANTS[1]
    return Exposure(
        exposure_id_for(profile_id, GLOBAL_HOLDOUT_KEY, variant, False, now.date()),
        GLOBAL_HOLDOUT_KEY,
        variant,
        profile_id,
        now,
    )


@dataclass(frozen=True, slots=True)
class DecideQuery:
    """What a Decide asks: for this visitor, on this channel, fill these placements."""

    identities: Sequence[common_pb2.Identity]
    channel: common_pb2.Channel.ValueType
    placements: Sequence[str]
    context: struct_pb2.Struct
    explain: bool = False
    request_id: str = ""
    """Set to the same value on a retry: the retry charges nothing more (docs/decide.md)."""


@dataclass(frozen=True, slots=True)
class Decisions:
    """What a Decide answers: one choice per placement, in the query's order, and why."""

    profile_id: str
    choices: Sequence[Choice]
    segment_keys: Sequence[str]
    conversion_probability: float
    payloads: Sequence[Mapping[str, Any] | None] = ()
    """Per choice, its payload with placeholders filled in (None: as written); empty: all."""


class Budget:
    """The time one Decide may spend on its peers, read afresh before each call.

    Fixed once, as an instant on a monotonic clock; `left()` is what an
    internal call gets as its deadline, so a call made after a slow one gets
    only what the slow one left, never the full setting again.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + max(0.0, seconds)

    def left(self) -> float:
        """Seconds until the budget runs out (0 once it has)."""
        return max(0.0, self._end - self._clock())


@dataclass(frozen=True, slots=True)
class Skipped:
    """A campaign left out because this replica could not evaluate it, and why."""

    campaign: CampaignDef
    reason: str


def skipped_for_audience(
    reachable: Sequence[CampaignDef], in_segments: frozenset[str], missing: frozenset[str], why: str
) -> list[Skipped]:
    """Campaigns whose audience could not be checked: no known segment of it holds the visitor.

    A campaign whose visitor is in any of its audience segments is served,
    missing segments or not (an audience is any one of its segments).
    """
    skipped = []
    for campaign in reachable:
        keys = campaign.audience_segment_keys
        if not keys or in_segments.intersection(keys):
            continue
        lacking = missing.intersection(keys)
        if lacking:
            names = ", ".join(sorted(lacking))
            skipped.append(Skipped(campaign, f"skipped {campaign.key}: {why} ({names})"))
    return skipped


def with_skipped(
    choices: Sequence[Choice], skipped: Sequence[Skipped], channel: int
) -> list[Choice]:
    """Each placement's choice, with the campaigns skipped ahead of what it shows named.

    A placement left empty says only why campaigns were skipped (not "no
    campaign fits", which would be untrue); a filled one adds the skipped
    campaigns that rank above the one it shows.
    """
    if not skipped:
        return list(choices)
    skipped = sorted(skipped, key=lambda s: _rank(s.campaign))
    out = []
    for choice in choices:
        shown = choice.campaign
        ahead = [
            s.reason
            for s in skipped
            if choice.placement in s.campaign.placements
            and (not s.campaign.channels or channel in s.campaign.channels)
            and (shown is None or _rank(s.campaign) < _rank(shown))
        ]
        if not ahead:
            out.append(choice)
        elif shown is None:
            out.append(replace(choice, reasons=(*ahead, "default experience")))
        else:
            out.append(replace(choice, reasons=(*choice.reasons, *ahead)))
    return out


def _rank(campaign: CampaignDef) -> tuple[int, str]:
    # The order `candidates` ranks in: priority first, then key.
    return (-campaign.priority, campaign.key)


def default_decisions(query: DecideQuery, reason: str) -> Decisions:
    """Every placement's default experience, for a visitor Decide could not identify.

    Treated as anonymous: no profile, no segment, no campaign, so nothing
    is assigned and no exposure is counted (docs/decide.md).
    """
    return Decisions(
        profile_id="",
        choices=[Choice(p, reasons=(reason,)) for p in query.placements],
        segment_keys=[],
        conversion_probability=0.0,
    )


class Decider:
    """Runs Decide over the campaign cache, the profile service and an evaluator."""

    def __init__(
        self,
        campaigns: DefinitionCache[CampaignDef],
        evaluator: Evaluator,
        profiles: Identifier,
        deadline_s: float,
        now: Callable[[], dt.datetime] = utc_now,
        exposures: ExposureSink | None = None,
        global_holdout: float = 0.0,
        pressure: PressureGate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.campaigns = campaigns
        self.evaluator = evaluator
        self.profiles = profiles
        self.deadline_s = deadline_s
        """The longest a Decide spends on its peers, when the caller allows more or sets none."""
        self.now = now
        self.exposures = exposures
        self.global_holdout = global_holdout
        """Share of all people held out of every campaign; 0 for none."""
        self.pressure = pressure
        """Budgets, caps and conflict-group holds; None leaves them out."""
        self.clock = clock
        """The monotonic clock budgets are read on."""
        self._audience: tuple[object, frozenset[str]] = (None, frozenset())
        self._listed: tuple[object, list[CampaignDef], bool] = (None, [], False)

    def _audience_keys(self) -> frozenset[str]:
        """Every segment some campaign targets; derived again only when the campaigns change."""
        items = self.campaigns.items
        held, keys = self._audience
        if held is not items:
            # The cache swaps in a new mapping on every change.
            keys = frozenset(k for c in items.values() for k in c.audience_segment_keys)
            self._audience = (items, keys)
        return keys

    def _everyone(self) -> tuple[list[CampaignDef], bool]:
        """Every campaign, and whether any needs counters; derived again only when they change.

        Without a campaign that has a pressure cost (under a budget), a cap
        or a conflict group, no Decide reads counters: it skips working out
        which ones it might show before Identify is sent.
        """
        items = self.campaigns.items
        held, everyone, any_counted = self._listed
        if held is not items:
            everyone = list(items.values())
            budget = self.pressure.rules.budget if self.pressure is not None else 0
            any_counted = any(counted(c, budget) for c in everyone)
            self._listed = (items, everyone, any_counted)
        return everyone, any_counted

    def budget(self, time_remaining: float | None) -> Budget:
        """This Decide's budget: the setting, or the caller's deadline less a reserve if nearer."""
        seconds = self.deadline_s
        if time_remaining is not None:
            seconds = min(seconds, time_remaining * (1 - ANSWER_RESERVE))
        return Budget(seconds, self.clock)

    async def decide(self, query: DecideQuery, time_remaining: float | None = None) -> Decisions:
        """Resolve the profile, find its segments and variants, pick per placement.

        `time_remaining` is the caller's own deadline, if it set one. Segments
        need the profile and assignments need the segments (an experiment's
        audience, and its layer's), so the steps run in turn; assignment is
        skipped when no campaign can fill a placement. The person's sticky
        variants come with the profile (its `_variant:` traits); every
        campaign shown is handed to the exposure sink, which sends it later,
        once the answer is on its way.
        A person in the global holdout gets every campaign's control (their
        default) and no assignment is asked.

        With a pressure gate, the person's budget, caps and conflict-group
        holds are read beside Identify, the choice respects them, and the
        campaigns shown are charged (docs/decide.md); a campaign outside
        its probability range is not a candidate.
        """
        budget = self.budget(time_remaining)
        now = self.now()
        everyone, any_counted = self._everyone()
        try:
            # Pressure, caps and holds (docs/decide.md): counters read beside Identify.
            identified, counters, spec, now_s = await self._identified_with_counters(
                query, budget, everyone, now, any_counted
            )
        except PEER_DOWN as error:
            metrics.count_degraded("profiles")
            log.debug("deciding without the profile", extra={"error": str(error)})
            return default_decisions(query, PROFILE_DOWN)
        profile = identified.profile
        segment_keys, segments_down = await self._segments(profile, query, budget)
        in_segments = frozenset(segment_keys)
        probability = (
            profile.features.conversion_probability if profile.HasField("features") else None
        )
        ranked = candidates(
            everyone, query.placements, query.channel, in_segments, now, probability
        )
        skipped: list[Skipped] = []
        audience = self._audience_keys()
        lacking = audience if segments_down else self.evaluator.missing_segments(audience)
        if lacking:
            # Campaigns that would fit but for an audience this replica cannot check.
            reachable = candidates(
                everyone, query.placements, query.channel, audience, now, probability
            )
            why = SEGMENTS_DOWN if segments_down else "audience segment not loaded"
            skipped = skipped_for_audience(reachable, in_segments, lacking, why)
            if skipped and not segments_down:
                metrics.count_degraded("segments")
        first_exposures = sticky_of(profile.traits)
        held = in_global_holdout(profile.profile_id, self.global_holdout, first_exposures)
        assignments = Assignments()
        if ranked and not held:
            ranked, assignments, unassigned = await self._assign(
                profile.profile_id, segment_keys, query.channel, ranked, budget, first_exposures
            )
            skipped += unassigned
        explained = (
            static_skips(everyone, query.placements, query.channel, in_segments, now, probability)
            if query.explain
            else None
        )
        pressure_budget = self.pressure.rules.budget if self.pressure else 0

        def rechoose(known: Counters) -> list[Choice]:
            return choose(
                query.placements,
                ranked,
                assignments.variants,
                query.channel,
                in_segments,
                assignments.held_out,
                global_holdout=bool(held),
                counters=known,
                budget=pressure_budget,
                holders=holding(known.holds, everyone, in_segments, now, probability),
                explain=explained,
            )

        choices = rechoose(counters)
        # An empty spec means no campaign that may be shown is counted: the
        # charge would write nothing, unless merged ids are to be folded.
        if (
            self.pressure is not None
            and spec is not None
            and (not spec.empty or identified.merged_profile_ids)
        ):
            choices = await self.pressure.charge(
                profile.profile_id,
                identified.merged_profile_ids,
                spec,
                counters,
                choices,
                rechoose,
                now_s,
                budget.left(),
                query.request_id,
            )
        if self.exposures is not None and (ranked or held is not None):
            # Handed over on the loop's next turn: by then the answer is
            # written (gRPC sends it as the handler returns), so working out
            # the exposure ids and queueing them is no part of what the
            # caller waits for.
            asyncio.get_running_loop().call_soon(
                self._emit, self.exposures, profile.profile_id, choices if ranked else (), held, now
            )
        return Decisions(
            profile_id=profile.profile_id,
            choices=with_skipped(choices, skipped, query.channel),
            segment_keys=segment_keys,
            conversion_probability=profile.features.conversion_probability,
            payloads=render_payloads(choices, profile, query.context),
        )

    @staticmethod
    def _emit(
        sink: ExposureSink,
        profile_id: str,
        choices: Sequence[Choice],
        held: bool | None,
        now: dt.datetime,
    ) -> None:
        """Hand the exposures of one Decide to the sink: the campaigns shown, the global holdout."""
        if choices:
            sink.emit(exposures_of(profile_id, choices, now))
        if held is not None:
            sink.emit([global_exposure(profile_id, held, now)])

    async def _identified_with_counters(
        self,
        query: DecideQuery,
        budget: Budget,
        everyone: Sequence[CampaignDef],
        now: dt.datetime,
        any_counted: bool = True,
    ) -> tuple[profiles_pb2.IdentifyResponse, Counters, CounterSpec | None, int]:
        """Identify, and the person's counters read beside it under a guessed profile id.

        The counters matter only when a campaign that may fill a requested
        placement has a pressure cost, a cap or a conflict group. They are
        read under the profile id the identities resolved to on an earlier
        Decide, at the same time as Identify. Without a guess, or when
        Identify answers another id, nothing is read: the choice is made on
        empty counters and the charge, which checks every limit and hold it
        relied on, refuses it if the truth differs (docs/decide.md). Either
        way one round trip to the store is on the Decide's path. When no
        campaign at all is counted (`any_counted` false) the spec is empty
        whatever the placements, so it is not worked out.
        """
        gate = self.pressure
        now_s = int(now.timestamp())
        if gate is None:
            return await self._identify(query, budget), NO_COUNTERS, None, now_s
        spec = (
            gate.spec(
                possible(everyone, query.placements, query.channel, now), now_s, query.request_id
            )
            if any_counted
            else NOTHING_COUNTED
        )
        guess = gate.guesses.guess(query.identities) if not spec.empty else None
        counters = NO_COUNTERS
        if guess is not None:
            identified, counters = await asyncio.gather(
                self._identify(query, budget), gate.read(guess, spec, now_s, budget.left())
            )
        else:
            identified = await self._identify(query, budget)
        profile_id = identified.profile.profile_id
        if not spec.empty:
            gate.guesses.learn(query.identities, profile_id)
            if guess != profile_id:
                counters = NO_COUNTERS  # optimistic: the charge checks
        return identified, counters, spec, now_s

    async def _identify(self, query: DecideQuery, budget: Budget) -> profiles_pb2.IdentifyResponse:
        """Identify the visitor: the profile and the ids this call merged into it.

        The profile is created on first sight and comes with session and features.
        """
        try:
            identified = await self.profiles.Identify(
                profiles_pb2.IdentifyRequest(identities=query.identities, channel=query.channel),
                timeout=budget.left(),
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "profiles") from error
        return identified

    async def _segments(
        self, profile: profiles_pb2.Profile, query: DecideQuery, budget: Budget
    ) -> tuple[list[str], bool]:
        """The profile's segments, and whether they could not be evaluated at all."""
        try:
            keys = await self.evaluator.segments(
                profile, query.channel, query.context, budget.left()
            )
        except PEER_DOWN:
            metrics.count_degraded("segments")
            return [], True
        return keys, False

    async def _assign(
        self,
        profile_id: str,
        segment_keys: Sequence[str],
        channel: int,
        ranked: Sequence[CampaignDef],
        budget: Budget,
        first_exposures: dict[str, sticky.Kept],
    ) -> tuple[list[CampaignDef], Assignments, list[Skipped]]:
        """Assignments for the campaigns whose experiment can be evaluated; the others skipped."""
        lacking = self.evaluator.missing_experiments([c.experiment_key for c in ranked])
        skipped = [
            Skipped(c, f"skipped {c.key}: its experiment is not loaded")
            for c in ranked
            if c.experiment_key in lacking
        ]
        usable = [c for c in ranked if c.experiment_key not in lacking]
        if skipped:
            metrics.count_degraded("experiments")
        if not usable:
            return [], Assignments(), skipped
        try:
            assignments = await self.evaluator.assign(
                profile_id,
                segment_keys,
                channel,
                [c.experiment_key for c in usable],
                budget.left(),
                first_exposures,
            )
        except PEER_DOWN:
            metrics.count_degraded("experiments")
            down = [Skipped(c, f"skipped {c.key}: {EXPERIMENTS_DOWN}") for c in usable]
            return [], Assignments(), skipped + down
        return usable, assignments, skipped
