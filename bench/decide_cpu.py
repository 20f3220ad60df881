"""`python -m bench.decide_cpu`: Tessera's own CPU per Decide, in process, no network.

The decision service as `tessera.decision.server` wires it (the servicer,
`Decider`, the in-process evaluator, the exposure emitter, the pressure
gate over the in-process counter store, `IdentifyStreams`), with its peers
replaced by stubs that answer at once:

- the profile service's `IdentifyStream` answers each request with a
  prepared `IdentifyResponse`, parsed from bytes as gRPC would hand it
  over (`--unary`: the unary `Identify` instead, `--streams 0`'s path);
- the watch streams carry the benchmark's definitions (`bench.seed`: the
  segment `gold`, the campaign `hero-gold` and its experiment, as
  `Campaigns.create` writes it) once, then nothing;
- `RecordExposures` stores nothing and answers OK.

Profiles are the benchmark's returning visitors: one cookie identity, half
with `tier=gold` and their sticky variant of `hero-gold` (banner or control,
in turn); `--busy` gives each the 200-event history of `bench.evaluate`.

Each round decides `--calls` times one after another through
`DecisionServicer.Decide`, then makes the same number of bare Identify
calls through the same client (the floor: the hop Decide cannot do
without), and prints the process's CPU time per call of each
(`time.process_time`: every thread, the emitter's task included); last,
the medians of the rounds and their difference, Decide's own work. The
machine's other load inflates every figure: compare runs made in turn.
What gRPC itself costs (the server side of Decide, the client side of
Identify) is not in it: bench/README.md, "Where a Decide's time goes", has
those.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from google.protobuf import struct_pb2

from bench import seed
from bench.evaluate import busy_profile
from tessera.common.v1 import common_pb2
from tessera.decision.application.campaigns import experiment_for, normalised
from tessera.decision.application.decide import Decider
from tessera.decision.application.exposures import ExposureEmitter
from tessera.decision.application.pressure import PressureGate
from tessera.decision.domain.campaigns import EXPERIMENT_PREFIX, CampaignDef
from tessera.decision.domain.pressure import PressureRules
from tessera.decision.storage.counters import MemoryCounterStore
from tessera.decision.transport.convert import campaign_from_proto
from tessera.decision.transport.evaluation import InProcessEvaluator
from tessera.decision.transport.identify_streams import IdentifyStreams, StreamCall
from tessera.decision.transport.servicer import DecisionServicer
from tessera.decision.v1 import decision_pb2
from tessera.definitions import DefinitionCache
from tessera.experiments.v1 import experiments_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2
from tessera.sticky import StickyVariant, trait_name

EXPOSED_AT = dt.datetime(2026, 11, 1, 9, 30, tzinfo=dt.UTC)


def identify_bytes(index: int, busy: bool) -> bytes:
    """The serialized IdentifyResponse of seeded profile `index` (even: gold, exposed)."""
    now = dt.datetime.now(dt.UTC)
    if busy:
        profile = busy_profile(now, seed=index)
        profile.profile_id = f"{index:032x}"
        del profile.identities[:]
        profile.traits.Clear()
    else:
        profile = profiles_pb2.Profile(profile_id=f"{index:032x}")
        profile.created_at.FromDatetime(EXPOSED_AT)
        profile.updated_at.FromDatetime(EXPOSED_AT)
        profile.session.page_views = 1
        profile.session.events = 1
        profile.features.rfm.recency_days = -1
    profile.identities.add(type="cookie", value=cookie(index))
    if index % 2 == 0:
        variant = "banner" if index % 4 == 0 else "control"
        sticky = StickyVariant(variant, False, EXPOSED_AT)
        profile.traits.update(
            {"tier": "gold", trait_name(EXPERIMENT_PREFIX + seed.CAMPAIGN_KEY): sticky.trait()}
        )
    return profiles_pb2.IdentifyResponse(profile=profile).SerializeToString()


def cookie(index: int) -> str:
    return f"bench-cpu-{index:05d}"


def hero_gold() -> decision_pb2.Campaign:
    """The campaign `bench.seed` creates."""
    banner = decision_pb2.CampaignVariant(key="banner", weight=1)
    banner.payload.update({"title": "Welcome back"})
    return decision_pb2.Campaign(
        key=seed.CAMPAIGN_KEY,
        name="Hero banner for gold members",
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=[seed.PLACEMENT],
        audience_segment_keys=[seed.SEGMENT_KEY],
        variants=[banner],
        status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
    )


class Profiles:
    """The profile service: Identify answers with the prepared profile of the cookie."""

    def __init__(self, answers: Mapping[str, bytes]) -> None:
        self.answers = answers
        self.stream_answers = {
            key: profiles_pb2.IdentifyStreamResponse(
                response=profiles_pb2.IdentifyResponse.FromString(answer)
            ).SerializeToString()
            for key, answer in answers.items()
        }

    async def Identify(
        self, request: profiles_pb2.IdentifyRequest, *, timeout: float | None = None
    ) -> profiles_pb2.IdentifyResponse:
        return profiles_pb2.IdentifyResponse.FromString(self.answers[request.identities[0].value])

    def IdentifyStream(self) -> StreamCall:
        return _Stream(self)


class _Stream:
    """An open IdentifyStream whose server answers every request as it is written."""

    def __init__(self, profiles: Profiles) -> None:
        self.profiles = profiles
        self.answers: asyncio.Queue[profiles_pb2.IdentifyStreamResponse | None] = asyncio.Queue()

    async def write(self, request: profiles_pb2.IdentifyStreamRequest) -> None:
        # The answer as the reader would get it off the wire: the response's
        # bytes with the request id appended (fields of concatenated messages merge).
        tagged = profiles_pb2.IdentifyStreamResponse(request_id=request.request_id)
        answer = self.profiles.stream_answers[request.request.identities[0].value]
        wire = answer + tagged.SerializeToString()
        self.answers.put_nowait(profiles_pb2.IdentifyStreamResponse.FromString(wire))

    def __aiter__(self) -> AsyncIterator[profiles_pb2.IdentifyStreamResponse]:
        return self._read()

    async def _read(self) -> AsyncIterator[profiles_pb2.IdentifyStreamResponse]:
        while (answer := await self.answers.get()) is not None:
            yield answer

    def cancel(self) -> bool:
        self.answers.put_nowait(None)
        return True

    async def done_writing(self) -> None:
        self.answers.put_nowait(None)


async def _forever() -> None:
    await asyncio.Event().wait()


class Peers:
    """The segment and experiment services: one snapshot each, and RecordExposures."""

    def __init__(self, campaign: decision_pb2.Campaign) -> None:
        self.segment = segments_pb2.Segment(
            key=seed.SEGMENT_KEY, rule=segments_pb2.Rule(text='trait.tier == "gold"')
        )
        self.experiment = experiment_for(campaign)
        self.recorded = 0

    async def WatchSegments(
        self, request: segments_pb2.WatchSegmentsRequest
    ) -> AsyncIterator[segments_pb2.WatchSegmentsResponse]:
        yield segments_pb2.WatchSegmentsResponse(snapshot=True, segments=[self.segment])
        await _forever()

    async def WatchExperiments(
        self, request: experiments_pb2.WatchExperimentsRequest
    ) -> AsyncIterator[experiments_pb2.WatchExperimentsResponse]:
        yield experiments_pb2.WatchExperimentsResponse(snapshot=True, experiments=[self.experiment])
        await _forever()

    async def RecordExposures(
        self, request: experiments_pb2.RecordExposuresRequest, timeout: float
    ) -> experiments_pb2.RecordExposuresResponse:
        self.recorded += len(request.exposures)
        return experiments_pb2.RecordExposuresResponse()


class _Campaigns:
    """The campaign cache, holding the one campaign."""

    def __init__(self, campaigns: Mapping[str, CampaignDef]) -> None:
        self.items = campaigns


class _Context:
    """What Decide reads of its gRPC context: the caller's deadline (5 s, as bench.cost)."""

    def time_remaining(self) -> float:
        return 5.0


