"""`python -m bench.segments`: EstimateSize over a synthetic population of profiles.

Builds the segment service's projection (tessera.segments.domain.projection)
from a synthetic change feed of `--profiles` people (default 1,000,000),
through the same `Projection.apply` the service's feed handler calls, then
prints, for a few rules:

- **estimate**: the time of `estimate()` over the whole projection (the
  member count, the total and the goal value of EstimateSize; the RPC adds
  one hop, its ratio to the echo RPC of the same run is printed too), the
  median of `--repeats` runs after one warm-up;
- **bytes/profile**: the projection's memory (arrays and the Python objects
  of its index and value tables) per profile;
- **per-profile**: the same rule evaluated one profile at a time by the
  compiled evaluator EvaluateSegments uses, on `--sample` profiles built as
  rule subjects beforehand (building them is not timed, so the ratio is the
  least the projection gains), extrapolated to the population; the printed
  ratio is that time over the estimate's. The sample's members are checked
  to be the projection's members of the same rows.

The population (seeded, so runs compare): every profile has a cookie, 35% an
e-mail, 20% an app install, 10% a CRM id; traits country (12, skewed),
plan (3), signup_date (ISO dates over 3 years), age, acquisition channel,
a job title for 30%; about 3 events each over the last 120 days (page and
product views, cart adds, purchases: 8%) with a category (12), product ids
(2,000) on product events, a channel, and prices, quantities and revenue.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

from tessera.bench.v1 import bench_pb2, bench_pb2_grpc
from tessera.segments.domain import (
    DailySeries,
    EventHistoryView,
    FeaturesView,
    RfmView,
    Subject,
    compile_rule,
    parse_rule,
)
from tessera.segments.domain.estimate import estimate, members
from tessera.segments.domain.projection import (
    DAY_US,
    EventSeen,
    ProfileChange,
    Projection,
    Record,
)
from tessera.segments.domain.subject import utc_day

RULES = (
    'trait.country in ["FR", "BE"] '
    'and count(purchase where category == "kitchen", within=90d) >= 1',
    'has_identity("email") and sum(purchase.revenue, within=365d) > 100 '
    'and trait.signup_date >= "2024-06-01"',
    "feature.rfm.recency_days <= 30 or "
    '(count(product_view, within=7d) >= 2 and trait.plan != "free")',
)
COUNTRIES = ("FR", "DE", "BE", "NL", "ES", "IT", "GB", "US", "PL", "SE", "PT", "AT")
COUNTRY_WEIGHTS = np.array([20, 18, 8, 8, 10, 10, 9, 7, 4, 2, 2, 2], dtype=float)
CATEGORIES = (
    "kitchen",
    "juicers",
    "garden",
    "tools",
    "toys",
    "books",
    "audio",
    "phones",
    "beauty",
    "sports",
    "fashion",
    "pets",
)
TYPES = ("page_view", "product_view", "add_to_cart", "purchase")
TYPE_WEIGHTS = np.array([50, 30, 12, 8], dtype=float)
CHANNELS = ("web", "app", "store")
JOBS = tuple(f"job-{i}" for i in range(40))
ACQUISITION = ("organic", "paid_search", "social", "email", "referral", "affiliate")


def population(n: int, now: dt.datetime, seed: int = 0) -> dict[str, Any]:
    """The synthetic people as columns (see the module docstring)."""
    rng = np.random.default_rng(seed)
    start = dt.date(now.year - 3, now.month, 1)
    events = rng.poisson(3.0, n)
    total = int(events.sum())
    now_us = (now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    return {
        "ids": [f"{x:032x}" for x in rng.integers(0, 2**63, n, dtype=np.int64)],
        "country": rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum()),
        "plan": rng.choice(3, n, p=[0.7, 0.25, 0.05]),
        "signup": [
            (start + dt.timedelta(days=int(d))).isoformat() for d in rng.integers(0, 1095, n)
        ],
        "age": rng.integers(18, 80, n),
        "acquisition": rng.choice(len(ACQUISITION), n),
        "job": np.where(rng.random(n) < 0.3, rng.integers(0, len(JOBS), n), -1),
        "email": rng.random(n) < 0.35,
        "app": rng.random(n) < 0.2,
        "crm": rng.random(n) < 0.1,
        "events": events,
        "event_type": rng.choice(4, total, p=TYPE_WEIGHTS / TYPE_WEIGHTS.sum()),
        "event_time": now_us - rng.integers(0, 120 * DAY_US, total),
        "event_category": rng.integers(0, len(CATEGORIES), total),
        "event_product": rng.integers(0, 2000, total),
        "event_channel": rng.choice(3, total, p=[0.6, 0.3, 0.1]),
        "event_price": rng.integers(100, 20000, total) / 100,
        "event_quantity": rng.integers(1, 4, total),
    }


def _traits(people: dict[str, Any], i: int) -> dict[str, Any]:
    traits: dict[str, Any] = {
        "country": COUNTRIES[people["country"][i]],
        "plan": ("free", "plus", "pro")[people["plan"][i]],
        "signup_date": people["signup"][i],
        "age": int(people["age"][i]),
        "acquisition": ACQUISITION[people["acquisition"][i]],
    }
    if people["job"][i] >= 0:
        traits["job_title"] = JOBS[people["job"][i]]
    return traits


def _types(people: dict[str, Any], i: int) -> tuple[str, ...]:
    flags = (("app_install", "app"), ("cookie", None), ("crm_id", "crm"), ("email", "email"))
    return tuple(name for name, column in flags if column is None or people[column][i])


def _event(people: dict[str, Any], i: int, j: int) -> EventSeen:
    kind = TYPES[people["event_type"][j]]
    category = CATEGORIES[people["event_category"][j]]
    series = {"category": category, "channel": CHANNELS[people["event_channel"][j]]}
    sums: dict[str, float] = {}
    if kind != "page_view":
        series["product_id"] = f"sku-{people['event_product'][j]}"
        sums["price"] = float(people["event_price"][j])
    if kind in ("add_to_cart", "purchase"):
        sums["quantity"] = float(people["event_quantity"][j])
    if kind == "purchase":
        sums["revenue"] = sums["price"] * sums["quantity"]
    return EventSeen(
        people["ids"][i],
        kind,
        int(people["event_time"][j]),
        series,
        category if kind == "purchase" else None,
        sums,
    )


def feed(people: dict[str, Any]) -> Iterator[Record]:
    """The population as the change feed tells it: each profile, then its events."""
    j = 0
    for i in range(len(people["ids"])):
        yield ProfileChange(people["ids"][i], _traits(people, i), _types(people, i))
        for _ in range(people["events"][i]):
            yield _event(people, i, j)
            j += 1


def subjects(people: dict[str, Any], sample: int, now: dt.datetime) -> list[Subject]:
    """Rule subjects of the first `sample` people, as EvaluateSegments would see them."""
    today = utc_day(now)
    now_us = (now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    out: list[Subject] = []
    j = 0
    for i in range(sample):
        days: dict[tuple[str, str, str], dict[int, list[Any]]] = {}
        orders, revenue, last = 0, 0.0, None
        for _ in range(people["events"][i]):
            event = _event(people, i, j)
            j += 1
            day = event.timestamp_us // DAY_US
            keys = [(event.type, "", ""), *((event.type, p, v) for p, v in event.series.items())]
            for key in keys:
                entry = days.setdefault(key, {}).setdefault(day, [0, {}])
                entry[0] += 1
                for name, value in event.sums.items():
                    entry[1][name] = entry[1].get(name, 0.0) + value
            if event.type == "purchase":
                orders += 1
                revenue += event.sums.get("revenue", 0.0)
                last = max(last or 0, event.timestamp_us)
        series = {}
        for key, by_day in days.items():
            ordered = sorted(by_day)
            names = {n for d in ordered for n in by_day[d][1]}
            series[key] = DailySeries(
                tuple(ordered),
                tuple(by_day[d][0] for d in ordered),
                {n: tuple(by_day[d][1].get(n, 0.0) for d in ordered) for n in names},
            )
        recency = round(max(0.0, (now_us - last) / 1e6 / 86_400), 3) if last else None
        out.append(
            Subject(
                profile_id=people["ids"][i],
                traits=_traits(people, i),
                identity_types=frozenset(_types(people, i)),
                features=FeaturesView(revenue, 0.0, RfmView(recency, orders, revenue)),
                history=EventHistoryView(today, series),
            )
        )
    return out


def echo_p50_ms(address: str, calls: int = 1000) -> float:
    """The median latency of the echo RPC: one gRPC hop on this machine."""
    with grpc.insecure_channel(address) as channel:
        stub = bench_pb2_grpc.EchoServiceStub(channel)
        request = bench_pb2.EchoRequest(payload=b"x" * 64)
        for _ in range(100):
            stub.Echo(request)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            stub.Echo(request)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, measure, check; the figures as a dict."""
    now = dt.datetime.now(dt.UTC)
    people = population(args.profiles, now, args.seed)
    started = time.perf_counter()
    projection = Projection()
    projection.apply(feed(people), 1, utc_day(now))
    projection.settle()
    built_s = time.perf_counter() - started
    bytes_per_profile = projection.nbytes() / projection.total
    sample = subjects(people, min(args.sample, args.profiles), now)
    results = []
    for text in RULES:
        rule = parse_rule(text)
        estimate(projection, rule, {}, now)  # warm-up
        times = []
        for _ in range(args.repeats):
            begun = time.perf_counter()
            result = estimate(projection, rule, {}, now)
            times.append(time.perf_counter() - begun)
        compiled = compile_rule(rule)
        begun = time.perf_counter()
        chosen = [compiled(subject) for subject in sample]
        per_profile_s = (time.perf_counter() - begun) / len(sample)
        rows = members(projection, rule, {}, now)[: len(sample)]
        if chosen != rows.tolist():
            raise AssertionError(f"per-profile and projection members differ for {text}")
        estimate_ms = statistics.median(times) * 1000
        results.append(
            {
                "rule": text,
                "members": result.members,
                "estimate_ms": estimate_ms,
                "per_profile_us": per_profile_s * 1e6,
                "per_profile_ms_extrapolated": per_profile_s * projection.total * 1000,
                "speedup": per_profile_s * projection.total * 1000 / estimate_ms,
            }
        )
    return {
        "profiles": projection.total,
        "events": int(people["events"].sum()),
        "build_s": built_s,
        "bytes_per_profile": bytes_per_profile,
        "series_entries": sum(s.n for s in projection.series.values()),
        "rules": results,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print; 0 when every figure meets its aim."""
    parser = argparse.ArgumentParser(prog="python -m bench.segments", description=__doc__)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="profiles evaluated one by one")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--echo", action="store_true", help="also measure the echo RPC's p50")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    print(f"building the projection of {args.profiles:,} synthetic profiles...", file=sys.stderr)
    figures = run(args)
    if args.echo:
        from bench.run import echo_server

        with echo_server() as address:
            figures["echo_p50_ms"] = echo_p50_ms(address)
    print(
        f"\nSegments: EstimateSize over {figures['profiles']:,} profiles "
        f"({figures['events']:,} events, {figures['series_entries']:,} series entries; "
        f"built in {figures['build_s']:.1f} s)"
    )
    print(f"projection: {figures['bytes_per_profile']:.0f} bytes/profile (aim < 300)")
    echo = figures.get("echo_p50_ms")
    header = f"{'estimate ms':>12} {'per-profile ms':>15} {'speedup':>8}"
    print(header + (f" {'x echo':>7}" if echo else "") + "  rule")
    for item in figures["rules"]:
        line = (
            f"{item['estimate_ms']:12.1f} {item['per_profile_ms_extrapolated']:15.0f} "
            f"{item['speedup']:7.0f}x"
        )
        if echo:
            line += f" {item['estimate_ms'] / echo:7.0f}"
        print(line + f"  {item['rule']}")
    worst = max(item["estimate_ms"] for item in figures["rules"])
    slowest = min(item["speedup"] for item in figures["rules"])
    print(
        f"aims: estimate < 100 ms: {worst:.1f} ms; bytes/profile < 300: "
        f"{figures['bytes_per_profile']:.0f}; speedup >= 50x: {slowest:.0f}x"
        + (f"; echo p50 {echo:.3f} ms" if echo else "")
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    met = worst < 100 and figures["bytes_per_profile"] < 300 and slowest >= 50
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
