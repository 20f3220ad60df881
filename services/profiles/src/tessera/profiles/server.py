"""Wiring of the profile service: settings, stores, servicer."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import grpc
from pydantic import Field, field_validator

from tessera import db, migrations
from tessera.background import Background
from tessera.hot import open_hot_store
from tessera.profiles import application
from tessera.profiles.application import Scoring
from tessera.profiles.domain import identity
from tessera.profiles.domain.features import InterestRules
from tessera.profiles.feed import Feed
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore
from tessera.profiles.transport.servicer import ProfileServicer
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.settings import RuntimeSettings

NAME = "profiles"

log = logging.getLogger("tessera.profiles")


class ProfilesSettings(RuntimeSettings):
    """Settings of the profile service (TESSERA_* variables)."""

    identity_limits: dict[str, int] = Field(
        default_factory=lambda: dict(identity.DEFAULT_LIMITS),
        description="Identities of a type one profile may hold, as a JSON object; "
        "the whole table (a type not named has no limit).",
    )
    identity_priority: list[str] = Field(
        default_factory=lambda: list(identity.DEFAULT_PRIORITY),
        description="Identity types strongest first, as a JSON list; of two identities "
        "that would break a limit together, the lower one is refused.",
    )

    @field_validator("identity_limits")
    @classmethod
    def _limits_positive(cls, limits: dict[str, int]) -> dict[str, int]:
        bad = sorted(t for t, n in limits.items() if n < 1)
        if bad:
            raise ValueError(f"a limit is at least 1 (got {bad}); leave a type out for no limit")
        return limits

    @field_validator("identity_priority")
    @classmethod
    def _priority_unique(cls, priority: list[str]) -> list[str]:
        if len(set(priority)) != len(priority):
            raise ValueError("names a type twice")
        return priority

    interest_half_life_days: float = Field(
        30.0, gt=0, description="Days after which a purchase counts half in category interest."
    )
    interest_suppress_days: float = Field(
        30.0,
        ge=0,
        description="A category bought within this many days is not pushed (0: never).",
    )

    conversion_goal: str = Field(
        "purchase",
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="Event type the conversion probability predicts; the newest model "
        "trained for it is used (`tessera train conversion --goal`).",
    )
    model_poll_s: float = Field(
        5.0, gt=0, description="Seconds between looks for a newly trained conversion model."
    )

    def interest_rules(self) -> InterestRules:
        """How category interest is computed (docs/interests.md)."""
        return InterestRules(
            half_life_days=self.interest_half_life_days,
            suppress_days=self.interest_suppress_days,
        )

    def identity_rules(self) -> identity.IdentityRules:
        """The identity resolution rules these settings give."""
        return identity.IdentityRules(dict(self.identity_limits), tuple(self.identity_priority))

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
        self.store = ProfileStore(self.database, self.settings.identity_rules())
        self.scoring = Scoring(interests=self.settings.interest_rules())
        self.feed = Feed(
            self.database,
            poll_s=self.settings.feed_poll_s,
            retention=dt.timedelta(days=self.settings.event_retention_days),
            purge_every_s=self.settings.event_purge_interval_s,
        )
        self.servicer = ProfileServicer(
            self.store,
            SessionStore(self.hot),
            scoring=self.scoring,
            feed=self.feed,
            max_export_page_size=self.settings.max_export_page_size,
        )
        self._poller = Background()

    def add_to(self, server: grpc.aio.Server) -> None:
        profiles_pb2_grpc.add_ProfileServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await migrations.prepare(self.database, NAME, self.settings)
        await self.feed.start()
        await self._refresh_model()
        self._poller.start(self._poll_model, name="profiles:model-poll")

    async def _refresh_model(self) -> None:
        stores = self.servicer.stores
        if await application.refresh_model(stores, self.settings.conversion_goal):
            log.info("conversion model", extra={"version": stores.scoring.model.version})

    async def _poll_model(self) -> None:
        """Pick up a newly trained conversion model without a restart.

        One query every `model_poll_s` seconds, off the request path: a read
        uses the model in memory. A failed look keeps the model in use.
        """
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self._refresh_model()
            except Exception:
                log.warning("could not look for a new conversion model", exc_info=True)

    async def drain(self) -> None:
        """End the change feed's streams (followers reconnect to another replica);
        stop looking for new models; end the IdentifyStream streams (pending
        requests answered first)."""
        self.feed.drain()
        self.servicer.drain()
        await self._poller.stop()

    async def check(self) -> None:
        """Health: its database, and its hot store, answer."""
        await self.database.ping()
        await self.hot.ping()

    async def stop(self) -> None:
        await self.drain()
        await self.feed.stop()
        await self.hot.close()
        self.database.dispose()