def decide_request(index: int) -> decision_pb2.DecideRequest:
    return decision_pb2.DecideRequest(
        identities=[common_pb2.Identity(type="cookie", value=cookie(index))],
        channel=common_pb2.CHANNEL_WEB,
        placements=[seed.PLACEMENT],
        context=struct_pb2.Struct(),
    )


async def measure(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    campaign = normalised(hero_gold())
    peers = Peers(campaign)
    profiles = Profiles({cookie(i): identify_bytes(i, args.busy) for i in range(args.profiles)})
    evaluator = InProcessEvaluator(cast(Any, peers), cast(Any, peers))
    await evaluator.start()
    exposures = ExposureEmitter(cast(Any, peers))
    exposures.start()
    streams = IdentifyStreams(profiles.IdentifyStream, profiles.Identify, 0 if args.unary else 2)
    held = _Campaigns({campaign.key: campaign_from_proto(campaign)})
    decider = Decider(
        cast(DefinitionCache[CampaignDef], held),
        evaluator,
        streams,
        0.5,
        exposures=exposures,
        pressure=PressureGate(MemoryCounterStore(), PressureRules(budget=10)),
    )
    servicer = DecisionServicer(decider, cast(Any, None), cast(Any, None))
    context = cast(Any, _Context())
    requests = [decide_request(i % args.profiles) for i in range(args.calls)]

    async def run(batch: list[decision_pb2.DecideRequest]) -> None:
        for request in batch:
            await servicer.Decide(request, context)

    # Sanity: the gold visitors get the campaign, the others nothing.
    gold = await servicer.Decide(decide_request(0), context)
    other = await servicer.Decide(decide_request(1), context)
    if gold.decisions[0].campaign_key != seed.CAMPAIGN_KEY or other.decisions[0].campaign_key:
        raise SystemExit(f"unexpected answers: {gold} / {other}")

    async def identify_only(batch: list[decision_pb2.DecideRequest]) -> None:
        # The floor: the Identify hop alone, through the same client, as Decide makes it.
        for request in batch:
            await streams.Identify(
                profiles_pb2.IdentifyRequest(
                    identities=request.identities, channel=request.channel
                ),
                timeout=0.5,
            )

    await run(requests[: args.calls // 10])
    per_call: list[float] = []
    floor: list[float] = []
    for _ in range(args.rounds):
        for kind, loop, into in (("decide", run, per_call), ("identify", identify_only, floor)):
            started = time.process_time()
            await loop(requests)
            into.append(1e6 * (time.process_time() - started) / args.calls)
            print(f"{kind:9} {into[-1]:7.1f} CPU µs per call", flush=True)
    await exposures.close(1.0)
    await streams.close()
    await evaluator.stop()
    return per_call, floor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="Decides per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profiles", type=int, default=1000, help="visitors, half gold")
    parser.add_argument("--busy", action="store_true", help="profiles with a 200-event history")
    parser.add_argument("--unary", action="store_true", help="unary Identify, no streams")
    args = parser.parse_args(argv)
    per_call, floor = asyncio.run(measure(args))
    decide, identify = statistics.median(per_call), statistics.median(floor)
    print(
        f"median    decide {decide:7.1f}, identify alone {identify:7.1f}, "
        f"Decide's own {decide - identify:7.1f} CPU µs per call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
