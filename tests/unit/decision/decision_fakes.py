"""In-memory peers and a SQLite catalog for the decision service's application tests.

The peers answer as the real services do on the calls the decision service
makes (the same messages, the same status codes), and record what they were
asked. The catalog is the product's own, on an SQLite file in a temporary
folder. Named apart from other folders' helpers so that
`from decision_fakes import ...` cannot pick up another module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.protobuf import struct_pb2

from tessera import db, migrations
from tessera.catalog import Catalog
from tessera.common.v1 import common_pb2
from tessera.decision.domain.campaigns import Assignments
from tessera.decision.transport.evaluation import NO_STICKY
from tessera.decision.v1 import decision_pb2
from tessera.errors import TesseraError
from tessera.experiments.v1 import experiments_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2
from tessera.sticky import Kept

if TYPE_CHECKING:
    from tessera.experiments.v1.experiments_pb2_grpc import ExperimentServiceAsyncStub
    from tessera.profiles.v1.profiles_pb2_grpc import ProfileServiceAsyncStub
    from tessera.segments.v1.segments_pb2_grpc import SegmentServiceAsyncStub

T = TypeVar("T")


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a grpc.aio stub raises when the peer answers `code`."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeExperiments:
    """ExperimentService's definition calls, over a dict of experiments."""

    def __init__(self) -> None:
        self.experiments: dict[str, experiments_pb2.Experiment] = {}
        self.calls: list[str] = []
        self.fail_next: grpc.StatusCode | None = None
        """Answer the next call with this code instead (a peer down or slow)."""
        self.before_update: Callable[[], Awaitable[None]] | None = None
        """Run before the next UpdateExperiment is applied (another writer's turn)."""
        self.before_create: Callable[[], Awaitable[None]] | None = None
        """Run before the next CreateExperiment is applied (another writer's turn)."""

    def stub(self) -> ExperimentServiceAsyncStub:
        """This fake, typed as the stub the decision service is given."""
        return cast("ExperimentServiceAsyncStub", self)

    def _maybe_fail(self) -> None:
        code, self.fail_next = self.fail_next, None
        if code is not None:
            raise rpc_error(code, "injected")

    async def CreateExperiment(
        self, request: experiments_pb2.CreateExperimentRequest, timeout: float
    ) -> experiments_pb2.CreateExperimentResponse:
        self.calls.append(f"create {request.experiment.key}")
        self._maybe_fail()
        hook, self.before_create = self.before_create, None
        if hook is not None:
            await hook()
        key = request.experiment.key
        if key in self.experiments:
            raise rpc_error(grpc.StatusCode.ALREADY_EXISTS, f"experiment.key: {key!r} exists")
        self.experiments[key] = request.experiment
        return experiments_pb2.CreateExperimentResponse(experiment=request.experiment)

    async def GetExperiment(
        self, request: experiments_pb2.GetExperimentRequest, timeout: float
    ) -> experiments_pb2.GetExperimentResponse:
        # A read: not recorded in `calls`, which lists the writes.
        self._maybe_fail()
        if request.key not in self.experiments:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"key: no experiment {request.key!r}")
        return experiments_pb2.GetExperimentResponse(experiment=self.experiments[request.key])

    async def UpdateExperiment(
        self, request: experiments_pb2.UpdateExperimentRequest, timeout: float
    ) -> experiments_pb2.UpdateExperimentResponse:
        self.calls.append(f"update {request.experiment.key}")
        self._maybe_fail()
        hook, self.before_update = self.before_update, None
        if hook is not None:
            await hook()
        key = request.experiment.key
        if key not in self.experiments:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"key: no experiment {key!r}")
        self.experiments[key] = request.experiment
        return experiments_pb2.UpdateExperimentResponse(experiment=request.experiment)


class FakeSegments:
    """SegmentService's GetSegment, over a set of segment keys."""

    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)
        self.fail_next: grpc.StatusCode | None = None

    def stub(self) -> SegmentServiceAsyncStub:
        """This fake, typed as the stub the decision service is given."""
        return cast("SegmentServiceAsyncStub", self)

    async def GetSegment(
        self, request: segments_pb2.GetSegmentRequest, timeout: float
    ) -> segments_pb2.GetSegmentResponse:
        code, self.fail_next = self.fail_next, None
        if code is not None:
            raise rpc_error(code, "injected")
        if request.key not in self.keys:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"key: no segment {request.key!r}")
        return segments_pb2.GetSegmentResponse(segment=segments_pb2.Segment(key=request.key))


