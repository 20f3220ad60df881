"""Identity normalisation, the hot session and computed features."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.errors import InvalidArgument
from tessera.profiles.domain.conversion import PRIOR
from tessera.profiles.domain.features import Rfm, compute_features
from tessera.profiles.domain.history import History, add_to_history
from tessera.profiles.domain.model import EventData, normalize_identities, normalize_identity
from tessera.profiles.domain.session import (
    SESSION_TIMEOUT,
    CartItem,
    Session,
    apply_event,
    merge_sessions,
)

T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)


_ids = itertools.count()


def ev(kind: str, at: dt.datetime = T0, **properties: object) -> EventData:
    return EventData(
        event_id=f"{kind}-{next(_ids)}",
        type=kind,
        timestamp=at,
        channel=1,
        properties=dict(properties),
    )


def step(state: Session | None, event: EventData) -> Session:
    """Apply an event as it arrives live (received when it happened)."""
    after = apply_event(state, event)
    assert after is not None
    return after


def replay(*events: EventData) -> Session:
    state: Session | None = None
    for event in events:
        state = step(state, event)
    assert state is not None
    return state


def test_normalize_identity__email__trimmed_lowercased_sha256() -> None:
    key = normalize_identity("email", "  Ada@Example.COM ", "identities[0]")

    assert key.value == "sha256:" + hashlib.sha256(b"ada@example.com").hexdigest()


def test_normalize_identities__duplicates__collapse_to_one() -> None:
    keys = normalize_identities([("cookie", "a"), ("cookie", "a"), ("device", "a")], "identities")

    assert [(k.type, k.value) for k in keys] == [("cookie", "a"), ("device", "a")]


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("Cookie", "a", "identities[0].type"),
        ("cookie", "  ", "identities[0].value"),
        ("email", "not-an-address", "identities[0].value"),
    ],
)
def test_normalize_identity__bad__names_field(kind: str, value: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        normalize_identity(kind, value, "identities[0]")

    assert raised.value.field == field


def test_session__cart_add_remove_and_purchase__cart_follows() -> None:
    state = replay(
        ev("add_to_cart", product_id="p1", category="juicers", price=80.0),
        ev("add_to_cart", product_id="p1", quantity=2),
        ev("add_to_cart", product_id="p2", price=5.0),
        ev("remove_from_cart", product_id="p2"),
    )
    assert state.cart == (
        CartItem(product_id="p1", category="juicers", quantity=3, price=80.0, added_at=T0),
    )

    after_purchase = step(state, ev("purchase", revenue=240.0))
    assert after_purchase.cart == ()


def test_session__gap_longer_than_timeout__starts_new_session() -> None:
    first = replay(ev("page_view", category="juicers"), ev("page_view", category="juicers"))
    later = T0 + SESSION_TIMEOUT + dt.timedelta(seconds=1)

    state = step(first, ev("page_view", later, category="blenders"))

    assert state.page_views == 1
    assert state.category_views == {"blenders": 1}
    assert state.started_at == later


def test_merge_sessions__counts_add_and_lists_union() -> None:
    a = replay(ev("page_view", category="x"), ev("favorite", product_id="p1"))
    b = replay(
        ev("page_view", category="x"), ev("favorite", product_id="p2"), ev("search", query="q")
    )

    merged = merge_sessions(a, b)

    assert merged is not None
    assert (merged.page_views, merged.category_views) == (2, {"x": 2})
    assert merged.favorites == ("p1", "p2") and merged.searches == ("q",)


@given(st.lists(st.sampled_from(["page_view", "product_view", "favorite", "search"]), max_size=30))
def test_session__any_events__event_count_equals_events_applied(kinds: list[str]) -> None:
    state: Session | None = None
    for index, kind in enumerate(kinds):
        state = step(
            state,
            ev(kind, T0 + dt.timedelta(seconds=index), product_id="p", category="c", query="q"),
        )

    assert (state.events if state else 0) == len(kinds)


def test_features__history_and_session__rfm_ltv_and_hot_interest_only() -> None:
    history = History()
    for days, revenue in ((20, 100.0), (14, 50.0)):
        history = add_to_history(
            history,
            ev(
                "purchase",
                T0 - dt.timedelta(days=days),
                revenue=revenue,
                category="washing_machines",
            ),
        )
    session = replay(ev("product_view", category="juicers", product_id="j1"))

    features = compute_features(session, history, T0)

    assert features.rfm == Rfm(recency_days=14.0, frequency=2, monetary=150.0)
    assert features.lifetime_value == 150.0
    # Washing machines bought 14 days ago: suppressed (docs/interests.md).
    assert [i.category for i in features.interests] == ["juicers"]


def test_conversion_probability__empty_session__logistic_of_intercept() -> None:
    features = compute_features(None, History(), T0)

    assert features.conversion_probability == pytest.approx(1 / (1 + math.exp(-PRIOR.intercept)))


def test_conversion_probability__cart_add__higher_than_page_view() -> None:
    browsing = compute_features(replay(ev("page_view")), History(), T0)
    carting = compute_features(replay(ev("add_to_cart", product_id="p")), History(), T0)

    assert carting.conversion_probability > browsing.conversion_probability


def test_session__same_event_applied_twice__counted_once() -> None:
    view = ev("product_view", category="juicers", product_id="j1")

    state = step(step(None, view), view)

    assert state.events == 1
    assert state.category_views == {"juicers": 1}


def test_session__event_from_before_the_live_visit__leaves_session_unchanged() -> None:
    state = replay(ev("page_view", category="juicers"))
    stale = ev("page_view", T0 - dt.timedelta(days=7), category="blenders")

    assert apply_event(state, stale) is state


def test_session__events_of_one_visit_out_of_order__counted_and_start_moves_back() -> None:
    state = replay(ev("page_view", T0, category="juicers"))
    earlier = ev("page_view", T0 - dt.timedelta(seconds=2), category="blenders")

    after = apply_event(state, earlier)

    assert after is not None
    assert after.page_views == 2
    assert after.started_at == earlier.timestamp
    assert after.last_seen_at == T0


@given(st.permutations(["add", "purchase", "add_after"]))
def test_cart__any_arrival_order__purchase_clears_only_what_was_added_before(
    order: list[str],
) -> None:
    events = {
        "add": ev("add_to_cart", T0, product_id="p1"),
        "purchase": ev("purchase", T0 + dt.timedelta(minutes=1)),
        "add_after": ev("add_to_cart", T0 + dt.timedelta(minutes=2), product_id="p2"),
    }

    state = replay(*(events[name] for name in order))

    assert [item.product_id for item in state.cart] == ["p2"]


@given(st.permutations(["add", "remove"]))
def test_cart__remove_after_add_in_any_arrival_order__item_gone(order: list[str]) -> None:
    events = {
        "add": ev("add_to_cart", T0, product_id="p1"),
        "remove": ev("remove_from_cart", T0 + dt.timedelta(seconds=5), product_id="p1"),
    }

    state = replay(*(events[name] for name in order))

    assert state.cart == ()


def test_features__never_bought__no_recency() -> None:
    features = compute_features(replay(ev("page_view")), History(), T0)

    assert features.rfm == Rfm(recency_days=None, frequency=0, monetary=0.0)


def test_features__purchase_stamped_just_ahead_of_now__recency_zero() -> None:
    history = add_to_history(History(), ev("purchase", T0 + dt.timedelta(minutes=3)))

    assert compute_features(None, history, T0).rfm.recency_days == 0.0
