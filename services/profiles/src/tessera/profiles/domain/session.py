"""Hot session state: what the visitor is doing right now.

A `Session` is an immutable value: `apply_event` returns the session after
an event, `merge_sessions` the session of two merged profiles. A gap of
`SESSION_TIMEOUT` without events starts a new session, the usual web
analytics convention. How a session is kept (JSON in the hot store) is the
storage layer's business.

Every counter (views, events, time spent, cart quantities) saturates at the
largest int64 instead of growing past what the contract's int64 fields
carry; see docs/profile-writes.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tessera.profiles.domain.model import EventData, saturating_add

SESSION_TIMEOUT = dt.timedelta(minutes=30)
MAX_SEARCHES = 20
MAX_FAVORITES = 100
MAX_RECENT_EVENT_IDS = 100
"""Event ids a session remembers, so an event applied twice counts once."""

CART_EVENTS = frozenset({"add_to_cart", "remove_from_cart", "purchase"})


@dataclass(frozen=True)
class CartItem:
    """One product line of the cart."""

    product_id: str
    category: str
    quantity: int
    price: float
    added_at: dt.datetime
    """When the line was last added to: later removals and purchases undo it."""


@dataclass(frozen=True)
class Session:
    """The current visit of one profile.

    Frozen; the mappings inside are never changed after construction (every
    change builds new ones), so a session can be shared freely.
    """

    started_at: dt.datetime
    last_seen_at: dt.datetime
    channel: int = 0
    page_views: int = 0
    product_views: Mapping[str, int] = field(default_factory=dict)
    category_views: Mapping[str, int] = field(default_factory=dict)
    cart: tuple[CartItem, ...] = ()
    favorites: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    time_spent_ms: int = 0
    events: int = 0
    event_ids: tuple[str, ...] = ()
    """The latest event ids applied, oldest first (at most MAX_RECENT_EVENT_IDS)."""
    cart_removed: Mapping[str, dt.datetime] = field(default_factory=dict)
    """Latest removal time per product: an add from before it stays undone."""
    cart_cleared_at: dt.datetime | None = None
    """Latest purchase time: adds from before it stay undone."""


def new_session(now: dt.datetime) -> Session:
    """An empty session starting at `now`."""
    return Session(started_at=now, last_seen_at=now)


def current(session: Session | None, now: dt.datetime) -> Session | None:
    """The session if it is still live at `now`, else None."""
    if session is None:
        return None
    return session if now - session.last_seen_at <= SESSION_TIMEOUT else None


def _counted(counts: Mapping[str, int], key: str, by: int = 1) -> dict[str, int]:
    out = dict(counts)
    out[key] = saturating_add(out.get(key, 0), by)
    return out


def apply_event(session: Session | None, event: EventData) -> Session | None:
    """The session after `event`; starts a new one after a timeout.

    Idempotent by event id, so a retried event counts once. Events of one
    visit may arrive out of order (several tabs, an app uploading what it
    did offline): they all count, the session starts at the earliest, and
    the cart follows the events' own times, so a purchase clears what was
    added before it whatever order the two arrive in. An event from before
    the live session (an import, a replay of an earlier visit) belongs to
    history and leaves the session as it is: the very object passed in is
    returned, so callers can tell nothing changed.
    """
    at = event.timestamp
    state = current(session, at)
    if state is not None and event.event_id in state.event_ids:
        return state
    # Written as a sum on `at`: `started_at - SESSION_TIMEOUT` does not exist
    # for a session that started in the first minutes of year 1.
    if state is not None and at + SESSION_TIMEOUT < state.started_at:
        return state
    state = state if state is not None else new_session(at)
    props = event.properties
    category = str(props.get("category") or "")
    product = str(props.get("product_id") or "")
    duration = props.get("duration_ms")
    # Every change of the event, then one copy of the session: a session is
    # copied once per event however many of its fields the event touches.
    changes: dict[str, Any] = {
        "started_at": min(state.started_at, at),
        "last_seen_at": max(state.last_seen_at, at),
        "event_ids": (*state.event_ids, event.event_id)[-MAX_RECENT_EVENT_IDS:],
        "channel": event.channel or state.channel,
        "events": saturating_add(state.events, 1),
        "time_spent_ms": saturating_add(
            state.time_spent_ms, int(duration) if isinstance(duration, int | float) else 0
        ),
    }
    kind = event.type
    if kind in ("page_view", "product_view") and category:
        changes["category_views"] = _counted(state.category_views, category)
    if kind == "page_view":
        changes["page_views"] = saturating_add(state.page_views, 1)
    elif kind == "product_view" and product:
        changes["product_views"] = _counted(state.product_views, product)
    elif kind in CART_EVENTS:
        return _change_cart(replace(state, **changes), kind, product, category, props, at)
    elif kind == "favorite" and product and product not in state.favorites:
        changes["favorites"] = (*state.favorites, product)[-MAX_FAVORITES:]
    elif kind == "search" and props.get("query"):
        changes["searches"] = (*state.searches, str(props["query"]))[-MAX_SEARCHES:]
    return replace(state, **changes)


def _later(a: dt.datetime | None, b: dt.datetime) -> dt.datetime:
    return b if a is None or b > a else a


def _change_cart(
    state: Session,
    kind: str,
    product: str,
    category: str,
    props: Mapping[str, Any],
    at: dt.datetime,
) -> Session:
    """Apply a cart event by its own time: later removals and purchases win."""
    cart = state.cart
    removed = dict(state.cart_removed)
    cleared = state.cart_cleared_at
    if kind == "add_to_cart" and product:
        undone = [t for t in (cleared, removed.get(product)) if t is not None]
        if any(at < t for t in undone):
            return state
        quantity = int(props.get("quantity") or 1)
        price = float(props.get("price") or 0)
        cart = _add_to_cart(cart, product, category, quantity, price, at)
    elif kind == "remove_from_cart" and product:
        removed[product] = _later(removed.get(product), at)
        cart = tuple(item for item in cart if item.product_id != product or item.added_at > at)
    elif kind == "purchase":
        cleared = _later(cleared, at)
        cart = tuple(item for item in cart if item.added_at > at)
    return replace(state, cart=cart, cart_removed=removed, cart_cleared_at=cleared)


def _add_to_cart(
    cart: tuple[CartItem, ...],
    product: str,
    category: str,
    quantity: int,
    price: float,
    at: dt.datetime,
) -> tuple[CartItem, ...]:
    for index, item in enumerate(cart):
        if item.product_id == product:
            grown = replace(
                item,
                quantity=saturating_add(item.quantity, quantity),
                price=price or item.price,
                category=category or item.category,
                added_at=_later(item.added_at, at),
            )
            return (*cart[:index], grown, *cart[index + 1 :])
    return (*cart, CartItem(product, category, saturating_add(0, quantity), price, at))


def merge_sessions(survivor: Session | None, merged: Session | None) -> Session | None:
    """One session from the two a merge brings together: counts add up.

    The survivor keeps its channel and its cart undo marks; the merged
    session's cart lines join the survivor's cart.
    """
    if survivor is None or merged is None:
        return survivor or merged
    product_views = dict(survivor.product_views)
    for key, count in merged.product_views.items():
        product_views = _counted(product_views, key, count)
    category_views = dict(survivor.category_views)
    for key, count in merged.category_views.items():
        category_views = _counted(category_views, key, count)
    cart = survivor.cart
    for item in merged.cart:
        cart = _add_to_cart(
            cart, item.product_id, item.category, item.quantity, item.price, item.added_at
        )
    return replace(
        survivor,
        started_at=min(survivor.started_at, merged.started_at),
        last_seen_at=max(survivor.last_seen_at, merged.last_seen_at),
        page_views=saturating_add(survivor.page_views, merged.page_views),
        time_spent_ms=saturating_add(survivor.time_spent_ms, merged.time_spent_ms),
        events=saturating_add(survivor.events, merged.events),
        product_views=product_views,
        category_views=category_views,
        cart=cart,
        favorites=tuple(dict.fromkeys([*survivor.favorites, *merged.favorites])),
        searches=(*merged.searches, *survivor.searches)[-MAX_SEARCHES:],
        event_ids=(*merged.event_ids, *survivor.event_ids)[-MAX_RECENT_EVENT_IDS:],
    )
