"""Wiring of the profile service: settings, stores, servicer."""

from __future__ import annotations

import grpc
from pydantic import Field, field_validator

from tessera import db
from tessera.hot import open_hot_store
from tessera.profiles.application import Scoring
from tessera.profiles.domain import identity
from tessera.profiles.domain.features import InterestRules
from tessera.profiles.storage import sql
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore
from tessera.profiles.transport.servicer import ProfileServicer
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.settings import RuntimeSettings

NAME = "profiles"


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

    def interest_rules(self) -> InterestRules:
        """How category interest is computed (docs/interests.md)."""
        return InterestRules(
            half_life_days=self.interest_half_life_days,
            suppress_days=self.interest_suppress_days,
        )

    def identity_rules(self) -> identity.IdentityRules:
        """The identity resolution rules these settings give."""
        return identity.IdentityRules(dict(self.identity_limits), tuple(self.identity_priority))


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
        self.servicer = ProfileServicer(self.store, SessionStore(self.hot), self.scoring)

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
