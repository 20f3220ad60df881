"""Exposures: what Decide emits, and how the emitter delivers them off the request path."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any, cast

import grpc
from decision_fakes import FakeEvaluator, FakeProfiles, rpc_error, run_with_catalog
from prometheus_client import REGISTRY
from test_decision_application_decide import NOW, Catalogue, juicers, query

from tessera.decision.application.decide import Decider, Decisions
from tessera.decision.application.exposures import EmitterSettings, ExposureEmitter
from tessera.decision.domain.campaigns import CampaignDef
from tessera.decision.transport.convert import campaign_from_proto
from tessera.definitions import DefinitionCache
from tessera.experiments.domain.exposures import Exposure, exposure_id_for
from tessera.experiments.domain.hashing import bucket
from tessera.experiments.v1 import experiments_pb2
from tessera.sticky import Kept, StickyVariant, trait_name


class Sink:
    """Collects what Decide emits."""

    def __init__(self) -> None:
        self.emitted: list[Exposure] = []

    def emit(self, exposures: Any) -> None:
        self.emitted.extend(exposures)


def decide_emitting(
    tmp_path: Path,
    evaluator: FakeEvaluator,
    profiles: FakeProfiles,
    *placements: str,
    global_holdout: float = 0.0,
    decided: list[Decisions] | None = None,
) -> list[Exposure]:
    sink = Sink()
    caches: list[DefinitionCache[CampaignDef]] = []

    def register(catalog: Catalogue) -> None:
        caches.append(catalog.cache(campaign_from_proto))

    async def scenario(catalog: Catalogue) -> None:
        await catalog.create(juicers(placements=["home", "footer"]))
        decider = Decider(
            caches[0],
            evaluator,
            profiles.stub(),
            0.5,
            now=lambda: NOW,
            exposures=sink,
            global_holdout=global_holdout,
        )
        answer = await decider.decide(query(*placements))
        if decided is not None:
            decided.append(answer)

    run_with_catalog(tmp_path, scenario, before_open=register)
    return sink.emitted


def test_decide__campaign_shown__one_exposure_with_the_derived_id(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})

    emitted = decide_emitting(tmp_path, evaluator, FakeProfiles(), "home")

    expected_id = exposure_id_for("p-c1", "campaign-juicers", "treatment", False, NOW.date())
    assert emitted == [
        Exposure(expected_id, "campaign-juicers", "treatment", "p-c1", NOW, in_holdout=False)
    ]


def test_decide__held_out__holdout_exposure_on_the_control(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {}, held_out=["campaign-juicers"])

    emitted = decide_emitting(tmp_path, evaluator, FakeProfiles(), "home")

    assert [(e.variant_key, e.in_holdout) for e in emitted] == [("control", True)]


def test_decide__outside_the_experiment__no_exposure(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {})

    emitted = decide_emitting(tmp_path, evaluator, FakeProfiles(), "home")

    assert emitted == []


def test_decide__sticky_traits_on_profile__handed_to_assignment(tmp_path: Path) -> None:
    exposed_at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    sticky = StickyVariant("control", False, exposed_at)
    profiles = FakeProfiles(traits={trait_name("campaign-juicers"): sticky.trait(), "plan": "x"})
    evaluator = FakeEvaluator([], {"campaign-juicers": "control"})

    decide_emitting(tmp_path, evaluator, profiles, "home")

    assert evaluator.sticky == [{"campaign-juicers": Kept("control", False)}]


# The global holdout

HELD_OUT = bucket("_global_holdout", "p-c1")
"""The global-holdout bucket of the fake profile p-c1: a fraction above it holds it out."""


def test_decide__global_holdout__every_placement_its_default_and_holdout_exposures(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})
    decided: list[Decisions] = []

    emitted = decide_emitting(
        tmp_path,
        evaluator,
        FakeProfiles(),
        "home",
        "footer",
        global_holdout=min(0.99, HELD_OUT + 0.01),
        decided=decided,
    )

    assert evaluator.assigned == []  # held out of everything: nothing to assign
    choices = decided[0].choices
    assert [(c.placement, c.variant_key, c.is_control) for c in choices] == [
        ("home", "control", True),
        ("footer", "control", True),
    ]
    assert all("global holdout: show the default" in c.reasons for c in choices)
    assert sorted((e.experiment_key, e.variant_key, e.in_holdout) for e in emitted) == [
        ("_global_holdout", "holdout", False),
        ("campaign-juicers", "control", True),
        ("campaign-juicers", "control", True),  # one per placement; the same id
    ]
    assert len({e.exposure_id for e in emitted}) == 2


def test_decide__outside_the_global_holdout__personalised_and_recorded_so(
    tmp_path: Path,
) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})

    emitted = decide_emitting(
        tmp_path, evaluator, FakeProfiles(), "home", global_holdout=HELD_OUT / 2
    )

    assert [(e.experiment_key, e.variant_key) for e in emitted] == [
        ("campaign-juicers", "treatment"),
        ("_global_holdout", "personalized"),
    ]


def test_decide__personalised_first__stays_personalised_when_the_holdout_grows(
    tmp_path: Path,
) -> None:
    first = StickyVariant("personalized", False, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    profiles = FakeProfiles(traits={trait_name("_global_holdout"): first.trait()})
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})

    emitted = decide_emitting(tmp_path, evaluator, profiles, "home", global_holdout=0.99)

    assert ("campaign-juicers", "treatment", False) in {
        (e.experiment_key, e.variant_key, e.in_holdout) for e in emitted
    }


def test_decide__no_global_holdout__no_programme_exposure(tmp_path: Path) -> None:
    evaluator = FakeEvaluator([], {"campaign-juicers": "treatment"})

    emitted = decide_emitting(tmp_path, evaluator, FakeProfiles(), "home", global_holdout=0.0)

    assert [e.experiment_key for e in emitted] == ["campaign-juicers"]


# The emitter


class FakeExperiments:
    """RecordExposures that fails with the codes it is given, then stores."""

    def __init__(self, failures: list[grpc.StatusCode] | None = None) -> None:
        self.failures = list(failures or [])
        self.calls: list[list[str]] = []
        self.stored: set[str] = set()

    async def RecordExposures(
        self, request: experiments_pb2.RecordExposuresRequest, timeout: float
    ) -> experiments_pb2.RecordExposuresResponse:
        ids = [e.exposure_id for e in request.exposures]
        self.calls.append(ids)
        if self.failures:
            raise rpc_error(self.failures.pop(0), "injected")
        new = set(ids) - self.stored
        self.stored |= new
        return experiments_pb2.RecordExposuresResponse(
            accepted=len(new), duplicates=len(ids) - len(new)
        )


def exposures(count: int, prefix: str = "x") -> list[Exposure]:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return [Exposure(f"{prefix}{i}", "exp", "control", f"p{i}", at) for i in range(count)]


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("tessera_exposures_dropped_total", {"reason": reason}) or 0.0


def emitter_for(fake: FakeExperiments, **settings: Any) -> ExposureEmitter:
    defaults: dict[str, Any] = {"linger_s": 0.01, "retry_max_s": 0.02}
    return ExposureEmitter(cast(Any, fake), EmitterSettings(**(defaults | settings)))


def test_emitter__many_exposures__sent_in_batches_of_the_batch_size() -> None:
    fake = FakeExperiments()

    async def scenario() -> None:
        emitter = emitter_for(fake, batch_size=4)
        emitter.start()
        emitter.emit(exposures(10))
        await emitter.flushed()
        await emitter.close(1)

    asyncio.run(scenario())

    assert [len(call) for call in fake.calls] == [4, 4, 2]
    assert len(fake.stored) == 10


def test_emitter__peer_unavailable_twice__same_ids_sent_again_and_stored_once() -> None:
    fake = FakeExperiments([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])

    async def scenario() -> None:
        emitter = emitter_for(fake)
        emitter.start()
        emitter.emit(exposures(3))
        await emitter.flushed()
        await emitter.close(1)

    asyncio.run(scenario())

    assert fake.calls == [["x0", "x1", "x2"]] * 3
    assert fake.stored == {"x0", "x1", "x2"}


def test_emitter__queue_full__newest_dropped_and_counted() -> None:
    fake = FakeExperiments()
    before = dropped("queue_full")

    async def scenario() -> None:
        emitter = emitter_for(fake, queue_size=5)
        emitter.emit(exposures(8))  # not started: nothing leaves the queue
        emitter.start()
        await emitter.flushed()
        await emitter.close(1)

    asyncio.run(scenario())

    assert dropped("queue_full") - before == 3
    assert fake.stored == {"x0", "x1", "x2", "x3", "x4"}


def test_emitter__refused_batch__dropped_and_counted_not_retried() -> None:
    fake = FakeExperiments([grpc.StatusCode.INVALID_ARGUMENT])
    before = dropped("refused")

    async def scenario() -> None:
        emitter = emitter_for(fake)
        emitter.start()
        emitter.emit(exposures(2))
        await emitter.flushed()
        await emitter.close(1)

    asyncio.run(scenario())

    assert dropped("refused") - before == 2
    assert len(fake.calls) == 1


def test_emitter__close__sends_what_is_queued() -> None:
    fake = FakeExperiments()

    async def scenario() -> None:
        emitter = emitter_for(fake, linger_s=60)
        emitter.start()
        emitter.emit(exposures(3))
        await emitter.close(5)

    asyncio.run(scenario())

    assert fake.stored == {"x0", "x1", "x2"}


def test_emitter__peer_down_at_close__left_over_dropped_as_shutdown() -> None:
    fake = FakeExperiments([grpc.StatusCode.UNAVAILABLE] * 1000)
    before = dropped("shutdown")

    async def scenario() -> None:
        emitter = emitter_for(fake)
        emitter.start()
        emitter.emit(exposures(2))
        emitter.emit(exposures(3, prefix="y"))
        await emitter.close(0.2)

    asyncio.run(scenario())

    assert dropped("shutdown") - before == 5
    assert fake.stored == set()


def test_emitter__same_id_again__sent_once() -> None:
    fake = FakeExperiments()

    async def scenario() -> None:
        emitter = emitter_for(fake)
        emitter.start()
        emitter.emit(exposures(2))
        await emitter.flushed()
        emitter.emit(exposures(2))
        await emitter.flushed()
        await emitter.close(1)

    asyncio.run(scenario())

    assert fake.calls == [["x0", "x1"]]
