"""ExperimentService over gRPC: definitions, watch, assignment, exposures and results."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tessera import metrics
from tessera.catalog import Catalog
from tessera.convert import as_written, check_channel, dict_to_struct
from tessera.definitions import DefinitionCache
from tessera.errors import InvalidArgument
from tessera.experiments.application import exposures
from tessera.experiments.application.results import ResultsReader
from tessera.experiments.domain import ExperimentDef, assign_all, validate_experiment
from tessera.experiments.storage import ExposureStore
from tessera.experiments.transport.convert import (
    REASON_TO_PROTO,
    experiment_from_proto,
    exposure_from_proto,
)
from tessera.experiments.transport.results import results_to_proto
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def normalised(experiment: experiments_pb2.Experiment) -> experiments_pb2.Experiment:
    """The experiment as stored: service-owned fields cleared, status defaulted, validated."""
    message = as_written(experiment)
    if message.status == experiments_pb2.EXPERIMENT_STATUS_UNSPECIFIED:
        message.status = experiments_pb2.EXPERIMENT_STATUS_DRAFT
    if not message.HasField("goal"):
        raise InvalidArgument(
            "is required: every experiment serves a goal", field="experiment.goal"
        )
    validate_experiment(experiment_from_proto(message))
    return message


class ExperimentServicer(experiments_pb2_grpc.ExperimentServiceServicer):
    """Implements tessera.experiments.v1.ExperimentService."""

    def __init__(
        self,
        catalog: Catalog[experiments_pb2.Experiment],
        cache: DefinitionCache[ExperimentDef],
        store: ExposureStore,
        results: ResultsReader,
        sync: exposures.StickySync | None = None,
    ) -> None:
        self.catalog = catalog
        self.cache = cache
        self.store = store
        self.results = results
        self.sync = sync

    async def CreateExperiment(
        self, request: experiments_pb2.CreateExperimentRequest, context: Context
    ) -> experiments_pb2.CreateExperimentResponse:
        stored = await self.catalog.create(normalised(request.experiment))
        return experiments_pb2.CreateExperimentResponse(experiment=stored)

    async def GetExperiment(
        self, request: experiments_pb2.GetExperimentRequest, context: Context
    ) -> experiments_pb2.GetExperimentResponse:
        return experiments_pb2.GetExperimentResponse(experiment=await self.catalog.get(request.key))

    async def ListExperiments(
        self, request: experiments_pb2.ListExperimentsRequest, context: Context
    ) -> experiments_pb2.ListExperimentsResponse:
        experiments, token = await self.catalog.page(request.page_size, request.page_token)
        return experiments_pb2.ListExperimentsResponse(
            experiments=experiments, next_page_token=token
        )

    async def UpdateExperiment(
        self, request: experiments_pb2.UpdateExperimentRequest, context: Context
    ) -> experiments_pb2.UpdateExperimentResponse:
        message = normalised(request.experiment)
        stored = await self.catalog.update(message, request.expected_version)
        return experiments_pb2.UpdateExperimentResponse(experiment=stored)

    async def WatchExperiments(
        self, request: experiments_pb2.WatchExperimentsRequest, context: Context
    ) -> AsyncIterator[experiments_pb2.WatchExperimentsResponse]:
        async for change in self.catalog.watch():
            yield experiments_pb2.WatchExperimentsResponse(
                snapshot=change.snapshot,
                experiments=change.upserted,
                deleted_keys=change.deleted_keys,
            )

    async def Assign(
        self, request: experiments_pb2.AssignRequest, context: Context
    ) -> experiments_pb2.AssignResponse:
        check_channel(request.channel, "channel")
        experiments = self.cache.items
        # A key this replica does not know yet (created a moment ago elsewhere)
        # is answered as such, not as an error: Decide must not fail while
        # replicas catch up.
        unknown = sorted({k for k in request.experiment_keys if k not in experiments})
        known = [k for k in request.experiment_keys if k in experiments]
        metrics.count_lookups("experiment", len(known), len(request.experiment_keys) - len(known))
        results = []
        if known or not request.experiment_keys:
            if not request.profile_id:
                raise InvalidArgument("a canonical profile id is required", field="profile_id")
            # The sticky record of this service, so an exposed person keeps
            # their variant over RPC as in process (where the profile's
            # `_variant:` traits carry it).
            sticky = await self.store.database.run(self.store.sticky, request.profile_id)
            results = assign_all(
                experiments.values(),
                request.profile_id,
                request.segment_keys,
                dt.datetime.now(dt.UTC),
                only_keys=known,
                sticky={key: s.variant_key for key, s in sticky.items()},
                sticky_holdout=frozenset(key for key, s in sticky.items() if s.in_holdout),
            )
        assignments = [
            experiments_pb2.Assignment(
                experiment_key=r.experiment_key,
                variant_key=r.variant_key,
                in_holdout=r.in_holdout,
                reason=REASON_TO_PROTO[r.reason],
                payload=dict_to_struct(r.payload),
            )
            for r in results
        ]
        assignments += [
            experiments_pb2.Assignment(
                experiment_key=key, reason=experiments_pb2.ASSIGNMENT_REASON_UNKNOWN_EXPERIMENT
            )
            for key in unknown
        ]
        assignments.sort(key=lambda a: a.experiment_key)
        return experiments_pb2.AssignResponse(assignments=assignments)

    async def RecordExposures(
        self, request: experiments_pb2.RecordExposuresRequest, context: Context
    ) -> experiments_pb2.RecordExposuresResponse:
        received_at = dt.datetime.now(dt.UTC)
        batch = [exposure_from_proto(e, received_at) for e in request.exposures]
        splits = self.results.splits([e.experiment_key for e in batch])
        accepted, duplicates = await exposures.record(self.store, batch, self.sync, splits)
        return experiments_pb2.RecordExposuresResponse(accepted=accepted, duplicates=duplicates)

    async def GetResults(
        self, request: experiments_pb2.GetResultsRequest, context: Context
    ) -> experiments_pb2.GetResultsResponse:
        return results_to_proto(await self.results.read(request.experiment_key))
