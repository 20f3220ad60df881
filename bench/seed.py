"""Seed the suite through its generated clients and wait until Decide sees it.

A segment `gold` (`trait.tier == "gold"`), a running campaign `hero-gold` on
placement `home_hero` for that segment, and a pool of profiles identified by
cookie, half of them gold. The decision service learns definitions through
watch streams, so `wait_until_decides` polls Decide before any measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from tessera.common.v1 import common_pb2
from tessera.decision.domain.campaigns import EXPERIMENT_PREFIX
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc
from tessera.sticky import TRAIT_PREFIX

SEGMENT_KEY = "gold"
CAMPAIGN_KEY = "hero-gold"
PLACEMENT = "home_hero"

# Generous per-call deadline for admin and seeding calls: SQLite writes on a
# busy two-core machine, not the hot path.
_SEED_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SeededProfile:
    """One seeded profile and the cookie that identifies it."""

    cookie: str
    profile_id: str
    gold: bool


async def gather_bounded(tasks: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    """Run coroutine factories with at most `limit` in flight; results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(task: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await task()

    return await asyncio.gather(*(one(t) for t in tasks))


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def seed_definitions(segments_address: str, decision_address: str) -> None:
    """Create the `gold` segment and the `hero-gold` campaign."""
    async with grpc.aio.insecure_channel(segments_address) as channel:
        await segments_pb2_grpc.SegmentServiceStub(channel).CreateSegment(
            segments_pb2.CreateSegmentRequest(
                segment=segments_pb2.Segment(
                    key=SEGMENT_KEY,
                    name="Gold tier",
                    description="Benchmark audience: profiles whose tier trait is gold.",
                    rule=segments_pb2.Rule(text='trait.tier == "gold"'),
                )
            ),
            timeout=_SEED_TIMEOUT_S,
        )
    campaign = decision_pb2.Campaign(
        key=CAMPAIGN_KEY,
        name="Hero banner for gold members",
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=[PLACEMENT],
        audience_segment_keys=[SEGMENT_KEY],
        variants=[
            decision_pb2.CampaignVariant(
                key="banner", weight=1, payload=_struct({"title": "Welcome back"})
            )
        ],
        status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
    )
    async with grpc.aio.insecure_channel(decision_address) as channel:
        await decision_pb2_grpc.DecisionServiceStub(channel).CreateCampaign(
            decision_pb2.CreateCampaignRequest(campaign=campaign), timeout=_SEED_TIMEOUT_S
        )


async def seed_profiles(
    profiles_address: str, count: int, run_id: str, parallel: int = 32
) -> list[SeededProfile]:
    """Identify `count` cookie profiles; every even one gets the trait tier=gold."""
    async with grpc.aio.insecure_channel(profiles_address) as channel:
        stub = profiles_pb2_grpc.ProfileServiceStub(channel)

        async def one(index: int) -> SeededProfile:
            cookie = f"bench-{run_id}-{index:05d}"
            reply = await stub.Identify(
                profiles_pb2.IdentifyRequest(
                    identities=[common_pb2.Identity(type="cookie", value=cookie)],
                    channel=common_pb2.CHANNEL_WEB,
                ),
                timeout=_SEED_TIMEOUT_S,
            )
            gold = index % 2 == 0
            if gold:
                await stub.UpdateTraits(
                    profiles_pb2.UpdateTraitsRequest(
                        profile_id=reply.profile.profile_id, traits=_struct({"tier": "gold"})
                    ),
                    timeout=_SEED_TIMEOUT_S,
                )
            return SeededProfile(cookie, reply.profile.profile_id, gold)

        def task(index: int) -> Callable[[], Awaitable[SeededProfile]]:
            return lambda: one(index)

        return await gather_bounded([task(i) for i in range(count)], parallel)


async def wait_until_decides(
    decision_address: str, profiles: Sequence[SeededProfile], timeout_s: float = 10.0
) -> float:
    """Poll Decide until a gold profile gets `hero-gold`; return the seconds it took.

    Several gold profiles are tried in turn: one of them may fall in the
    campaign's control group, and a control answer need not name the campaign.
    """
    gold = [p for p in profiles if p.gold][:20]
    if not gold:
        raise ValueError("no gold profile was seeded")
    started = time.monotonic()
    last = "no answer yet"
    async with grpc.aio.insecure_channel(decision_address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        attempt = 0
        while time.monotonic() - started < timeout_s:
            profile = gold[attempt % len(gold)]
            attempt += 1
            try:
                reply = await stub.Decide(decide_request(profile.cookie), timeout=2.0)
            except grpc.aio.AioRpcError as error:
                last = f"{error.code().name}: {error.details()}"
            else:
                if any(d.campaign_key == CAMPAIGN_KEY for d in reply.decisions):
                    return time.monotonic() - started
                last = f"decisions {[d.campaign_key for d in reply.decisions]}"
            await asyncio.sleep(0.1)
    raise TimeoutError(
        f"Decide gave no gold profile campaign {CAMPAIGN_KEY!r} within {timeout_s:.0f} s "
        f"(last: {last})"
    )


async def first_visits(
    decision_address: str,
    profiles_address: str,
    profiles: Sequence[SeededProfile],
    parallel: int = 8,
    settle_timeout_s: float = 30.0,
) -> float:
    """Decide once for every seeded profile, then wait until their first exposures stick.

    A person's first exposure to the campaign's experiment is written back
    onto their profile (the `_variant:` trait, by the experiment service's
    sticky sync) once; every later Decide of theirs only reads. Without
    this pass, the first seconds of the first Decide level would measure a
    storm of a thousand first exposures (writes in the profile service, its
    change feed, its followers) rather than Decide; the levels measure
    returning visitors, the common case. Returns the seconds it took.
    """
    started = time.monotonic()
    async with grpc.aio.insecure_channel(decision_address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)

        def task(profile: SeededProfile) -> Callable[[], Awaitable[Any]]:
            return lambda: stub.Decide(decide_request(profile.cookie), timeout=_SEED_TIMEOUT_S)

        await gather_bounded([task(p) for p in profiles], parallel)
    # The exposures go out in batches and stick in the background: wait
    # until the last gold profiles (exposed last) carry their variant.
    trait = f"{TRAIT_PREFIX}{EXPERIMENT_PREFIX}{CAMPAIGN_KEY}"
    last = [p for p in profiles if p.gold][-10:]
    async with grpc.aio.insecure_channel(profiles_address) as channel:
        read = profiles_pb2_grpc.ProfileServiceStub(channel)
        while time.monotonic() - started < settle_timeout_s:
            replies = [
                await read.GetProfile(
                    profiles_pb2.GetProfileRequest(profile_id=p.profile_id),
                    timeout=_SEED_TIMEOUT_S,
                )
                for p in last
            ]
            if all(trait in r.profile.traits.fields for r in replies):
                break
            await asyncio.sleep(0.1)
        else:
            raise TimeoutError(f"first exposures did not stick within {settle_timeout_s:.0f} s")
    return time.monotonic() - started


def track_event(cookie: str, event_id: str) -> common_pb2.Event:
    """A product view of a juicer by the visitor with `cookie`, as the benchmark tracks it."""
    event = common_pb2.Event(
        event_id=event_id,
        identities=[common_pb2.Identity(type="cookie", value=cookie)],
        channel=common_pb2.CHANNEL_WEB,
        type="product_view",
    )
    event.properties.update({"category": "juicers", "product_id": "j-100", "duration_ms": 1500})
    return event


def decide_request(cookie: str) -> decision_pb2.DecideRequest:
    """The benchmark's Decide: one cookie identity, the web channel, the hero placement."""
    return decision_pb2.DecideRequest(
        identities=[common_pb2.Identity(type="cookie", value=cookie)],
        channel=common_pb2.CHANNEL_WEB,
        placements=[PLACEMENT],
    )


RULE_SEGMENTS = 40
"""Segments `seed_rule_segments` defines: a catalogue a shop of some size keeps."""

CATEGORIES = ("juicers", "blenders", "kettles", "toasters", "mixers")


def rule_segment(index: int) -> segments_pb2.Segment:
    """One of the rule-heavy segments: traits, session views and event windows together."""
    category = CATEGORIES[index % len(CATEGORIES)]
    rule = (
        f'trait.country in ["FR", "BE", "DE"] and session.category_views("{category}") >= '
        f"{1 + index % 3} and count(purchase, within={7 + index}d) == 0 "
        f'or trait.tier == "gold" and count(product_view where category == "{category}", '
        f"within=90d) >= {index % 4}"
    )
    return segments_pb2.Segment(
        key=f"rules-{index:02d}", name=f"Rules {index}", rule=segments_pb2.Rule(text=rule)
    )


async def seed_rule_segments(segments_address: str, count: int = RULE_SEGMENTS) -> None:
    """Define `count` rule-heavy segments (safe to run again: existing keys are kept)."""
    async with grpc.aio.insecure_channel(segments_address) as channel:
        stub = segments_pb2_grpc.SegmentServiceStub(channel)
        for index in range(count):
            try:
                await stub.CreateSegment(
                    segments_pb2.CreateSegmentRequest(segment=rule_segment(index)),
                    timeout=_SEED_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise


def evaluate_request(cookie: str) -> segments_pb2.EvaluateSegmentsRequest:
    """EvaluateSegments for a visitor sent whole (no profile service call): traits, a
    session with category views, and 60 days of product views and purchases."""
    number = sum(cookie.encode())
    profile = profiles_pb2.Profile(
        profile_id=f"p-{cookie}",
        identities=[common_pb2.Identity(type="cookie", value=cookie)],
        session=profiles_pb2.Session(
            page_views=12,
            category_views={c: (number + k) % 4 for k, c in enumerate(CATEGORIES)},
        ),
    )
    profile.traits.update({"country": ("FR", "US", "DE")[number % 3], "tier": "gold"})
    today = (time.time_ns() // 86_400_000_000_000) - 1
    days = list(range(today - 59, today + 1))
    for category in CATEGORIES:
        profile.event_history.series.add(
            event_type="product_view",
            filter_property="category",
            filter_value=category,
            days=days,
            counts=[(number + day) % 3 for day in days],
        )
    profile.event_history.series.add(
        event_type="purchase", days=days[::10], counts=[1] * len(days[::10])
    )
    return segments_pb2.EvaluateSegmentsRequest(profile=profile, channel=common_pb2.CHANNEL_WEB)