class FakeProfiles:
    """ProfileService's Identify: one profile per first identity value."""

    def __init__(
        self, conversion_probability: float = 0.0, traits: dict[str, Any] | None = None
    ) -> None:
        self.conversion_probability = conversion_probability
        self.traits = traits or {}
        self.timeouts: list[float] = []
        self.fail_next: grpc.StatusCode | None = None
        self.clock = FakeClock()
        self.takes_s = 0.0
        """How far `clock` moves during each call: a slow peer, without waiting."""

    def stub(self) -> ProfileServiceAsyncStub:
        """This fake, typed as the stub the decision service is given."""
        return cast("ProfileServiceAsyncStub", self)

    async def Identify(
        self, request: profiles_pb2.IdentifyRequest, timeout: float
    ) -> profiles_pb2.IdentifyResponse:
        self.timeouts.append(timeout)
        self.clock.now += self.takes_s
        code, self.fail_next = self.fail_next, None
        if code is not None:
            raise rpc_error(code, "injected")
        profile = profiles_pb2.Profile(profile_id=f"p-{request.identities[0].value}")
        profile.features.conversion_probability = self.conversion_probability
        profile.traits.update(self.traits)
        return profiles_pb2.IdentifyResponse(profile=profile)


class FakeClock:
    """A monotonic clock that moves only when told: budgets without waiting."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeEvaluator:
    """Fixed segments and variants, recording what Decide asked (the Evaluator protocol).

    `missing` names segments and experiments it lacks (a replica that has
    not loaded them); `segments_fail` / `assign_fail` make those calls fail
    as the RPC evaluator does when its peer is down.
    """

    def __init__(
        self,
        segment_keys: Sequence[str],
        variants: dict[str, str],
        held_out: Sequence[str] = (),
        missing: Sequence[str] = (),
    ) -> None:
        self.segment_keys = sorted(segment_keys)
        self.variants = variants
        self.held_out = frozenset(held_out)
        self.missing = frozenset(missing)
        self.segments_fail: TesseraError | None = None
        self.assign_fail: TesseraError | None = None
        self.assigned: list[list[str]] = []
        self.sticky: list[dict[str, Kept]] = []
        self.timeouts: list[float] = []

    def missing_segments(self, keys: Collection[str]) -> frozenset[str]:
        return self.missing.intersection(keys)

    def missing_experiments(self, keys: Collection[str]) -> frozenset[str]:
        return self.missing.intersection(keys)

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def segments(
        self,
        profile: profiles_pb2.Profile,
        channel: common_pb2.Channel.ValueType,
        context: struct_pb2.Struct,
        timeout: float,
    ) -> list[str]:
        self.timeouts.append(timeout)
        if self.segments_fail is not None:
            raise self.segments_fail
        return list(self.segment_keys)

    async def assign(
        self,
        profile_id: str,
        segment_keys: Sequence[str],
        channel: common_pb2.Channel.ValueType,
        experiment_keys: Sequence[str],
        timeout: float,
        sticky: Mapping[str, Kept] = NO_STICKY,
    ) -> Assignments:
        self.timeouts.append(timeout)
        self.assigned.append(list(experiment_keys))
        if self.assign_fail is not None:
            raise self.assign_fail
        self.sticky.append(dict(sticky))
        return Assignments(
            {k: v for k, v in self.variants.items() if k in experiment_keys},
            frozenset(k for k in self.held_out if k in experiment_keys),
        )


def run_with_catalog(
    tmp_path: Path,
    scenario: Callable[[Catalog[decision_pb2.Campaign]], Coroutine[Any, Any, T]],
    before_open: Callable[[Catalog[decision_pb2.Campaign]], None] | None = None,
) -> T:
    """Run `scenario` against a campaign catalog on SQLite in `tmp_path`, then close it.

    `before_open` registers what must be in place when the catalog opens,
    such as the campaign cache Decide reads.
    """

    async def go() -> T:
        database = db.Database(f"sqlite:///{tmp_path / 'decision.db'}")
        catalog = Catalog(database, "decision", "campaign", decision_pb2.Campaign)
        if before_open is not None:
            before_open(catalog)
        await database.run(migrations.upgrade, database.engine, "decision")
        await catalog.open()
        try:
            return await scenario(catalog)
        finally:
            await catalog.close()
            database.dispose()

    return asyncio.run(go())


def campaign(key: str = "juicers", **fields: Any) -> decision_pb2.Campaign:
    """A campaign as an admin would send it: one treatment, no control named; `fields` replace."""
    defaults: dict[str, Any] = {
        "key": key,
        "name": f"Campaign {key}",
        "goal": common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        "placements": ["home"],
        "variants": [decision_pb2.CampaignVariant(key="treatment", weight=1.0)],
    }
    return decision_pb2.Campaign(**{**defaults, **fields})
