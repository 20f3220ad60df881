"""DecisionService over gRPC: convert the request, call the application, convert back."""

from __future__ import annotations

from typing import Any

import grpc

from tessera.decision.application.campaigns import Campaigns
from tessera.decision.application.decide import Decider
from tessera.decision.application.roadmap import RoadmapCheck
from tessera.decision.transport.convert import decide_query_from_proto, decide_response_to_proto
from tessera.decision.transport.roadmap import collision_to_proto, roadmap_query, roadmap_to_proto
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    """Implements tessera.decision.v1.DecisionService."""

    def __init__(self, decider: Decider, campaigns: Campaigns, roadmap: RoadmapCheck) -> None:
        self.decider = decider
        self.campaigns = campaigns
        self.roadmap = roadmap

    async def Decide(
        self, request: decision_pb2.DecideRequest, context: Context
    ) -> decision_pb2.DecideResponse:
        query = decide_query_from_proto(request)
        decisions = await self.decider.decide(query, context.time_remaining())
        return decide_response_to_proto(decisions)

    async def CreateCampaign(
        self, request: decision_pb2.CreateCampaignRequest, context: Context
    ) -> decision_pb2.CreateCampaignResponse:
        campaign = await self.campaigns.create(request.campaign)
        collisions = await self.roadmap.collisions(campaign, context.time_remaining())
        return decision_pb2.CreateCampaignResponse(
            campaign=campaign, collisions=[collision_to_proto(c) for c in collisions]
        )

    async def GetCampaign(
        self, request: decision_pb2.GetCampaignRequest, context: Context
    ) -> decision_pb2.GetCampaignResponse:
        return decision_pb2.GetCampaignResponse(campaign=await self.campaigns.get(request.key))

    async def ListCampaigns(
        self, request: decision_pb2.ListCampaignsRequest, context: Context
    ) -> decision_pb2.ListCampaignsResponse:
        campaigns, token = await self.campaigns.page(request.page_size, request.page_token)
        return decision_pb2.ListCampaignsResponse(campaigns=campaigns, next_page_token=token)

    async def UpdateCampaign(
        self, request: decision_pb2.UpdateCampaignRequest, context: Context
    ) -> decision_pb2.UpdateCampaignResponse:
        campaign = await self.campaigns.update(request.campaign, request.expected_version)
        collisions = await self.roadmap.collisions(campaign, context.time_remaining())
        return decision_pb2.UpdateCampaignResponse(
            campaign=campaign, collisions=[collision_to_proto(c) for c in collisions]
        )

    async def DeleteCampaign(
        self, request: decision_pb2.DeleteCampaignRequest, context: Context
    ) -> decision_pb2.DeleteCampaignResponse:
        await self.campaigns.delete(request.key)
        return decision_pb2.DeleteCampaignResponse()

    async def GetRoadmap(
        self, request: decision_pb2.GetRoadmapRequest, context: Context
    ) -> decision_pb2.GetRoadmapResponse:
        placements, start, end = roadmap_query(request)
        roadmap = await self.roadmap.roadmap(
            placements,
            start,
            end,
            context.time_remaining(),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return roadmap_to_proto(roadmap)
