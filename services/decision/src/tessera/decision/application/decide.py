"""Decide: who the visitor is, their segments and variants, one campaign per placement.

The fan-out lives here and the picking rules in `tessera.decision.domain`,
so what is added to the hot path later (pressure budgets read beside the
profile, caps, exposures sent off the request path, failing open when a
peer is slow) grows this module, not the servicer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf import struct_pb2

from tessera import sticky
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
from tessera.decision.domain.pressure import Counters, CounterSpec
from tessera.definitions import DefinitionCache
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
    from tessera.profiles.v1.profiles_pb2_grpc import ProfileServiceAsyncStub


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
    for name, value in traits.fields.items():
        if name.startswith(prefix):
            held = sticky.kept(value.string_value)
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


@dataclass(frozen=True)
class DecideQuery:
    """What a Decide asks: for this visitor, on this channel, fill these placements."""

    identities: Sequence[common_pb2.Identity]
    channel: common_pb2.Channel.ValueType
    placements: Sequence[str]
    context: struct_pb2.Struct
    explain: bool = False


@dataclass(frozen=True)
class Decisions:
    """What a Decide answers: one choice per placement, in the query's order, and why."""

    profile_id: str
    choices: Sequence[Choice]
    segment_keys: Sequence[str]
    conversion_probability: float
    payloads: Sequence[Mapping[str, Any] | None] = ()
    """Per choice, its payload with placeholders filled in (None: as written); empty: all."""


class Decider:
    """Runs Decide over the campaign cache, the profile service and an evaluator."""

    def __init__(
        self,
        campaigns: DefinitionCache[CampaignDef],
        evaluator: Evaluator,
        profiles: ProfileServiceAsyncStub,
        deadline_s: float,
        now: Callable[[], dt.datetime] = utc_now,
        exposures: ExposureSink | None = None,
        global_holdout: float = 0.0,
        pressure: PressureGate | None = None,
    ) -> None:
        self.campaigns = campaigns
        self.evaluator = evaluator
        self.profiles = profiles
        self.deadline_s = deadline_s
        self.now = now
        self.exposures = exposures
        self.global_holdout = global_holdout
        """Share of all people held out of every campaign; 0 for none."""
        self.pressure = pressure
        """Budgets, caps and conflict-group holds; None leaves them out."""

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
        placement. The person's sticky variants come with the profile (its
        `_variant:` traits); every campaign shown is handed to the exposure
        sink, which sends it later. A person in the global holdout gets every
        campaign's control (their default) and no assignment is asked.

        With a pressure gate, the person's budget, caps and conflict-group
        holds are read beside Identify, the choice respects them, and the
        campaigns shown are charged (docs/decide.md); a campaign outside
        its probability range is not a candidate.
        """
        timeout = self.timeout(time_remaining)
        now = self.now()
        everyone = list(self.campaigns.items.values())
        # Pressure, caps and holds (docs/decide.md): counters read beside Identify.
        identified, counters, spec, now_s = await self._identified_with_counters(
            query, timeout, everyone, now
        )
        profile = identified.profile
        segment_keys = await self.evaluator.segments(profile, query.channel, query.context, timeout)
        in_segments = frozenset(segment_keys)
        probability = (
            profile.features.conversion_probability if profile.HasField("features") else None
        )
        ranked = candidates(
            everyone,
            query.placements,
            query.channel,
            in_segments,
            now,
            probability,
        )
        first_exposures = sticky_of(profile.traits)
        held = in_global_holdout(profile.profile_id, self.global_holdout, first_exposures)
        assignments = Assignments()
        if ranked and not held:
            assignments = await self.evaluator.assign(
                profile.profile_id,
                segment_keys,
                query.channel,
                [c.experiment_key for c in ranked],
                timeout,
                first_exposures,
            )
        explained = (
            static_skips(everyone, query.placements, query.channel, in_segments, now, probability)
            if query.explain
            else None
        )
        budget = self.pressure.rules.budget if self.pressure else 0

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
                budget=budget,
                holders=holding(
                    known.holds, everyone, query.channel, in_segments, now, probability
                ),
                explain=explained,
            )

        choices = rechoose(counters)
        if self.pressure is not None and spec is not None:
            choices = await self.pressure.charge(
                profile.profile_id,
                identified.merged_profile_ids,
                spec,
                counters,
                choices,
                rechoose,
                now_s,
                timeout,
            )
        if self.exposures is not None:
            if ranked:
                self.exposures.emit(exposures_of(profile.profile_id, choices, now))
            if held is not None:
                self.exposures.emit([global_exposure(profile.profile_id, held, now)])
        return Decisions(
            profile_id=profile.profile_id,
            choices=choices,
            segment_keys=segment_keys,
            conversion_probability=profile.features.conversion_probability,
            payloads=render_payloads(choices, profile, query.context),
        )

    async def _identified_with_counters(
        self,
        query: DecideQuery,
        timeout: float,
        everyone: Sequence[CampaignDef],
        now: dt.datetime,
    ) -> tuple[profiles_pb2.IdentifyResponse, Counters, CounterSpec | None, int]:
        """Identify, and the person's counters read beside it under a guessed profile id.

        The counters matter only when a campaign that may fill a requested
        placement has a pressure cost, a cap or a conflict group. They are
        read under the profile id the identities resolved to on an earlier
        Decide, at the same time as Identify. Without a guess, or when
        Identify answers another id, nothing is read: the choice is made on
        empty counters and the charge, which checks every limit and hold it
        relied on, refuses it if the truth differs (docs/decide.md). Either
        way one round trip to the store is on the Decide's path.
        """
        gate = self.pressure
        now_s = int(now.timestamp())
        if gate is None:
            return await self._identify(query, timeout), Counters(), None, now_s
        spec = gate.spec(possible(everyone, query.placements, query.channel, now), now_s)
        guess = gate.guesses.guess(query.identities) if not spec.empty else None
        counters = Counters()
        if guess is not None:
            identified, counters = await asyncio.gather(
                self._identify(query, timeout), gate.read(guess, spec, now_s, timeout)
            )
        else:
            identified = await self._identify(query, timeout)
        profile_id = identified.profile.profile_id
        if not spec.empty:
            gate.guesses.learn(query.identities, profile_id)
            if guess != profile_id:
                counters = Counters()  # optimistic: the charge checks
        return identified, counters, spec, now_s

    async def _identify(self, query: DecideQuery, timeout: float) -> profiles_pb2.IdentifyResponse:
        """Identify the visitor: the profile and the ids this call merged into it.

        The profile is created on first sight and comes with session and features.
        """
        try:
            identified = await self.profiles.Identify(
                profiles_pb2.IdentifyRequest(identities=query.identities, channel=query.channel),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "profiles") from error
        return identified
