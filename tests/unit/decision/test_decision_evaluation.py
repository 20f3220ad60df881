"""The in-process evaluator: serves only with both snapshots, skips what it cannot read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import struct_pb2

from tessera.common.v1 import common_pb2
from tessera.decision.domain.campaigns import Assignments
from tessera.decision.transport.evaluation import InProcessEvaluator, RpcEvaluator
from tessera.experiments.v1 import experiments_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2


class Stream:
    """A watch RPC that stays open and sends what the test puts on it."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[Any] = asyncio.Queue()

    async def __call__(self, request: object) -> AsyncIterator[Any]:
        while True:
            yield await self.replies.get()


class Peers:
    """Stands in for both stubs: only the watch RPCs are called."""

    def __init__(self) -> None:
        self.WatchSegments = Stream()
        self.WatchExperiments = Stream()


def segment(key: str, text: str) -> segments_pb2.Segment:
    return segments_pb2.Segment(key=key, name=key, rule=segments_pb2.Rule(text=text))


def gold_profile() -> profiles_pb2.Profile:
    traits = struct_pb2.Struct()
    traits.update({"tier": "gold"})
    return profiles_pb2.Profile(profile_id="p1", traits=traits)


async def segments_of(evaluator: InProcessEvaluator) -> list[str]:
    return await evaluator.segments(
        gold_profile(), common_pb2.CHANNEL_WEB, struct_pb2.Struct(), timeout=1
    )


def test_in_process__experiments_snapshot_missing__serves_and_names_them_missing() -> None:
    async def go() -> None:
        peers = Peers()
        evaluator = InProcessEvaluator(peers, peers, start_wait_s=0.01)  # type: ignore[arg-type]
        peers.WatchSegments.replies.put_nowait(
            segments_pb2.WatchSegmentsResponse(
                snapshot=True, segments=[segment("gold", 'trait.tier == "gold"')]
            )
        )
        await asyncio.wait_for(evaluator.start(), 2)
        missing_before = evaluator.missing_experiments(["exp"])
        segments_before = await segments_of(evaluator)
        assigned_before = await evaluator.assign(
            "p1", [], common_pb2.CHANNEL_WEB, ["exp"], timeout=1
        )

        peers.WatchExperiments.replies.put_nowait(
            experiments_pb2.WatchExperimentsResponse(snapshot=True, experiments=[experiment()])
        )
        while evaluator.missing_experiments(["exp"]):
            await asyncio.sleep(0.001)
        assigned_after = await evaluator.assign(
            "p1", [], common_pb2.CHANNEL_WEB, ["exp"], timeout=1
        )
        await evaluator.stop()

        assert missing_before == {"exp"}
        assert segments_before == ["gold"]
        assert assigned_before == Assignments()
        assert assigned_after.variants == {"exp": "on"}

    asyncio.run(go())


def test_in_process__segments_snapshot_missing__every_segment_missing_none_matched() -> None:
    async def go() -> tuple[frozenset[str], list[str], frozenset[str]]:
        peers = Peers()
        evaluator = InProcessEvaluator(peers, peers, start_wait_s=0.01)  # type: ignore[arg-type]
        peers.WatchExperiments.replies.put_nowait(
            experiments_pb2.WatchExperimentsResponse(snapshot=True)
        )
        await asyncio.wait_for(evaluator.start(), 2)
        missing = evaluator.missing_segments(["gold", "silver"])
        found = await segments_of(evaluator)
        peers.WatchSegments.replies.put_nowait(
            segments_pb2.WatchSegmentsResponse(
                snapshot=True, segments=[segment("gold", 'trait.tier == "gold"')]
            )
        )
        while evaluator.missing_segments(["gold"]):
            await asyncio.sleep(0.001)
        missing_after = evaluator.missing_segments(["gold", "silver"])
        await evaluator.stop()
        return missing, found, missing_after

    missing, found, missing_after = asyncio.run(go())

    assert missing == {"gold", "silver"}
    assert found == []
    assert missing_after == {"silver"}


