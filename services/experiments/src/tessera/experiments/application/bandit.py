"""Bandit allocation: Thompson sampling over the goal, published as new experiment versions.

Every `interval_s` the service looks at each running experiment with
`ALLOCATION_BANDIT`, reads its people and conversions as results do, and
draws new weights with `statistics.thompson_weights`: the control keeps its
share of the weights as they stand (so the lift against it stays
measurable), the treatments share the rest by how often each is the best in
posterior draws. The new weights are stored as a new version of the
experiment, which reaches every decision replica through the watch stream
like any change. People already exposed keep their variant (they are
sticky); only newcomers follow the new weights. Each version's weights are
kept with the people first exposed under it, so the sample-ratio test judges
everyone by the split they were assigned under.

Every replica runs the loop; an update names the version it read
(`expected_version`), so when two replicas draw at once one wins and the
other's update is refused and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import numpy as np

from tessera.background import Background
from tessera.catalog import Catalog
from tessera.errors import FailedPrecondition, NotFound
from tessera.experiments.application.results import ResultsReader
from tessera.experiments.domain.model import Allocation, ExperimentDef, ExperimentStatus
from tessera.experiments.domain.statistics import Sample, thompson_weights
from tessera.experiments.v1 import experiments_pb2

log = logging.getLogger("tessera.experiments.bandit")

MIN_CHANGE = 1e-3
"""Weights moving less than this (as shares) are not worth a new version."""


def control_share(experiment: ExperimentDef) -> float:
    """The control's share of the experiment's weights now; the bandit keeps it."""
    total = sum(v.weight for v in experiment.variants if v.weight > 0)
    control = experiment.variant(experiment.control_variant_key)
    if control is None or total <= 0:
        return 0.0
    return min(max(control.weight, 0.0) / total, 0.99)


class BanditAllocator:
    """Recomputes the weights of bandit experiments on a schedule."""

    def __init__(
        self,
        catalog: Catalog[experiments_pb2.Experiment],
        experiments: Callable[[], Mapping[str, ExperimentDef]],
        results: ResultsReader,
        normalise: Callable[[experiments_pb2.Experiment], experiments_pb2.Experiment],
        *,
        interval_s: float,
        draws: int,
        seed: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.experiments = experiments
        self.results = results
        self.normalise = normalise
        self.interval_s = interval_s
        self.draws = draws
        self.rng = np.random.default_rng(seed)
        self._background = Background()

    def start(self) -> None:
        """Run until `stop`; an interval of 0 turns the bandit off."""
        if self.interval_s > 0:
            self._background.start(self._run, name="bandit")

    async def stop(self) -> None:
        """Stop; nothing is left half-written (each update is one write)."""
        await self._background.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.allocate_all()
            except Exception:  # the database, say: the next round tries again
                log.warning("bandit allocation failed; trying again next round", exc_info=True)

    async def allocate_all(self) -> list[str]:
        """One round over every running bandit experiment; the keys given new weights."""
        changed = []
        for key, experiment in sorted(self.experiments().items()):
            if (
                experiment.allocation == Allocation.BANDIT
                and experiment.status == ExperimentStatus.RUNNING
                and await self.allocate(experiment)
            ):
                changed.append(key)
        return changed

    async def allocate(self, experiment: ExperimentDef) -> bool:
        """Draw new weights for one experiment and store them; False when nothing changed."""
        answer = await self.results.read(experiment.key, timeline=False)
        rows = answer.results.variants  # the control first
        samples = [Sample(row.exposures, row.conversions, row.conversions) for row in rows]
        weights = thompson_weights(
            samples, control_share=control_share(experiment), draws=self.draws, rng=self.rng
        )
        drawn = {row.variant_key: weight for row, weight in zip(rows, weights, strict=True)}
        total = sum(v.weight for v in experiment.variants if v.weight > 0) or 1.0
        current = {v.key: max(v.weight, 0.0) / total for v in experiment.variants}
        if all(abs(drawn.get(k, 0.0) - share) < MIN_CHANGE for k, share in current.items()):
            return False
        try:
            stored = await self.catalog.get(experiment.key)
        except NotFound:
            return False
        if stored.version != experiment.version:
            return False  # changed meanwhile: the next round draws from the new version
        for variant in stored.variants:
            variant.weight = round(drawn.get(variant.key, 0.0), 6)
        try:
            await self.catalog.update(self.normalise(stored), stored.version)
        except FailedPrecondition:
            return False  # another replica (or an admin) wrote first
        log.info(
            "bandit weights published",
            extra={"experiment": experiment.key, "weights": drawn, "version": stored.version + 1},
        )
        return True
