"""Wiring of the segment service: settings, stores, servicer."""

from __future__ import annotations

import grpc

from tessera import db, migrations
from tessera.catalog import Catalog
from tessera.clients import observed, peer_channel
from tessera.profiles.v1 import profiles_pb2_grpc
from tessera.segments.transport.servicer import SegmentServicer
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc
from tessera.settings import RuntimeSettings

NAME = "segments"


class SegmentsSettings(RuntimeSettings):
    """Settings of the segment service (TESSERA_* variables)."""

    peer_deadline_s: float = 1.0


class SegmentsService:
    """The segment service as the runtime starts it."""

    name = NAME
    full_names = [segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name]

    def __init__(self, settings: SegmentsSettings | None = None) -> None:
        self.settings = settings or SegmentsSettings()
        self.database = db.open_database(self.settings, NAME)
        self.catalog = Catalog(self.database, NAME, "segment", segments_pb2.Segment)
        self.channel = peer_channel(self.settings.address_of("profiles"))
        self.servicer = SegmentServicer(
            self.catalog,
            observed(profiles_pb2_grpc.ProfileServiceStub(self.channel)),
            self.settings.peer_deadline_s,
        )

    def add_to(self, server: grpc.aio.Server) -> None:
        segments_pb2_grpc.add_SegmentServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await migrations.prepare(self.database, NAME, self.settings)
        await self.catalog.open()

    async def drain(self) -> None:
        await self.catalog.close()

    async def check(self) -> None:
        """Health: its database answers."""
        await self.database.ping()

    async def stop(self) -> None:
        await self.catalog.close()
        await self.channel.close()
        self.database.dispose()
