"""Wiring of the experiment service: settings, stores, servicer."""

from __future__ import annotations

import grpc

from tessera import db, migrations
from tessera.catalog import Catalog
from tessera.experiments.transport.servicer import ExperimentServicer
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc
from tessera.settings import RuntimeSettings

NAME = "experiments"


class ExperimentsSettings(RuntimeSettings):
    """Settings of the experiment service (TESSERA_* variables)."""


class ExperimentsService:
    """The experiment service as the runtime starts it."""

    name = NAME
    full_names = [experiments_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name]

    def __init__(self, settings: ExperimentsSettings | None = None) -> None:
        self.settings = settings or ExperimentsSettings()
        self.database = db.open_database(self.settings, NAME)
        self.catalog = Catalog(self.database, NAME, "experiment", experiments_pb2.Experiment)
        self.servicer = ExperimentServicer(self.catalog)

    def add_to(self, server: grpc.aio.Server) -> None:
        experiments_pb2_grpc.add_ExperimentServiceServicer_to_server(self.servicer, server)

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
        self.database.dispose()
