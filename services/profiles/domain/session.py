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
MAX_RECENT_EVENT_IDS = 200
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


def apply_event(
    session: dict[str, Any] | None, event: EventData, now: dt.datetime
) -> dict[str, Any] | None:
    """The session after `event`; starts a new one after a timeout.

    Idempotent by event id, so a retried or replayed event counts once. An
    event older than the session timeout when it arrives (a late upload, an
    import) belongs to history, not to what the visitor is doing now, and
    leaves the session as is. Events of one visit may arrive a little out
    of order; the session then starts at the earliest of them.
    """
    if now - event.timestamp > SESSION_TIMEOUT:
        return session
    state = current(session, event.timestamp) if session else None
    if state and event.event_id in state.get("event_ids", ()):
        return state
    state = dict(state) if state else new_session(event.timestamp)
    started = dt.datetime.fromisoformat(state["started_at"])
    state["started_at"] = min(started, event.timestamp).isoformat()
    state["event_ids"] = [*state.get("event_ids", ()), event.event_id][-MAX_RECENT_EVENT_IDS:]
    props = event.properties
    category = str(props.get("category") or "")
    product = str(props.get("product_id") or "")
    last_seen = dt.datetime.fromisoformat(state["last_seen_at"])
    state["last_seen_at"] = max(last_seen, event.timestamp).isoformat()
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
    elif kind == "add_to_cart" and product:
        state["cart"] = _add_to_cart(state["cart"], product, category, props)
    elif kind == "remove_from_cart" and product:
        state["cart"] = [item for item in state["cart"] if item["product_id"] != product]
    elif kind == "favorite" and product and product not in state["favorites"]:
        state["favorites"] = [*state["favorites"], product][-MAX_FAVORITES:]
    elif kind == "search" and props.get("query"):
        state["searches"] = [*state["searches"], str(props["query"])][-MAX_SEARCHES:]
    elif kind == "purchase":
        state["cart"] = []
    return state


def _add_to_cart(
    cart: list[dict[str, Any]], product: str, category: str, props: dict[str, Any]
) -> list[dict[str, Any]]:
    quantity = int(props.get("quantity") or 1)
    price = float(props.get("price") or 0.0)
    items = [dict(item) for item in cart]
    for item in items:
        if item["product_id"] == product:
            item["quantity"] += quantity
            item["price"] = price or item["price"]
            return items
    items.append(
        {"product_id": product, "category": category, "quantity": quantity, "price": price}
    )
    return items


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
        cart = _add_to_cart(cart, item["product_id"], item["category"], item)
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
