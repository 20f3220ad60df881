"""Wiring of the profile service: settings, stores, servicer."""

from __future__ import annotations

import grpc

from tessera import db
from tessera.hot import open_hot_store
from tessera.profiles.storage import sql
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore
from tessera.profiles.transport.servicer import ProfileServicer
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.settings import RuntimeSettings

NAME = "profiles"


class ProfilesSettings(RuntimeSettings):
    """Settings of the profile service (TESSERA_* variables)."""


class ProfilesService:
    """The profile service as the runtime starts it."""

    name = NAME
    full_names = [profiles_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name]

    def __init__(self, settings: ProfilesSettings | None = None) -> None:
        self.settings = settings or ProfilesSettings()
        self.database = db.open_database(self.settings, NAME)
        self.hot = open_hot_store(self.settings, NAME)
        self.store = ProfileStore(self.database)
        self.servicer = ProfileServicer(self.store, SessionStore(self.hot))

    def add_to(self, server: grpc.aio.Server) -> None:
        profiles_pb2_grpc.add_ProfileServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self.database.run(sql.migrate, self.database.engine)

    async def drain(self) -> None:
        """No long-lived streams yet."""

    async def check(self) -> None:
        """Health: its database, and its hot store, answer."""
        await self.database.ping()
        await self.hot.ping()

    async def stop(self) -> None:
        await self.hot.close()
        self.database.dispose()
