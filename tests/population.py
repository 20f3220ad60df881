"""A generated population of shoppers whose conversions follow a known model.

Each visit's chance of ending in the goal is drawn from TRUTH over the very
signals the conversion model reads (`tessera.profiles.domain.conversion`), so a
trained model has something real to find. Events are protos, ready for the
generated client; timestamps lie in the past (from 60 days to a day ago).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator

import numpy as np

from tessera.common.v1 import common_pb2
from tessera.profiles.domain.conversion import ConversionModel, probability

TRUTH = ConversionModel(
    version="truth",
    intercept=-3.0,
    weights={
        "page_views": 0.08,
        "product_views": 0.25,
        "cart_items": 1.1,
        "favorites": 0.4,
        "searches": 0.15,
        "minutes": 0.05,
        "past_orders": 0.7,
    },
)


def visitors(
    count: int, seed: int, now: dt.datetime, goal: str = "purchase"
) -> Iterator[list[common_pb2.Event]]:
    """The events of `count` visitors, one list per visitor, in time order."""
    rng = np.random.default_rng(seed)
    tag = f"{seed}-{int(now.timestamp())}-{int(rng.integers(1 << 30))}"
    for person in range(count):
        cookie = common_pb2.Identity(type="cookie", value=f"gen-{tag}-{person}")
        at = now - dt.timedelta(days=60) + dt.timedelta(minutes=int(rng.integers(0, 60 * 24 * 20)))
        orders = 0
        events: list[common_pb2.Event] = []
        for visit in range(int(rng.integers(1, 4))):
            counts = {
                "page_view": int(rng.poisson(4)) or 1,
                "product_view": int(rng.poisson(2)),
                "add_to_cart": int(rng.poisson(0.6)),
                "favorite": int(rng.poisson(0.3)),
                "search": int(rng.poisson(0.6)),
            }
            durations = [int(rng.integers(5_000, 90_000)) for _ in range(counts["page_view"])]
            kinds = [kind for kind, n in counts.items() for _ in range(n)]
            rng.shuffle(kinds)
            inputs = (
                float(counts["page_view"]),
                float(counts["product_view"]),
                float(counts["add_to_cart"]),
                float(counts["favorite"]),  # favourites of distinct products below
                float(counts["search"]),
                sum(durations) / 60_000,
                math.log1p(orders),
            )
            for step, kind in enumerate(kinds):
                properties: dict[str, object] = {"category": "juicers"}
                if kind == "page_view":
                    properties["duration_ms"] = durations.pop()
                elif kind == "favorite":
                    properties["product_id"] = f"fav-{person}-{visit}-{step}"
                elif kind != "search":
                    properties["product_id"] = f"sku-{int(rng.integers(50))}"
                    properties["price"] = 30.0
                else:
                    properties = {"query": "juicer"}
                events.append(
                    _event(cookie, f"{tag}-{person}-{visit}-{step}", kind, at, properties)
                )
                at += dt.timedelta(seconds=30)
            if rng.random() < probability(TRUTH, inputs):
                events.append(
                    _event(cookie, f"{tag}-{person}-{visit}-goal", goal, at, {"revenue": 50.0})
                )
                orders += goal == "purchase"
            at += dt.timedelta(days=int(rng.integers(1, 10)))
        yield events


def _event(
    cookie: common_pb2.Identity,
    event_id: str,
    kind: str,
    at: dt.datetime,
    properties: dict[str, object],
) -> common_pb2.Event:
    event = common_pb2.Event(
        event_id=event_id, identities=[cookie], type=kind, channel=common_pb2.CHANNEL_WEB
    )
    event.timestamp.FromDatetime(at)
    event.properties.update(properties)
    return event
