"""Wiring of the experiment service: settings, stores, feed, background work, servicer."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from pydantic import Field

from tessera import db, migrations
from tessera.catalog import Catalog
from tessera.clients import peer_channel
from tessera.experiments.application.bandit import BanditAllocator
from tessera.experiments.application.conversions import Conversions
from tessera.experiments.application.exposures import Goal, StickySync
from tessera.experiments.application.results import GlobalHoldout, ResultsReader
from tessera.experiments.domain import ExperimentDef, GoalKind
from tessera.experiments.domain.covariate import DEFAULT_WINDOW_DAYS
from tessera.experiments.storage import ExposureStore
from tessera.experiments.transport.convert import experiment_from_proto
from tessera.experiments.transport.servicer import ExperimentServicer, normalised
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc
from tessera.feed import Cursors, profile_events
from tessera.profiles.v1 import profiles_pb2_grpc
from tessera.settings import RuntimeSettings
from tessera.sticky import GLOBAL_HOLDOUT_KEY

NAME = "experiments"


class ExperimentsSettings(RuntimeSettings):
    """Settings of the experiment service (TESSERA_* variables)."""

    cuped_window_days: int = Field(
        DEFAULT_WINDOW_DAYS,
        ge=0,
        description="Days before a first exposure whose goal metric is the CUPED covariate; "
        "0 turns CUPED off.",
    )
    results_min_sample: int = Field(
        100, ge=2, description="People each arm needs before results say more than collecting."
    )
    bandit_interval_s: float = Field(
        3600.0, ge=0, description="Seconds between bandit allocations; 0 turns bandits off."
    )
    bandit_draws: int = Field(
        10_000, ge=100, description="Posterior draws of one Thompson-sampling allocation."
    )


class ExperimentsService:
    """The experiment service as the runtime starts it."""

    name = NAME
    full_names = [experiments_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name]

    def __init__(self, settings: ExperimentsSettings | None = None) -> None:
        self.settings = settings or ExperimentsSettings()
        self.database = db.open_database(self.settings, NAME)
        self.catalog = Catalog(self.database, NAME, "experiment", experiments_pb2.Experiment)
        self.cache = self.catalog.cache(experiment_from_proto)
        self.exposures = ExposureStore(self.database)
        self.cursors = Cursors(self.database, NAME)
        self.channel = peer_channel(self.settings.address_of("profiles"))
        self.sync = StickySync(
            self.exposures,
            profiles_pb2_grpc.ProfileServiceStub(self.channel),
            self.goal_of,
            self.settings.cuped_window_days,
        )
        self.conversions = Conversions(
            self.exposures, self.cursors, lambda types: profile_events(self.channel, types)
        )
        self.cache.on_change = self._definitions_changed
        self.results = ResultsReader(
            self.exposures,
            lambda: self.cache.items,
            GlobalHoldout(
                self.settings.global_holdout_fraction,
                *self.global_goal,
            ),
            cuped=self.settings.cuped_window_days > 0,
            min_sample=self.settings.results_min_sample,
        )
        self.servicer = ExperimentServicer(
            self.catalog, self.cache, self.exposures, self.results, self.sync
        )
        self.bandit = BanditAllocator(
            self.catalog,
            lambda: self.cache.items,
            self.results,
            normalised,
            interval_s=self.settings.bandit_interval_s,
            draws=self.settings.bandit_draws,
        )

    @property
    def global_goal(self) -> Goal:
        """The goal the programme is measured on against the global holdout."""
        return self.settings.global_holdout_goal, GoalKind(self.settings.global_holdout_goal_kind)

    def goal_of(self, experiment_key: str) -> Goal | None:
        """An experiment's goal (the programme's for the global holdout); None when unknown."""
        if experiment_key == GLOBAL_HOLDOUT_KEY:
            return self.global_goal
        experiment = self.cache.items.get(experiment_key)
        if experiment is None:
            return None
        return experiment.goal_event_type, experiment.goal_kind

    def _definitions_changed(self, experiments: Mapping[str, ExperimentDef]) -> None:
        goal_types = {e.goal_event_type for e in experiments.values()} | {self.global_goal[0]}
        self.conversions.follow(frozenset(goal_types))

    def add_to(self, server: grpc.aio.Server) -> None:
        experiments_pb2_grpc.add_ExperimentServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await migrations.prepare(self.database, NAME, self.settings)
        await self.catalog.open()
        self.sync.start()
        self.bandit.start()

    async def drain(self) -> None:
        await self.catalog.close()

    async def check(self) -> None:
        """Health: its database answers."""
        await self.database.ping()

    async def stop(self) -> None:
        await self.bandit.stop()
        await self.conversions.stop()
        await self.sync.stop()
        await self.catalog.close()
        await self.channel.close()
        self.database.dispose()
