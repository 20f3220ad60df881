"""DecisionService over gRPC: campaigns CRUD and the Decide fan-out."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import grpc

from tessera.catalog import Catalog
from tessera.clients import peer_error
from tessera.convert import as_written, check_channel
from tessera.decision.domain.campaigns import (
    candidates,
    choose,
    experiment_key_for,
    validate_campaign,
    with_control,
)
from tessera.decision.transport.convert import campaign_from_proto
from tessera.decision.transport.evaluation import Evaluator
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
    require,
)
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger("tessera.decision")

EXPERIMENT_STATUS = {
    decision_pb2.CAMPAIGN_STATUS_UNSPECIFIED: experiments_pb2.EXPERIMENT_STATUS_DRAFT,
    decision_pb2.CAMPAIGN_STATUS_DRAFT: experiments_pb2.EXPERIMENT_STATUS_DRAFT,
    decision_pb2.CAMPAIGN_STATUS_RUNNING: experiments_pb2.EXPERIMENT_STATUS_RUNNING,
    decision_pb2.CAMPAIGN_STATUS_PAUSED: experiments_pb2.EXPERIMENT_STATUS_PAUSED,
    decision_pb2.CAMPAIGN_STATUS_STOPPED: experiments_pb2.EXPERIMENT_STATUS_STOPPED,
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    """Implements tessera.decision.v1.DecisionService."""

    def __init__(
        self,
        catalog: Catalog[decision_pb2.Campaign],
        evaluator: Evaluator,
        profiles: profiles_pb2_grpc.ProfileServiceStub,
        segments: segments_pb2_grpc.SegmentServiceStub,
        experiments: experiments_pb2_grpc.ExperimentServiceStub,
        deadline_s: float,
    ) -> None:
        self.catalog = catalog
        self.cache = catalog.cache(campaign_from_proto)
        self.evaluator = evaluator
        self.profiles = profiles
        self.segments = segments
        self.experiments = experiments
        self.deadline_s = deadline_s

    def _timeout(self, context: Context) -> float:
        remaining = context.time_remaining()
        return min(self.deadline_s, remaining) if remaining is not None else self.deadline_s

    # Decide

    async def Decide(
        self, request: decision_pb2.DecideRequest, context: Context
    ) -> decision_pb2.DecideResponse:
        require(bool(request.identities), "identities", "at least one identity is required")
        require(bool(request.placements), "placements", "name at least one placement")
        for index, placement in enumerate(request.placements):
            require(bool(placement), f"placements[{index}]", "must not be empty")
        channel = check_channel(request.channel, "channel")
        timeout = self._timeout(context)
        try:
            identified = await self.profiles.Identify(
                profiles_pb2.IdentifyRequest(identities=request.identities, channel=channel),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "profiles") from error
        profile = identified.profile
        segment_keys = await self.evaluator.segments(profile, channel, request.context, timeout)
        in_segments = frozenset(segment_keys)
        now = _now()
        ranked = candidates(
            list(self.cache.items.values()), request.placements, channel, in_segments, now
        )
        variants: dict[str, str] = {}
        if ranked:
            variants = await self.evaluator.assign(
                profile.profile_id,
                segment_keys,
                channel,
                [c.experiment_key for c in ranked],
                timeout,
            )
        choices = choose(request.placements, ranked, variants, channel, in_segments)
        decisions = []
        for choice in choices:
            decision = decision_pb2.Decision(placement=choice.placement, reasons=choice.reasons)
            if choice.campaign is not None:
                variant = choice.campaign.variant(choice.variant_key)
                decision.campaign_key = choice.campaign.key
                decision.experiment_key = choice.campaign.experiment_key
                decision.variant_key = choice.variant_key
                decision.is_control = choice.is_control
                if variant is not None and variant.payload:
                    decision.payload.update(dict(variant.payload))
            decisions.append(decision)
        return decision_pb2.DecideResponse(
            profile_id=profile.profile_id,
            decisions=decisions,
            segment_keys=segment_keys,
            conversion_probability=profile.features.conversion_probability,
        )

    # Campaigns

    async def _normalise(self, campaign: decision_pb2.Campaign) -> decision_pb2.Campaign:
        """The campaign as stored: control variant, experiment key, default status."""
        message = as_written(campaign)
        if message.status == decision_pb2.CAMPAIGN_STATUS_UNSPECIFIED:
            message.status = decision_pb2.CAMPAIGN_STATUS_DRAFT
        if not message.variants:
            raise InvalidArgument(
                "add at least one variant besides the control", field="campaign.variants"
            )
        domain = campaign_from_proto(message)
        variants, control_key = with_control(domain.variants, message.control_variant_key)
        if len(variants) > len(domain.variants):
            message.variants.add(key=control_key, weight=variants[-1].weight)
        message.control_variant_key = control_key
        message.experiment_key = experiment_key_for(message.key)
        # Stored but not yet enforced would mislead: refuse until they are built.
        if message.frequency_cap.max_decisions:
            raise Unimplemented(
                "frequency caps are not enforced yet", field="campaign.frequency_cap"
            )
        if message.pressure_cost:
            raise Unimplemented(
                "pressure budgets are not enforced yet", field="campaign.pressure_cost"
            )
        validate_campaign(campaign_from_proto(message))
        await self._check_segments(message)
        return message

    async def _check_segments(self, message: decision_pb2.Campaign) -> None:
        for index, key in enumerate(message.audience_segment_keys):
            try:
                await self.segments.GetSegment(segments_pb2.GetSegmentRequest(key=key), timeout=5)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    raise InvalidArgument(
                        f"no segment {key!r}", field=f"campaign.audience_segment_keys[{index}]"
                    ) from error
                raise peer_error(error, "segments") from error

    def _experiment(self, message: decision_pb2.Campaign) -> experiments_pb2.Experiment:
        return experiments_pb2.Experiment(
            key=message.experiment_key,
            name=f"Campaign {message.name or message.key}",
            description=f"Splits the audience of campaign {message.key!r}; created with it.",
            variants=[
                experiments_pb2.Variant(key=v.key, weight=v.weight, payload=v.payload)
                for v in message.variants
            ],
            control_variant_key=message.control_variant_key,
            traffic_fraction=1.0,
            audience_segment_keys=message.audience_segment_keys,
            status=EXPERIMENT_STATUS[message.status],
            goal=message.goal,
            start_time=message.schedule.start_time,
            end_time=message.schedule.end_time,
        )

    async def CreateCampaign(
        self, request: decision_pb2.CreateCampaignRequest, context: Context
    ) -> decision_pb2.CreateCampaignResponse:
        message = await self._normalise(request.campaign)
        try:
            await self.catalog.get(message.key)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"campaign {message.key!r} exists already", field="campaign.key")
        try:
            await self.experiments.CreateExperiment(
                experiments_pb2.CreateExperimentRequest(experiment=self._experiment(message)),
                timeout=5,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise peer_error(error, "experiments") from error
            # The campaign's experiment key is reserved for it: the experiment is
            # left from an earlier try of this call, or from a deleted campaign
            # of the same key. Bring it in line rather than fail every retry.
            await self._sync_experiment(message)
        return decision_pb2.CreateCampaignResponse(campaign=await self.catalog.create(message))

    async def GetCampaign(
        self, request: decision_pb2.GetCampaignRequest, context: Context
    ) -> decision_pb2.GetCampaignResponse:
        return decision_pb2.GetCampaignResponse(campaign=await self.catalog.get(request.key))

    async def ListCampaigns(
        self, request: decision_pb2.ListCampaignsRequest, context: Context
    ) -> decision_pb2.ListCampaignsResponse:
        campaigns, token = await self.catalog.page(request.page_size, request.page_token)
        return decision_pb2.ListCampaignsResponse(campaigns=campaigns, next_page_token=token)

    async def _sync_experiment(self, message: decision_pb2.Campaign) -> None:
        try:
            await self.experiments.UpdateExperiment(
                experiments_pb2.UpdateExperimentRequest(experiment=self._experiment(message)),
                timeout=5,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "experiments") from error

    async def _settle_experiment(self, key: str) -> None:
        """Bring the experiment in line with the stored campaign, whoever wrote last.

        Syncs from what is stored, not from this call's request, and again if
        another update landed meanwhile, so concurrent updates cannot leave
        one campaign with another's weights.
        """
        for _ in range(5):
            stored = await self.catalog.get(key)
            await self._sync_experiment(stored)
            if (await self.catalog.get(key)).version == stored.version:
                return
        log.warning("campaign kept changing while its experiment was synced", extra={"key": key})

    async def UpdateCampaign(
        self, request: decision_pb2.UpdateCampaignRequest, context: Context
    ) -> decision_pb2.UpdateCampaignResponse:
        message = await self._normalise(request.campaign)
        try:
            stored = await self.catalog.update(message, request.expected_version)
        except FailedPrecondition:
            # The retry of an update that was stored but whose experiment sync
            # failed: same content, one version on. Finish it instead of refusing.
            stored = await self.catalog.get(message.key)
            retry = request.expected_version and stored.version == request.expected_version + 1
            if not (retry and as_written(stored) == message):
                raise
        await self._settle_experiment(message.key)
        return decision_pb2.UpdateCampaignResponse(campaign=stored)

    async def DeleteCampaign(
        self, request: decision_pb2.DeleteCampaignRequest, context: Context
    ) -> decision_pb2.DeleteCampaignResponse:
        current = await self.catalog.get(request.key)
        current.status = decision_pb2.CAMPAIGN_STATUS_STOPPED
        await self._sync_experiment(current)
        await self.catalog.delete(request.key)
        return decision_pb2.DeleteCampaignResponse()
