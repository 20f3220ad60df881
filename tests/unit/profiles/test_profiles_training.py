"""The learned conversion model, on a generated population whose truth is known.

Every visit's outcome is drawn from a known logistic model over the very
signals the trainer reads, so the best any model can do is known: the AUC of
the true probabilities. The trained model must rank within 0.02 of that and
be calibrated within 0.02 (expected calibration error) on held-out visits.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from tessera.profiles.domain.conversion import (
    PRIOR,
    SIGNALS,
    ConversionModel,
    probability,
    signals,
)
from tessera.profiles.domain.history import History, add_to_history
from tessera.profiles.domain.model import EventData
from tessera.profiles.domain.session import Session, apply_event
from tessera.profiles.training import (
    examples_from_events,
    expected_calibration_error,
    roc_auc,
    split,
    train,
)

GOAL = "subscribe"
TRUTH = ConversionModel(
    version="truth",
    intercept=-3.2,
    weights={
        "page_views": 0.08,
        "product_views": 0.25,
        "cart_items": 0.9,
        "favorites": 0.4,
        "searches": 0.15,
        "minutes": 0.05,
        "past_orders": 0.7,
    },
)
START = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)


def generate(visitors: int, seed: int) -> tuple[list[EventData], list[float]]:
    """Events of `visitors` people, and the true probability of each visit, in trainer order."""
    rng = np.random.default_rng(seed)
    events: list[EventData] = []
    truths: list[tuple[str, dt.datetime, float]] = []
    for person in range(visitors):
        profile = f"p{person:06d}"
        at = START + dt.timedelta(minutes=int(rng.integers(0, 60 * 24 * 30)))
        history = History()
        for visit in range(int(rng.integers(1, 4))):
            visit_events = _visit(rng, profile, f"{person}-{visit}", at)
            session: Session | None = None
            for event in visit_events:
                session = apply_event(session, event)
            truth = probability(TRUTH, signals(session, history))
            truths.append((profile, visit_events[0].timestamp, truth))
            events.extend(visit_events)
            last = visit_events[-1].timestamp
            if rng.random() < truth:
                events.append(_event(profile, f"{person}-{visit}-goal", GOAL, last, {}))
            for event in visit_events:
                history = add_to_history(history, event)
            at = last + dt.timedelta(days=int(rng.integers(1, 20)))
    # The trainer groups by profile, then visits in time order: the same order here.
    truths.sort(key=lambda t: (t[0], t[1]))
    return events, [t[2] for t in truths]


def _visit(rng: np.random.Generator, profile: str, tag: str, at: dt.datetime) -> list[EventData]:
    kinds = (
        ["page_view"] * int(rng.poisson(4))
        + ["product_view"] * int(rng.poisson(2))
        + ["add_to_cart"] * int(rng.poisson(0.6))
        + ["favorite"] * int(rng.poisson(0.3))
        + ["search"] * int(rng.poisson(0.6))
        + ["purchase"] * int(rng.random() < 0.08)
    ) or ["page_view"]
    order = rng.permutation(len(kinds))
    out = []
    for step, index in enumerate(order):
        kind = kinds[index]
        properties: dict[str, object] = {
            "page_view": {"category": "juicers", "duration_ms": int(rng.integers(5_000, 90_000))},
            "product_view": {"product_id": f"sku-{int(rng.integers(50))}", "category": "juicers"},
            "add_to_cart": {"product_id": f"sku-{int(rng.integers(50))}", "price": 30.0},
            "favorite": {"product_id": f"sku-{int(rng.integers(50))}"},
            "search": {"query": "juicer"},
            "purchase": {"revenue": 50.0, "category": "juicers"},
        }[kind]
        when = at + dt.timedelta(seconds=30 * step)
        out.append(_event(profile, f"{tag}-{step}", kind, when, properties))
    # A purchase is the last thing of a visit that has one (it empties the cart).
    out.sort(key=lambda e: (e.type == "purchase", e.timestamp))
    return [
        _event(e.profile_id, e.event_id, e.type, at + dt.timedelta(seconds=30 * i), e.properties)
        for i, e in enumerate(out)
    ]


def _event(
    profile: str, event_id: str, kind: str, at: dt.datetime, properties: dict[str, object]
) -> EventData:
    return EventData(
        event_id=event_id, type=kind, timestamp=at, profile_id=profile, properties=properties
    )


@pytest.fixture(scope="module")
def population() -> tuple[list[EventData], list[float]]:
    return generate(visitors=9000, seed=7)


def test_train__generated_population__ranks_and_calibrates_like_the_truth(population):
    events, truths = population
    examples = examples_from_events(events, GOAL)
    assert len(examples) == len(truths)

    model, report = train(examples, version="test-1", seed=3)

    _, held_out = split(len(examples), 0.3, 3)
    labels = [examples[i].converted for i in held_out]
    true_auc = roc_auc([truths[i] for i in held_out], labels)
    assert report.version == model.version == "test-1"
    assert report.held_out == len(held_out)
    assert report.auc >= true_auc - 0.02
    assert report.calibration_error <= 0.02


def test_train__generated_population__recovers_the_strong_weights(population):
    events, _ = population

    model, _ = train(examples_from_events(events, GOAL), version="test-2", seed=1)

    assert model.weights["cart_items"] == pytest.approx(TRUTH.weights["cart_items"], abs=0.25)
    assert model.weights["past_orders"] == pytest.approx(TRUTH.weights["past_orders"], abs=0.35)
    assert model.intercept == pytest.approx(TRUTH.intercept, abs=0.4)


def test_examples__visit_with_goal__inputs_are_the_session_before_the_goal():
    at = START
    events = [
        _event("a", "1", "add_to_cart", at, {"product_id": "x", "price": 9.0}),
        _event("a", "2", GOAL, at + dt.timedelta(minutes=1), {}),
        _event("a", "3", "page_view", at + dt.timedelta(minutes=2), {}),
        _event("a", "4", "page_view", at + dt.timedelta(hours=2), {}),
    ]

    first, second = examples_from_events(events, GOAL)

    cart_items = SIGNALS.index("cart_items")
    page_views = SIGNALS.index("page_views")
    assert first.converted and first.inputs[cart_items] == 1 and first.inputs[page_views] == 0
    assert not second.converted and second.inputs[page_views] == 1


def test_expected_calibration_error__known_bins__weighted_gaps():
    # Bin [0.1, 0.2): p 0.15 twice, one converted: gap 0.35, weight 2/4.
    # Bin [0.9, 1.0]: p 0.95 twice, both converted: gap 0.05, weight 2/4.
    error = expected_calibration_error([0.15, 0.15, 0.95, 0.95], [True, False, True, True])

    assert error == pytest.approx(0.5 * 0.35 + 0.5 * 0.05)


def test_probability__prior_with_empty_session__documented_prior():
    expected = 1 / (1 + math.exp(4.0))

    assert probability(PRIOR, signals(None, History())) == pytest.approx(expected)


def test_probability__huge_signals__stays_a_probability():
    assert probability(PRIOR, (1e300,) * len(SIGNALS)) == 1.0
    assert 0.0 <= probability(PRIOR, (-1e300,) * len(SIGNALS)) < 1e-300


def test_train__one_outcome_only__refused():
    events = [_event(f"p{i}", str(i), "page_view", START, {}) for i in range(30)]

    with pytest.raises(ValueError, match="same outcome"):
        train(examples_from_events(events, GOAL), version="x")
