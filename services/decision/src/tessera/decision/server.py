"""Wiring of the decision service: settings, stores, peers, application, servicer."""

from __future__ import annotations

from typing import Literal

import grpc
from pydantic import Field

from tessera import db, migrations
from tessera.catalog import Catalog
from tessera.clients import observed, patient, peer_channel
from tessera.decision.application.campaigns import Campaigns
from tessera.decision.application.decide import Decider
from tessera.decision.application.exposures import EmitterSettings, ExposureEmitter
from tessera.decision.application.merges import MergeFollower
from tessera.decision.application.pressure import PressureGate
from tessera.decision.application.roadmap import RoadmapCheck, RoadmapSettings
from tessera.decision.domain.pressure import PressureRules
from tessera.decision.storage.counters import (
    CounterStore,
    MemoryCounterStore,
    RedisCounterStore,
)
from tessera.decision.transport.convert import campaign_from_proto
from tessera.decision.transport.evaluation import Evaluator, InProcessEvaluator, RpcEvaluator
from tessera.decision.transport.identify_streams import IdentifyStreams
from tessera.decision.transport.servicer import DecisionServicer
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.experiments.v1 import experiments_pb2_grpc
from tessera.feed import Cursors, profile_events
from tessera.profiles.v1 import profiles_pb2_grpc
from tessera.segments.v1 import segments_pb2_grpc
from tessera.settings import RuntimeSettings

NAME = "decision"


class DecisionSettings(RuntimeSettings):
    """Settings of the decision service (TESSERA_* variables)."""

    evaluation: Literal["in_process", "rpc"] = "in_process"
    """TESSERA_EVALUATION: evaluate segments and assignments here or over RPC."""
    decide_deadline_s: float = Field(
        0.5,
        gt=0,
        description="TESSERA_DECIDE_DEADLINE_S: the most a Decide spends on its internal calls "
        "together; a nearer caller deadline bounds them instead. Past it, Decide fails open.",
    )
    decide_start_wait_s: float = Field(
        3.0,
        ge=0,
        description="TESSERA_DECIDE_START_WAIT_S: how long a starting replica waits for the "
        "segment and experiment definitions before serving with what it has (in_process).",
    )
    exposure_queue_size: int = Field(
        10_000, gt=0, description="Exposures held in memory at most; more are dropped, counted."
    )
    exposure_batch_size: int = Field(
        500, gt=0, le=1000, description="Exposures per RecordExposures call."
    )
    exposure_linger_s: float = Field(
        0.2, ge=0, description="How long a batch waits to fill before it is sent."
    )
    exposure_timeout_s: float = Field(2.0, gt=0, description="Deadline of one RecordExposures.")
    exposure_retry_max_s: float = Field(
        5.0, gt=0, description="Longest wait between retries of a failed batch."
    )
    exposure_flush_timeout_s: float = Field(
        5.0, ge=0, description="Time the queue gets to be sent when the service stops."
    )
    roadmap_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Time the roadmap check of one campaign write may spend sizing overlaps.",
    )
    roadmap_concurrency: int = Field(
        8, gt=0, le=64, description="EstimateSize calls of one roadmap check in flight at once."
    )
    profile_streams: int = Field(
        2,
        ge=0,
        le=64,
        description="TESSERA_PROFILE_STREAMS: long-lived IdentifyStream calls a replica resolves "
        "visitors over, in turn; 0 uses a unary Identify per Decide.",
    )
    pressure_budget: int = Field(
        10,
        ge=0,
        description="Pressure a person may take per period over all channels; 0 for no budget.",
    )
    pressure_period_s: int = Field(
        86_400, gt=0, le=366 * 86_400, description="Length of a pressure budget's window."
    )
    conflict_hold_s: int = Field(
        86_400,
        ge=1,
        le=366 * 86_400,
        description="How long the first campaign of a conflict group shown keeps the group.",
    )
    decide_retry_window_s: int = Field(
        600,
        ge=1,
        le=86_400,
        description="How long a Decide's request_id is remembered: a retry charges nothing more.",
    )


