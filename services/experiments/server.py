"""Wiring of the experiment service: settings, stores, servicer."""

from __future__ import annotations

import grpc

from tessera import db
from tessera.definitions import DefinitionCache, DefinitionFeed, DefinitionStore
from tessera.experiments.transport.servicer import ExperimentServicer, load_experiment
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
        self.store = DefinitionStore(self.database, NAME, "experiment")
        self.feed = DefinitionFeed(self.store)
        self.cache = DefinitionCache(self.feed, load_experiment)
        self.servicer = ExperimentServicer(self.store, self.feed, self.cache)

    def add_to(self, server: grpc.aio.Server) -> None:
        experiments_pb2_grpc.add_ExperimentServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self.database.run(db.migrate, self.database.engine, NAME, self.store.tables)
        await self.database.run(self.store.prepare)
        await self.feed.start()
        self.cache.start()

    async def drain(self) -> None:
        await self.feed.stop()

    async def stop(self) -> None:
        await self.feed.stop()
        self.database.dispose()
