"""The stored JSON of sessions and histories: the format written before typed values."""

from __future__ import annotations

import datetime as dt

from tessera import jsoncodec
from tessera.profiles.domain.history import History
from tessera.profiles.domain.model import EventData
from tessera.profiles.domain.session import CartItem, Session, apply_event
from tessera.profiles.storage.sessions import (
    session_bytes,
    session_from_json,
    session_to_json,
)
from tessera.profiles.storage.sql import history_from_json, history_to_json

T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)

# Written by the dict-based session code: no cart undo marks yet (they were
# only added by the first cart removal or purchase).
OLD_SESSION = {
    "started_at": "2026-11-01T10:00:00+00:00",
    "last_seen_at": "2026-11-01T10:05:00+00:00",
    "channel": 1,
    "page_views": 2,
    "product_views": {"j1": 1},
    "category_views": {"juicers": 3},
    "cart": [
        {
            "product_id": "j1",
            "category": "juicers",
            "quantity": 2,
            "price": 80.0,
            "added_at": "2026-11-01T10:04:00+00:00",
        }
    ],
    "favorites": ["j1"],
    "searches": ["juicer"],
    "time_spent_ms": 4000,
    "events": 6,
    "event_ids": ["e1", "e2"],
}


def test_session_json__old_format__reads_typed_and_writes_the_same_fields_back() -> None:
    session = session_from_json(OLD_SESSION)

    assert session.cart == (CartItem("j1", "juicers", 2, 80.0, T0 + dt.timedelta(minutes=4)),)
    assert session.cart_removed == {} and session.cart_cleared_at is None
    written = session_to_json(session)
    assert {k: v for k, v in written.items() if k in OLD_SESSION} == OLD_SESSION
    assert (written["cart_removed"], written["cart_cleared_at"]) == ({}, None)


def test_session_json__cart_undo_marks__round_trip() -> None:
    raw = {
        **OLD_SESSION,
        "cart_removed": {"p2": "2026-11-01T10:03:00+00:00"},
        "cart_cleared_at": "2026-11-01T10:02:00+00:00",
    }

    assert session_to_json(session_from_json(raw)) == raw


def test_history_json__round_trip__same_object() -> None:
    raw = {
        "orders": 2,
        "revenue": 150.0,
        "last_purchase_at": "2026-10-18T10:00:00+00:00",
        "categories": {"washing_machines": 2, "coffee": 1},
        "category_purchased_at": {
            "washing_machines": "2026-10-18T10:00:00+00:00",
            "coffee": "2026-09-02T08:30:00+00:00",
        },
    }

    assert history_to_json(history_from_json(raw)) == raw
    assert history_to_json(History()) == {
        "orders": 0,
        "revenue": 0.0,
        "last_purchase_at": None,
        "categories": {},
        "category_purchased_at": {},
    }


def test_history_json__stored_before_category_times__reads_and_writes_old_fields_back() -> None:
    raw = {
        "orders": 2,
        "revenue": 150.0,
        "last_purchase_at": "2026-10-18T10:00:00+00:00",
        "categories": {"washing_machines": 2},
    }

    written = history_to_json(history_from_json(raw))

    assert {k: v for k, v in written.items() if k in raw} == raw
    assert written["category_purchased_at"] == {"washing_machines": raw["last_purchase_at"]}


def test_stored_json__poisoned_before_numbers_were_bounded__reads_within_proto_range() -> None:
    from tessera.profiles.domain.model import DOUBLE_MAX, INT64_MAX

    session = session_from_json(
        {**OLD_SESSION, "time_spent_ms": 2 * 9_200_000_000_000_000_000, "page_views": 2**70}
    )
    history = history_from_json({"orders": 2**64, "revenue": float("inf"), "categories": {}})

    assert (session.time_spent_ms, session.page_views) == (INT64_MAX, INT64_MAX)
    assert (history.orders, history.revenue) == (INT64_MAX, DOUBLE_MAX)


def _visit(*steps: tuple[str, dict[str, object]]) -> Session:
    session: Session | None = None
    for index, (kind, props) in enumerate(steps):
        at = T0 + dt.timedelta(seconds=index, microseconds=7 * index)
        session = apply_event(session, EventData(f"e{index}", kind, at, 2, properties=props))
    assert session is not None
    return session


def test_session_bytes__every_kind_of_field__same_bytes_as_the_json_object() -> None:
    busy = _visit(
        ("product_view", {"category": "juicers", "product_id": "j1", "duration_ms": 1500}),
        ("add_to_cart", {"category": "juicers", "product_id": "j1", "price": 80.5}),
        ("add_to_cart", {"category": "kettles", "product_id": "k1", "quantity": 2}),
        ("remove_from_cart", {"product_id": "k1"}),
        ("search", {"query": "juicer"}),
        ("favorite", {"product_id": "j1"}),
        ("page_view", {"category": "juicers"}),
    )
    bought = _visit(("add_to_cart", {"product_id": "j1", "price": 3.0}), ("purchase", {}))

    for session in (busy, bought, session_from_json(OLD_SESSION)):
        assert session_bytes(session) == jsoncodec.dump_bytes(session_to_json(session))
    assert busy.cart and busy.cart_removed and bought.cart_cleared_at is not None
