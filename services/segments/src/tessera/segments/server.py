"""Wiring of the segment service: settings, stores, servicer."""

from __future__ import annotations

import grpc
from pydantic import Field

from tessera import db, migrations
from tessera.catalog import Catalog
from tessera.clients import observed, patient, peer_channel
from tessera.decision.v1 import decision_pb2_grpc
from tessera.experiments.v1 import experiments_pb2_grpc
from tessera.feed import Cursors
from tessera.profiles.v1 import profiles_pb2_grpc
from tessera.segments.domain.estimate import InterestRules
from tessera.segments.references import References
from tessera.segments.sizing import ProjectionKeeper
from tessera.segments.transport.servicer import SegmentServicer
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc
from tessera.settings import RuntimeSettings

NAME = "segments"


class SegmentsSettings(RuntimeSettings):
    """Settings of the segment service (TESSERA_* variables)."""

    peer_deadline_s: float = 1.0
    reference_check_deadline_s: float = Field(
        5.0,
        gt=0,
        description="Deadline of each call DeleteSegment makes to the decision and experiment "
        "services to find campaigns and experiments that still use the segment.",
    )
    projection: bool = Field(
        True,
        description="Keep the projection of profiles from the change feed (EstimateSize); "
        "off: EstimateSize answers FAILED_PRECONDITION.",
    )
    projection_snapshot_s: float = Field(
        300.0, gt=0, description="Seconds between stores of the projection's snapshot."
    )
    projection_erasure_snapshot_s: float = Field(
        1.0,
        ge=0,
        description="Seconds after an erasure before the projection is stored without the person.",
    )
    # The profile service's settings of the same names: interest as sizing reads it.
    interest_half_life_days: float = Field(
        30.0, gt=0, description="As the profile service's: half-life of category interest."
    )
    interest_suppress_days: float = Field(
        30.0, ge=0, description="As the profile service's: days a bought category is not pushed."
    )


class SegmentsService:
    """The segment service as the runtime starts it."""

    name = NAME
    full_names = [segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name]

    def __init__(self, settings: SegmentsSettings | None = None) -> None:
        self.settings = settings or SegmentsSettings()
        self.database = db.open_database(self.settings, NAME)
        self.catalog = Catalog(self.database, NAME, "segment", segments_pb2.Segment)
        self.channel = peer_channel(self.settings.address_of("profiles"))
        # DeleteSegment asks these who still uses a segment (segments.references).
        self.decision_channel = peer_channel(self.settings.address_of("decision"))
        self.experiments_channel = peer_channel(self.settings.address_of("experiments"))
        self.cursors = Cursors(self.database, NAME)
        self.sizing = (
            ProjectionKeeper(
                self.database,
                self.cursors,
                self.channel,
                snapshot_s=self.settings.projection_snapshot_s,
                erasure_snapshot_s=self.settings.projection_erasure_snapshot_s,
                interests=InterestRules(
                    self.settings.interest_half_life_days, self.settings.interest_suppress_days
                ),
            )
            if self.settings.projection
            else None
        )
        self.servicer = SegmentServicer(
            self.catalog,
            observed(profiles_pb2_grpc.ProfileServiceStub(self.channel)),
            self.settings.peer_deadline_s,
            self.sizing,
            References(
                patient(observed(decision_pb2_grpc.DecisionServiceStub(self.decision_channel))),
                patient(
                    observed(experiments_pb2_grpc.ExperimentServiceStub(self.experiments_channel))
                ),
                self.settings.reference_check_deadline_s,
            ),
        )

    def add_to(self, server: grpc.aio.Server) -> None:
        segments_pb2_grpc.add_SegmentServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await migrations.prepare(self.database, NAME, self.settings)
        await self.catalog.open()
        if self.sizing is not None:
            self.sizing.start()

    async def drain(self) -> None:
        await self.catalog.close()
        if self.sizing is not None:
            await self.sizing.stop()

    async def check(self) -> None:
        """Health: its database answers."""
        await self.database.ping()

    async def stop(self) -> None:
        await self.catalog.close()
        if self.sizing is not None:
            await self.sizing.stop()
        await self.channel.close()
        await self.decision_channel.close()
        await self.experiments_channel.close()
        self.database.dispose()
