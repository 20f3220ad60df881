"""GetResults: an experiment's people and goal events, read from the store, through the statistics.

Results are computed when asked, from what the service keeps: the sticky
records (who is in which variant since when, under which split, with what
pre-exposure covariate) and the goal events the change feed brought. The
global holdout is read the same way under its reserved key: the people held
out against everyone Tessera personalised, on the programme's goal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tessera.errors import NotFound, require
from tessera.experiments.domain.exposures import GLOBAL_HOLDOUT_KEY, GLOBAL_HOLDOUT_VARIANTS
from tessera.experiments.domain.model import ExperimentDef, GoalKind
from tessera.experiments.domain.results import Results, compute_results
from tessera.experiments.storage import ExposureStore

__all__ = ["GlobalHoldout", "ResultsReader", "Split"]

Split = tuple[int, dict[str, float]]
"""An experiment's version and its weights by variant key."""


@dataclass(frozen=True)
class GlobalHoldout:
    """The global holdout as the settings give it."""

    fraction: float
    goal_event_type: str
    goal_kind: GoalKind

    @property
    def weights(self) -> dict[str, float]:
        """Held out, personalised: the split the decision service hashes people into."""
        holdout, personalized = GLOBAL_HOLDOUT_VARIANTS
        return {holdout: self.fraction, personalized: 1.0 - self.fraction}


@dataclass(frozen=True)
class Answer:
    """Results and what they were measured on."""

    experiment_key: str
    goal_event_type: str
    goal_kind: GoalKind
    results: Results
    computed_at: dt.datetime


class ResultsReader:
    """Reads results of experiments (and of the global holdout) from the store."""

    def __init__(
        self,
        store: ExposureStore,
        experiments: Callable[[], Mapping[str, ExperimentDef]],
        global_holdout: GlobalHoldout,
        *,
        cuped: bool = True,
        min_sample: int = 100,
    ) -> None:
        self.store = store
        self.experiments = experiments
        self.global_holdout = global_holdout
        self.cuped = cuped
        self.min_sample = min_sample

    def splits(self, experiment_keys: Sequence[str]) -> dict[str, Split]:
        """Each known experiment's version and weights now (for exposures being recorded)."""
        known = self.experiments()
        splits: dict[str, Split] = {}
        for key in set(experiment_keys):
            if key == GLOBAL_HOLDOUT_KEY:
                splits[key] = (0, self.global_holdout.weights)
            elif key in known:
                experiment = known[key]
                splits[key] = (experiment.version, {v.key: v.weight for v in experiment.variants})
        return splits

    async def read(self, experiment_key: str, *, timeline: bool = True) -> Answer:
        """The results of `experiment_key` now; NotFound when no such experiment exists."""
        require(bool(experiment_key), "experiment_key", "is required")
        now = dt.datetime.now(dt.UTC)
        end_time: dt.datetime | None = None
        if experiment_key == GLOBAL_HOLDOUT_KEY:
            holdout = self.global_holdout
            variant_keys = list(GLOBAL_HOLDOUT_VARIANTS)
            weights = [holdout.weights[k] for k in variant_keys]
            goal_type, goal_kind = holdout.goal_event_type, holdout.goal_kind
        else:
            experiment = self.experiments().get(experiment_key)
            if experiment is None:
                raise NotFound(f"no experiment {experiment_key!r}", field="experiment_key")
            control = experiment.control_variant_key
            ordered = sorted(experiment.variants, key=lambda v: v.key != control)
            variant_keys = [v.key for v in ordered]
            weights = [v.weight for v in ordered]
            goal_type, goal_kind = experiment.goal_event_type, experiment.goal_kind
            end_time = experiment.end_time
        database = self.store.database
        people = await database.run(self.store.people, experiment_key)
        events = await database.run(self.store.goal_events, experiment_key, goal_type)
        splits = await database.run(self.store.splits, experiment_key)
        results = await asyncio.to_thread(
            compute_results,
            variant_keys,
            weights,
            people,
            events,
            goal_kind,
            now,
            end_time=end_time,
            splits=splits,
            cuped=self.cuped,
            min_sample=self.min_sample,
            timeline=timeline,
        )
        return Answer(experiment_key, goal_type, goal_kind, results, now)
