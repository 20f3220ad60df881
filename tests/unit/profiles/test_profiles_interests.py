"""Category interest follows intent: decay, hot session, suppression (docs/interests.md)."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.profiles.domain.features import (
    DEFAULT_INTEREST_RULES,
    Interest,
    InterestRules,
    rank_interests,
)
from tessera.profiles.domain.history import History, add_to_history, merge_histories
from tessera.profiles.domain.model import EventData
from tessera.profiles.domain.session import Session, apply_event
from tessera.profiles.storage.sql import history_from_json, history_to_json

NOW = dt.datetime(2026, 11, 15, 12, tzinfo=dt.UTC)


def purchase(category: str, at: dt.datetime, event_id: str = "") -> EventData:
    return EventData(
        event_id=event_id or f"buy-{category}-{at.isoformat()}",
        type="purchase",
        timestamp=at,
        properties={"category": category, "revenue": 10.0},
    )


def views(*categories: str) -> Session | None:
    session: Session | None = None
    for index, category in enumerate(categories):
        at = NOW - dt.timedelta(minutes=len(categories) - index)
        session = apply_event(
            session,
            EventData(f"v{index}", "product_view", at, properties={"category": category}),
        )
    return session


def bought(*purchases: EventData) -> History:
    history = History()
    for event in purchases:
        history = add_to_history(history, event)
    return history


def worked_example_history() -> History:
    return bought(
        purchase("washing_machines", dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)),
        *(
            purchase("coffee", dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC) - dt.timedelta(days=d))
            for d in (90, 60, 30, 0)
        ),
    )


def test_interests__docs_worked_example__juicers_first_washing_machines_not_pushed():
    ranked = rank_interests(
        views("juicers", "juicers", "juicers"),
        worked_example_history(),
        NOW,
        DEFAULT_INTEREST_RULES,
    )

    assert [i.category for i in ranked] == ["juicers", "coffee"]
    assert ranked[0].score == 9.0
    assert ranked[1].score == pytest.approx(1.414214, abs=1e-6)
    assert ranked[1].score == pytest.approx(4 * 2**-1.5)


def test_interests__suppressed_category_viewed_now__still_left_out():
    session = views("juicers", "juicers", "juicers", "washing_machines")

    ranked = rank_interests(session, worked_example_history(), NOW, DEFAULT_INTEREST_RULES)

    assert "washing_machines" not in [i.category for i in ranked]


def test_interests__suppression_off__docs_numbers_for_washing_machines():
    no_suppression = InterestRules(suppress_days=0)
    session = views("juicers", "juicers", "juicers", "washing_machines")

    ranked = {
        i.category: i.score
        for i in rank_interests(session, worked_example_history(), NOW, no_suppression)
    }

    assert ranked["washing_machines"] == pytest.approx(3 + 0.723635, abs=1e-6)


def test_interests__one_view_now__outweighs_six_purchases_a_month_ago():
    month_ago = NOW - dt.timedelta(days=31)
    history = bought(*(purchase("coffee", month_ago, f"c{i}") for i in range(6)))

    ranked = rank_interests(views("tea"), history, NOW, DEFAULT_INTEREST_RULES)

    assert ranked[0] == Interest("tea", 3.0)
    assert ranked[1].category == "coffee"
    assert ranked[1].score == pytest.approx(6 * 2 ** (-31 / 30))


def test_interests__half_life_setting__halves_at_the_half_life():
    rules = InterestRules(half_life_days=10, suppress_days=0)
    history = bought(purchase("coffee", NOW - dt.timedelta(days=10)))

    (coffee,) = rank_interests(None, history, NOW, rules)

    assert coffee.score == pytest.approx(0.5)


def test_history__purchases_out_of_order__category_keeps_its_latest_time():
    later, earlier = NOW - dt.timedelta(days=2), NOW - dt.timedelta(days=40)

    history = bought(purchase("coffee", later), purchase("coffee", earlier))

    assert history.category_purchased_at == {"coffee": later}


def test_merge_histories__both_bought_a_category__later_time_and_summed_counts():
    a = bought(purchase("coffee", NOW - dt.timedelta(days=50)), purchase("tea", NOW))
    b = bought(purchase("coffee", NOW - dt.timedelta(days=5)))

    merged = merge_histories(a, b)

    assert merged.categories == {"coffee": 2, "tea": 1}
    assert merged.category_purchased_at == {
        "coffee": NOW - dt.timedelta(days=5),
        "tea": NOW,
    }
    assert merge_histories(b, a).category_purchased_at == merged.category_purchased_at


def test_history_json__stored_before_category_times__categories_read_as_last_purchase():
    raw = {
        "orders": 3,
        "revenue": 30.0,
        "last_purchase_at": "2026-11-01T12:00:00+00:00",
        "categories": {"washing_machines": 1, "coffee": 2},
    }

    history = history_from_json(raw)

    last = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
    assert history.category_purchased_at == {"washing_machines": last, "coffee": last}
    assert history_to_json(history_from_json(history_to_json(history))) == history_to_json(history)
