"""Wiring of the profile service: settings, stores, servicer."""

from __future__ import annotations

import datetime as dt

import grpc
from pydantic import Field

from tessera import db
from tessera.hot import open_hot_store
from tessera.profiles.feed import Feed
from tessera.profiles.storage import sql
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore
from tessera.profiles.transport.servicer import ProfileServicer
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.settings import RuntimeSettings

NAME = "profiles"


class ProfilesSettings(RuntimeSettings):
    """Settings of the profile service (TESSERA_* variables)."""

    event_retention_days: float = Field(
        400.0, gt=0, description="Days the event log and change feed keep a record."
    )
    event_purge_interval_s: float = Field(
        3600.0, gt=0, description="How often records past the retention are purged."
    )
    feed_poll_s: float = Field(
        0.05,
        gt=0,
        description="How often the sequencer runs without a local write, and feed streams poll.",
    )
    max_export_page_size: int = Field(1000, gt=0, description="Events in one ExportProfile page.")


class ProfilesService:
    """The profile service as the runtime starts it."""

    name = NAME
    full_names = [profiles_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name]

    def __init__(self, settings: ProfilesSettings | None = None) -> None:
        self.settings = settings or ProfilesSettings()
        self.database = db.open_database(self.settings, NAME)
        self.hot = open_hot_store(self.settings, NAME)
        self.store = ProfileStore(self.database)
        self.feed = Feed(
            self.database,
            poll_s=self.settings.feed_poll_s,
            retention=dt.timedelta(days=self.settings.event_retention_days),
            purge_every_s=self.settings.event_purge_interval_s,
        )
        self.servicer = ProfileServicer(
            self.store,
            SessionStore(self.hot),
            self.feed,
            max_export_page_size=self.settings.max_export_page_size,
        )

    def add_to(self, server: grpc.aio.Server) -> None:
        profiles_pb2_grpc.add_ProfileServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self.database.run(sql.migrate, self.database.engine)
        await self.feed.start()

    async def drain(self) -> None:
        """End the change feed's streams: followers reconnect to another replica."""
        self.feed.drain()

    async def check(self) -> None:
        """Health: its database, and its hot store, answer."""
        await self.database.ping()
        await self.hot.ping()

    async def stop(self) -> None:
        await self.feed.stop()
        await self.hot.close()
        self.database.dispose()
