"""Hot session state: what the visitor is doing right now.

A session is a plain dict (it lives as JSON in the hot store) updated by
`apply_event` as each event arrives. A gap of `SESSION_TIMEOUT` without
events starts a new session, the usual web analytics convention.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tessera.profiles.domain.model import EventData

SESSION_TIMEOUT = dt.timedelta(minutes=30)
MAX_SEARCHES = 20
MAX_FAVORITES = 100
MAX_RECENT_EVENT_IDS = 100
"""Event ids a session remembers, so an event applied twice counts once."""


def new_session(now: dt.datetime) -> dict[str, Any]:
    """An empty session starting at `now`."""
    stamp = now.isoformat()
    return {
        "started_at": stamp,
        "last_seen_at": stamp,
        "channel": 0,
        "page_views": 0,
        "product_views": {},
        "category_views": {},
        "cart": [],
        "favorites": [],
        "searches": [],
        "time_spent_ms": 0,
        "events": 0,
        "event_ids": [],
    }


def current(session: dict[str, Any] | None, now: dt.datetime) -> dict[str, Any] | None:
    """The session if it is still live at `now`, else None."""
    if not session:
        return None
    last = dt.datetime.fromisoformat(session["last_seen_at"])
    return session if now - last <= SESSION_TIMEOUT else None


def apply_event(session: dict[str, Any] | None, event: EventData) -> dict[str, Any] | None:
    """The session after `event`; starts a new one after a timeout.

    Idempotent by event id, so a retried event counts once. Events of one
    visit may arrive out of order (several tabs, an app uploading what it
    did offline): they all count, the session starts at the earliest, and
    the cart follows the events' own times, so a purchase clears what was
    added before it whatever order the two arrive in. An event from before
    the live session (an import, a replay of an earlier visit) belongs to
    history and leaves the session as it is.
    """
    at = event.timestamp
    state = current(session, at) if session else None
    if state and event.event_id in state.get("event_ids", ()):
        return state
    if state and at < dt.datetime.fromisoformat(state["started_at"]) - SESSION_TIMEOUT:
        return state
    state = dict(state) if state else new_session(at)
    state["started_at"] = min(dt.datetime.fromisoformat(state["started_at"]), at).isoformat()
    state["last_seen_at"] = max(dt.datetime.fromisoformat(state["last_seen_at"]), at).isoformat()
    state["event_ids"] = [*state.get("event_ids", ()), event.event_id][-MAX_RECENT_EVENT_IDS:]
    props = event.properties
    category = str(props.get("category") or "")
    product = str(props.get("product_id") or "")
    state["channel"] = event.channel or state["channel"]
    state["events"] += 1
    duration = props.get("duration_ms")
    if isinstance(duration, int | float):
        state["time_spent_ms"] += int(duration)

    kind = event.type
    if kind in ("page_view", "product_view") and category:
        views = dict(state["category_views"])
        views[category] = views.get(category, 0) + 1
        state["category_views"] = views
    if kind == "page_view":
        state["page_views"] += 1
    elif kind == "product_view" and product:
        views = dict(state["product_views"])
        views[product] = views.get(product, 0) + 1
        state["product_views"] = views
    elif kind in ("add_to_cart", "remove_from_cart", "purchase"):
        _change_cart(state, kind, product, category, props, at)
    elif kind == "favorite" and product and product not in state["favorites"]:
        state["favorites"] = [*state["favorites"], product][-MAX_FAVORITES:]
    elif kind == "search" and props.get("query"):
        state["searches"] = [*state["searches"], str(props["query"])][-MAX_SEARCHES:]
    return state


def _later(a: str | None, b: dt.datetime) -> str:
    return b.isoformat() if a is None or b > dt.datetime.fromisoformat(a) else a


def _change_cart(
    state: dict[str, Any],
    kind: str,
    product: str,
    category: str,
    props: dict[str, Any],
    at: dt.datetime,
) -> None:
    """Apply a cart event by its own time: later removals and purchases win."""
    cart: list[dict[str, Any]] = [dict(item) for item in state["cart"]]
    removed: dict[str, str] = dict(state.get("cart_removed", {}))
    cleared = state.get("cart_cleared_at")
    if kind == "add_to_cart" and product:
        undone = [t for t in (cleared, removed.get(product)) if t]
        if any(at < dt.datetime.fromisoformat(t) for t in undone):
            return
        quantity = int(props.get("quantity") or 1)
        cart = _add_to_cart(cart, product, category, quantity, float(props.get("price") or 0), at)
    elif kind == "remove_from_cart" and product:
        removed[product] = _later(removed.get(product), at)
        cart = [
            item
            for item in cart
            if item["product_id"] != product or dt.datetime.fromisoformat(item["added_at"]) > at
        ]
    elif kind == "purchase":
        state["cart_cleared_at"] = _later(cleared, at)
        cart = [item for item in cart if dt.datetime.fromisoformat(item["added_at"]) > at]
    state["cart"] = cart
    state["cart_removed"] = removed


def _add_to_cart(
    cart: list[dict[str, Any]],
    product: str,
    category: str,
    quantity: int,
    price: float,
    at: dt.datetime,
) -> list[dict[str, Any]]:
    for item in cart:
        if item["product_id"] == product:
            item["quantity"] += quantity
            item["price"] = price or item["price"]
            item["category"] = category or item["category"]
            item["added_at"] = _later(item.get("added_at"), at)
            return cart
    cart.append(
        {
            "product_id": product,
            "category": category,
            "quantity": quantity,
            "price": price,
            "added_at": at.isoformat(),
        }
    )
    return cart


def merge_sessions(
    survivor: dict[str, Any] | None, merged: dict[str, Any] | None
) -> dict[str, Any] | None:
    """One session from the two a merge brings together: counts add up."""
    if not survivor or not merged:
        return survivor or merged
    out = dict(survivor)
    for name in ("page_views", "time_spent_ms", "events"):
        out[name] = survivor[name] + merged[name]
    for name in ("product_views", "category_views"):
        counts = dict(survivor[name])
        for key, count in merged[name].items():
            counts[key] = counts.get(key, 0) + count
        out[name] = counts
    cart = [dict(item) for item in survivor["cart"]]
    for item in merged["cart"]:
        added = dt.datetime.fromisoformat(item["added_at"])
        cart = _add_to_cart(
            cart, item["product_id"], item["category"], item["quantity"], item["price"], added
        )
    out["cart"] = cart
    out["favorites"] = list(dict.fromkeys([*survivor["favorites"], *merged["favorites"]]))
    out["searches"] = [*merged["searches"], *survivor["searches"]][-MAX_SEARCHES:]
    out["event_ids"] = [*merged.get("event_ids", ()), *survivor.get("event_ids", ())][
        -MAX_RECENT_EVENT_IDS:
    ]
    stamps = dt.datetime.fromisoformat
    out["started_at"] = min(survivor["started_at"], merged["started_at"], key=stamps)
    out["last_seen_at"] = max(survivor["last_seen_at"], merged["last_seen_at"], key=stamps)
    return out
