"""ExperimentService over gRPC: definitions, watch and assignment."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tessera import metrics
from tessera.catalog import Catalog
from tessera.convert import as_written, check_channel, dict_to_struct
from tessera.errors import InvalidArgument, Unimplemented
from tessera.experiments.domain import assign_all, validate_experiment
from tessera.experiments.transport.convert import REASON_TO_PROTO, experiment_from_proto
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _normalise(experiment: experiments_pb2.Experiment) -> experiments_pb2.Experiment:
    """The experiment as stored: service-owned fields cleared, status defaulted, validated."""
    message = as_written(experiment)
    if message.status == experiments_pb2.EXPERIMENT_STATUS_UNSPECIFIED:
        message.status = experiments_pb2.EXPERIMENT_STATUS_DRAFT
    if not message.HasField("goal"):
        raise InvalidArgument(
            "is required: every experiment serves a goal", field="experiment.goal"
        )
    if message.allocation == experiments_pb2.ALLOCATION_BANDIT:
        raise Unimplemented("bandit allocation is not built yet", field="experiment.allocation")
    validate_experiment(experiment_from_proto(message))
    return message


class ExperimentServicer(experiments_pb2_grpc.ExperimentServiceServicer):
    """Implements tessera.experiments.v1.ExperimentService."""

    def __init__(self, catalog: Catalog[experiments_pb2.Experiment]) -> None:
        self.catalog = catalog
        self.cache = catalog.cache(experiment_from_proto)

    async def CreateExperiment(
        self, request: experiments_pb2.CreateExperimentRequest, context: Context
    ) -> experiments_pb2.CreateExperimentResponse:
        stored = await self.catalog.create(_normalise(request.experiment))
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
        message = _normalise(request.experiment)
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
            results = assign_all(
                experiments.values(),
                request.profile_id,
                request.segment_keys,
                dt.datetime.now(dt.UTC),
                only_keys=known,
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
        raise Unimplemented("RecordExposures is not built yet (exposure logging has its own issue)")

    async def GetResults(
        self, request: experiments_pb2.GetResultsRequest, context: Context
    ) -> experiments_pb2.GetResultsResponse:
        raise Unimplemented(
            "GetResults is not built yet (results and statistics have their own issue)"
        )
