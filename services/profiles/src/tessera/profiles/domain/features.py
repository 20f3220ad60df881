"""Features computed from a profile's cold history and hot session.

History is kept as running aggregates on the profile (orders, revenue, last
purchase, purchases per category), updated with each purchase, so computing
features costs no query on the decision path.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from tessera.profiles.domain.model import EventData

# Weights of the prior conversion model: a logistic score over session
# signals. They encode the usual funnel order (a cart add says more than a
# page view) and are a prior, not a fit: the live model learned from this
# service's own conversions replaces them when it lands.
PRIOR_INTERCEPT = -4.0
PRIOR_WEIGHTS = {
    "page_views": 0.05,
    "product_views": 0.15,
    "cart_items": 1.2,
    "favorites": 0.3,
    "searches": 0.1,
    "minutes": 0.02,
    "past_orders": 0.4,
}
SESSION_INTEREST_WEIGHT = 3.0
"""A category viewed now counts this many times a past purchase: hot beats cold."""


def empty_history() -> dict[str, Any]:
    """History of a profile that has done nothing yet."""
    return {"orders": 0, "revenue": 0.0, "last_purchase_at": None, "categories": {}}


def add_to_history(history: dict[str, Any], event: EventData) -> dict[str, Any]:
    """History after `event`; only purchases change it."""
    if event.type != "purchase":
        return history
    out = dict(history)
    out["orders"] = history["orders"] + 1
    out["revenue"] = history["revenue"] + float(event.properties.get("revenue") or 0.0)
    last = history["last_purchase_at"]
    if last is None or event.timestamp > dt.datetime.fromisoformat(last):
        out["last_purchase_at"] = event.timestamp.isoformat()
    category = event.properties.get("category")
    if category:
        categories = dict(history["categories"])
        categories[str(category)] = categories.get(str(category), 0) + 1
        out["categories"] = categories
    return out


def merge_histories(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """History of two merged profiles."""
    categories = dict(a["categories"])
    for name, count in b["categories"].items():
        categories[name] = categories.get(name, 0) + count
    stamps = [s for s in (a["last_purchase_at"], b["last_purchase_at"]) if s]
    return {
        "orders": a["orders"] + b["orders"],
        "revenue": a["revenue"] + b["revenue"],
        "last_purchase_at": max(stamps, key=dt.datetime.fromisoformat) if stamps else None,
        "categories": categories,
    }


def conversion_probability(session: dict[str, Any] | None, history: dict[str, Any]) -> float:
    """Prior probability that the current session converts (logistic score)."""
    s = session or {}
    signals = {
        "page_views": s.get("page_views", 0),
        "product_views": sum(s.get("product_views", {}).values()),
        "cart_items": sum(item["quantity"] for item in s.get("cart", [])),
        "favorites": len(s.get("favorites", [])),
        "searches": len(s.get("searches", [])),
        "minutes": s.get("time_spent_ms", 0) / 60_000,
        "past_orders": math.log1p(history["orders"]),
    }
    score = PRIOR_INTERCEPT + sum(PRIOR_WEIGHTS[k] * float(v) for k, v in signals.items())
    return 1.0 / (1.0 + math.exp(-score))


def compute_features(
    session: dict[str, Any] | None, history: dict[str, Any], now: dt.datetime
) -> dict[str, Any]:
    """RFM, lifetime value, ranked interests and conversion probability."""
    last = history["last_purchase_at"]
    recency = (now - dt.datetime.fromisoformat(last)).total_seconds() / 86_400 if last else -1.0
    interests: dict[str, float] = {k: float(v) for k, v in history["categories"].items()}
    for category, views in (session or {}).get("category_views", {}).items():
        interests[category] = interests.get(category, 0.0) + SESSION_INTEREST_WEIGHT * views
    ranked = sorted(interests.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "rfm": {
            "recency_days": round(recency, 3),
            "frequency": history["orders"],
            "monetary": history["revenue"],
        },
        "lifetime_value": history["revenue"],
        "interests": ranked,
        "conversion_probability": conversion_probability(session, history),
    }