class DecisionService:
    """The decision service as the runtime starts it."""

    name = NAME
    full_names = [decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name]

    def __init__(self, settings: DecisionSettings | None = None) -> None:
        self.settings = settings or DecisionSettings()
        self.database = db.open_database(self.settings, NAME)
        self.catalog = Catalog(self.database, NAME, "campaign", decision_pb2.Campaign)
        self.channels = {
            peer: peer_channel(self.settings.address_of(peer))
            for peer in ("profiles", "segments", "experiments")
        }
        # Every unary call to a peer is timed: fan-out latency per dependency.
        segments = observed(segments_pb2_grpc.SegmentServiceStub(self.channels["segments"]))
        experiments = observed(
            experiments_pb2_grpc.ExperimentServiceStub(self.channels["experiments"])
        )
        self.evaluator: Evaluator = (
            InProcessEvaluator(segments, experiments, self.settings.decide_start_wait_s)
            if self.settings.evaluation == "in_process"
            else RpcEvaluator(segments, experiments)
        )
        self.exposures = ExposureEmitter(
            experiments,
            EmitterSettings(
                queue_size=self.settings.exposure_queue_size,
                batch_size=self.settings.exposure_batch_size,
                linger_s=self.settings.exposure_linger_s,
                timeout_s=self.settings.exposure_timeout_s,
                retry_max_s=self.settings.exposure_retry_max_s,
            ),
        )
        self.counters: CounterStore = (
            RedisCounterStore(
                self.settings.redis_url, f"{self.settings.key_prefix}{NAME}:pressure:"
            )
            if self.settings.redis_url
            else MemoryCounterStore()
        )
        # Merges made outside Decide and erasures reach the counters by the feed.
        self.merges = MergeFollower(
            self.counters,
            Cursors(self.database, NAME),
            profile_events(self.channels["profiles"], events=False),
        )
        # Registered before the catalog opens, so it is filled with the snapshot.
        campaigns = self.catalog.cache(campaign_from_proto)
        # Visitors are resolved over a few long-lived streams (docs/decide.md,
        # "Speed"); the unary call stays for streams=0, backoff and older peers.
        profiles = profiles_pb2_grpc.ProfileServiceStub(self.channels["profiles"])
        self.identify_streams = IdentifyStreams(
            profiles.IdentifyStream,
            observed(profiles).Identify,
            self.settings.profile_streams,
        )
        self.decider = Decider(
            campaigns,
            self.evaluator,
            self.identify_streams,
            self.settings.decide_deadline_s,
            exposures=self.exposures,
            global_holdout=self.settings.global_holdout_fraction,
            pressure=PressureGate(
                self.counters,
                PressureRules(
                    budget=self.settings.pressure_budget,
                    period_s=self.settings.pressure_period_s,
                    hold_s=self.settings.conflict_hold_s,
                    retry_window_s=self.settings.decide_retry_window_s,
                ),
            ),
        )
        self.campaigns = Campaigns(self.catalog, patient(segments), patient(experiments))
        self.roadmap = RoadmapCheck(
            self.catalog,
            segments,
            RoadmapSettings(
                timeout_s=self.settings.roadmap_timeout_s,
                concurrency=self.settings.roadmap_concurrency,
            ),
        )
        self.servicer = DecisionServicer(self.decider, self.campaigns, self.roadmap)

    def add_to(self, server: grpc.aio.Server) -> None:
        decision_pb2_grpc.add_DecisionServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await migrations.prepare(self.database, NAME, self.settings)
        await self.catalog.open()
        await self.evaluator.start()
        self.exposures.start()
        self.merges.start()

    async def drain(self) -> None:
        """Decide calls are short; nothing to end early."""

    async def check(self) -> None:
        """Health: its database answers.

        Not the counter store: without it Decide still answers, leaving out
        the campaigns whose cap, budget or group it cannot check
        (docs/decide.md); NOT_SERVING on every replica at once would turn
        that into an outage.
        """
        await self.database.ping()

    async def stop(self) -> None:
        # The server has stopped: no Decide adds to the queue any more.
        await self.exposures.close(self.settings.exposure_flush_timeout_s)
        await self.merges.stop()
        await self.identify_streams.close()
        await self.evaluator.stop()
        await self.catalog.close()
        await self.counters.close()
        for channel in self.channels.values():
            await channel.close()
        self.database.dispose()