def test_in_process__segment_rule_unreadable__skipped_others_evaluated() -> None:
    async def go() -> list[str]:
        peers = Peers()
        evaluator = InProcessEvaluator(peers, peers)  # type: ignore[arg-type]
        peers.WatchSegments.replies.put_nowait(
            segments_pb2.WatchSegmentsResponse(
                snapshot=True,
                segments=[
                    segment("gold", 'trait.tier == "gold"'),
                    segment("newer", "trait.tier ~~~ a rule from a newer release"),
                ],
            )
        )
        peers.WatchExperiments.replies.put_nowait(
            experiments_pb2.WatchExperimentsResponse(snapshot=True)
        )
        await asyncio.wait_for(evaluator.start(), 2)
        found = await segments_of(evaluator)
        await evaluator.stop()
        return found

    assert asyncio.run(go()) == ["gold"]


def test_in_process__changes_on_the_stream__evaluation_follows() -> None:
    async def go() -> tuple[list[str], list[str]]:
        peers = Peers()
        evaluator = InProcessEvaluator(peers, peers)  # type: ignore[arg-type]
        peers.WatchSegments.replies.put_nowait(
            segments_pb2.WatchSegmentsResponse(
                snapshot=True, segments=[segment("gold", 'trait.tier == "gold"')]
            )
        )
        peers.WatchExperiments.replies.put_nowait(
            experiments_pb2.WatchExperimentsResponse(snapshot=True)
        )
        await asyncio.wait_for(evaluator.start(), 2)
        before = await segments_of(evaluator)

        peers.WatchSegments.replies.put_nowait(
            segments_pb2.WatchSegmentsResponse(
                segments=[segment("all", "true")], deleted_keys=["gold"]
            )
        )
        async with asyncio.timeout(2):
            while (after := await segments_of(evaluator)) == before:
                await asyncio.sleep(0)
        await evaluator.stop()
        return before, after

    assert asyncio.run(go()) == (["gold"], ["all"])


def experiment() -> experiments_pb2.Experiment:
    """A running experiment `exp` that puts everyone in its only variant, `on`."""
    return experiments_pb2.Experiment(
        key="exp",
        variants=[experiments_pb2.Variant(key="on", weight=1)],
        control_variant_key="on",
        traffic_fraction=1.0,
        status=experiments_pb2.EXPERIMENT_STATUS_RUNNING,
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
    )


def held_out_experiment() -> experiments_pb2.Experiment:
    """A running experiment that holds out almost everyone."""
    return experiments_pb2.Experiment(
        key="campaign-a",
        variants=[
            experiments_pb2.Variant(key="treatment", weight=1),
            experiments_pb2.Variant(key="control", weight=1),
        ],
        control_variant_key="control",
        traffic_fraction=1.0,
        holdout=experiments_pb2.Holdout(fraction=0.999999),
        status=experiments_pb2.EXPERIMENT_STATUS_RUNNING,
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
    )


def test_in_process__profile_in_holdout__reported_held_out_not_dropped() -> None:
    async def go() -> Assignments:
        peers = Peers()
        evaluator = InProcessEvaluator(peers, peers)  # type: ignore[arg-type]
        peers.WatchSegments.replies.put_nowait(segments_pb2.WatchSegmentsResponse(snapshot=True))
        peers.WatchExperiments.replies.put_nowait(
            experiments_pb2.WatchExperimentsResponse(
                snapshot=True, experiments=[held_out_experiment()]
            )
        )
        await asyncio.wait_for(evaluator.start(), 2)
        assigned = await evaluator.assign("p1", [], common_pb2.CHANNEL_WEB, ["campaign-a"], 1)
        await evaluator.stop()
        return assigned

    assert asyncio.run(go()) == Assignments({}, frozenset({"campaign-a"}))


def test_rpc__assignment_in_holdout__reported_held_out_not_dropped() -> None:
    class Experiments:
        async def Assign(
            self, request: experiments_pb2.AssignRequest, timeout: float
        ) -> experiments_pb2.AssignResponse:
            return experiments_pb2.AssignResponse(
                assignments=[
                    experiments_pb2.Assignment(
                        experiment_key="campaign-a", variant_key="control", in_holdout=True
                    ),
                    experiments_pb2.Assignment(experiment_key="campaign-b", variant_key="t"),
                ]
            )

    evaluator = RpcEvaluator(None, Experiments())  # type: ignore[arg-type]

    assigned = asyncio.run(
        evaluator.assign("p1", [], common_pb2.CHANNEL_WEB, ["campaign-a", "campaign-b"], 1)
    )

    assert assigned == Assignments({"campaign-b": "t"}, frozenset({"campaign-a"}))
