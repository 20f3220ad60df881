"""`python -m bench.evaluate`: 100 segments evaluated against one profile, in process.

What EvaluateSegments does per call after fetching the profile, and what
the decision service does in process per Decide: 100 segments of the
shapes people write (trait lists and prefixes, event windows with and
without filters, sums, `days_since`, identities, session and features,
segments built on segments, negations) compiled once
(`compile_segments`), then evaluated against one busy profile. Printed:

- **evaluate**: `CompiledSegments.evaluate(subject)`, the rules alone, on
  a subject whose history is held as plain values, with nothing kept from
  the call before (each window computed afresh, once per call however many
  segments read it); median and 99th percentile over `--calls` calls after
  a warm-up;
- **with conversion**: the same plus `subject_from_profile`, which turns
  the profile message (hot session, features, and its event history: about
  130 series) into what rules read, as both services do per call;
- the ratio of each to the echo RPC's median of the same run (`--echo`).

The profile is written the way the profile service writes it (its own
domain code: 200 events over 90 days, shop-like, bounded to 128 series, the
"200 events" row of docs/rules.md's table), so the history is as large as a
busy visitor's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import random
import statistics
import sys
import time
from typing import Any

from tessera.common.v1 import common_pb2
from tessera.profiles.domain.event_history import EventHistory, add_event
from tessera.profiles.domain.features import compute_features
from tessera.profiles.domain.history import History, add_to_history
from tessera.profiles.domain.model import EventData, IdentityKey
from tessera.profiles.domain.profile import Profile
from tessera.profiles.transport.convert import profile_message
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.domain import (
    CompiledSegments,
    DailySeries,
    EventHistoryView,
    SegmentDefinition,
    compile_segments,
    parse_rule,
)
from tessera.segments.transport.convert import subject_from_profile

CATEGORIES = ("kitchen", "juicers", "garden", "tools", "toys", "books", "audio", "phones")
CHANNELS = (common_pb2.CHANNEL_WEB, common_pb2.CHANNEL_APP, common_pb2.CHANNEL_STORE)
AIM_US = 250.0


def rules() -> list[tuple[str, str]]:
    """100 (key, rule) pairs of the shapes segments take; some build on others."""
    out: list[tuple[str, str]] = []
    windows = (7, 30, 90, 365)
    for i, category in enumerate(CATEGORIES):
        window = windows[i % len(windows)]
        out.append(
            (
                f"bought-{category}",
                f'count(purchase where category == "{category}", within={window}d) >= 1',
            )
        )
        out.append(
            (
                f"browsed-{category}",
                f'count(product_view where category == "{category}", within=30d) >= 3 '
                f'and count(purchase where category == "{category}", within=30d) == 0',
            )
        )
        out.append(
            (
                f"hot-{category}",
                f'session.category_views("{category}") >= 2 '
                f'or feature.interest("{category}") > 0.5',
            )
        )
    for i, threshold in enumerate((50, 100, 250, 500, 1000, 2500)):
        out.append((f"spent-{i}", f"sum(purchase.revenue, within=365d) > {threshold}"))
        out.append(
            (
                f"store-spent-{i}",
                f'sum(purchase.revenue where channel == "store", within=90d) >= {threshold / 5}',
            )
        )
    countries = (["FR", "BE"], ["DE", "AT"], ["ES", "PT"], ["IT"], ["GB", "IE"], ["NL"])
    for i, group in enumerate(countries):
        listed = ", ".join(f'"{c}"' for c in group)
        out.append((f"region-{i}", f"trait.country in [{listed}]"))
        out.append(
            (
                f"region-{i}-new",
                f'segment("region-{i}") and days_since(trait.signup_date) <= {15 * (i + 1)}',
            )
        )
    for i, days in enumerate((7, 30, 90, 180, 365)):
        out.append((f"tenure-{i}", f"days_since(trait.signup_date) > {days}"))
        out.append((f"recent-buyer-{i}", f"feature.rfm.recency_days <= {days}"))
    for i, prefix in enumerate(("Head", "Director", "VP", "Chief")):
        out.append((f"title-{i}", f'trait.job_title starts_with "{prefix}"'))
        out.append((f"title-has-{i}", f'trait.job_title contains "{prefix}"'))
    for name in ("email", "app_install", "crm_id", "device"):
        out.append((f"known-{name}", f'has_identity("{name}")'))
    out.extend(
        [
            ("app-active", 'has_identity("app_install") and count(app_open, within=7d) >= 3'),
            ("crm-contacted", 'count(crm_call where channel == "call_center", within=90d) >= 1'),
            ("vip", 'trait.plan == "pro" and feature.lifetime_value > 500'),
            ("frequent", "feature.rfm.frequency >= 5"),
            ("big-cart", "session.cart_value > 100 or session.cart_size >= 3"),
            ("engaged-now", "session.page_views >= 5 and session.time_spent_ms > 60000"),
            ("searcher", 'session.searched("juicer") or session.searches >= 3'),
            ("likely", "feature.conversion_probability > 0.2"),
            ("young-family", "trait.age >= 25 and trait.age < 40 and trait.household_size >= 3"),
            ("paid", 'trait.acquisition_channel in ["paid_search", "affiliate", "social"]'),
            ("not-free", 'not (trait.plan == "free")'),
            ("lapsed", "count(purchase, within=365d) >= 1 and count(purchase, within=90d) == 0"),
            ("mobile-web", 'context.device == "mobile" and channel == "web"'),
            ("paris", 'trait.country == "FR" and trait.postal_code starts_with "75"'),
            ("viewer", 'session.product_views("sku-1") >= 1'),
            ("retail-b2b", 'trait.company.sector in ["retail", "hospitality"]'),
            ("juicer-prospect", 'segment("browsed-juicers") and not segment("bought-juicers")'),
            ("valuable-new", 'segment("spent-2") and segment("region-0-new")'),
        ]
    )
    while len(out) < 100:
        i = len(out)
        out.append((f"views-{i}", f"count(page_view, within={1 + i % 30}d) >= {i % 7}"))
    return out[:100]


def busy_profile(now: dt.datetime, seed: int = 0) -> profiles_pb2.Profile:
    """A profile with 200 events over 90 days, a live session and features."""
    rng = random.Random(seed)
    history, event_history = History(), EventHistory()
    for n in range(200):
        kind = rng.choices(
            ["page_view", "product_view", "add_to_cart", "purchase", "app_open"],
            [45, 30, 10, 8, 7],
        )[0]
        properties: dict[str, Any] = {"category": rng.choice(CATEGORIES)}
        if kind in ("product_view", "add_to_cart", "purchase"):
            properties["product_id"] = f"sku-{rng.randrange(60)}"
            properties["price"] = rng.randrange(500, 20000) / 100
        if kind == "purchase":
            properties["revenue"] = properties["price"]
        event = EventData(
            event_id=f"e{n}",
            type=kind,
            timestamp=now - dt.timedelta(seconds=rng.randrange(90 * 86_400)),
            channel=rng.choice(CHANNELS),
            properties=properties,
        )
        history = add_to_history(history, event)
        event_history = add_event(event_history, event, now)
    message = profile_message(
        Profile(
            profile_id="a" * 32,
            identities=(IdentityKey("cookie", "c"), IdentityKey("email", "e")),
            traits={
                "country": "FR",
                "plan": "pro",
                "signup_date": (now - dt.timedelta(days=40)).date().isoformat(),
                "job_title": "Head of Growth",
                "age": 31,
                "household_size": 3,
                "postal_code": "75011",
                "acquisition_channel": "paid_search",
                "company": {"sector": "retail", "employees": 400},
            },
            session=None,
            features=compute_features(None, history, now),
            created_at=now,
            updated_at=now,
            event_history=event_history,
        )
    )
    session = message.session
    session.page_views, session.time_spent_ms, session.events = 9, 240_000, 14
    session.category_views.update({"juicers": 3, "kitchen": 1})
    session.product_views.update({"sku-1": 2, "sku-7": 1})
    session.searches.extend(["cold press juicer", "citrus"])
    session.cart.add(product_id="sku-1", category="juicers", quantity=1, price=129.0)
    return message


def _timed(call: Any, calls: int) -> list[float]:
    for _ in range(min(calls, 1000)):
        call()
    times = []
    clock = time.perf_counter
    for _ in range(calls):
        started = clock()
        call()
        times.append(clock() - started)
    return times


def _percentile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(calls: int) -> dict[str, Any]:
    """Compile the 100 segments, build the profile, time both paths; the figures."""
    now = dt.datetime.now(dt.UTC)
    segments: CompiledSegments = compile_segments(
        SegmentDefinition(key, parse_rule(text)) for key, text in rules()
    )
    profile = busy_profile(now)
    context = common_pb2.Event().properties  # an empty Struct
    context.update({"device": "mobile"})
    subject = subject_from_profile(profile, common_pb2.CHANNEL_WEB, context, now)
    # The history held as plain values, every series converted: the subject
    # as it sits in memory, so that "evaluate" times the rules alone.
    history = EventHistoryView(
        today=subject.history.today,
        series={
            (s.event_type, s.filter_property, s.filter_value): DailySeries(
                tuple(s.days), tuple(s.counts), {p.property: tuple(p.values) for p in s.sums}
            )
            for s in profile.event_history.series
        },
    )
    subject = dataclasses.replace(subject, history=history)
    members = segments.evaluate(subject)

    def evaluate_fresh() -> list[str]:
        subject.derived.clear()  # nothing kept from the call before
        return segments.evaluate(subject)

    evaluate = _timed(evaluate_fresh, calls)

    def convert_and_evaluate() -> list[str]:
        return segments.evaluate(
            subject_from_profile(profile, common_pb2.CHANNEL_WEB, context, now)
        )

    with_conversion = _timed(convert_and_evaluate, calls)
    return {
        "segments": len(segments),
        "members": len(members),
        "series": len(profile.event_history.series),
        "evaluate_p50_us": statistics.median(evaluate) * 1e6,
        "evaluate_p99_us": _percentile(evaluate, 0.99) * 1e6,
        "with_conversion_p50_us": statistics.median(with_conversion) * 1e6,
        "with_conversion_p99_us": _percentile(with_conversion, 0.99) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print; 0 when 100 segments take under 250 µs (median)."""
    parser = argparse.ArgumentParser(prog="python -m bench.evaluate", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--echo", action="store_true", help="also measure the echo RPC's p50")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    figures = run(args.calls)
    if args.echo:
        from bench.run import echo_server
        from bench.segments import echo_p50_ms

        with echo_server() as address:
            figures["echo_p50_us"] = echo_p50_ms(address) * 1000
    echo = figures.get("echo_p50_us")
    print(
        f"\nSegments: {figures['segments']} segments against one profile, in process "
        f"({figures['series']} event series, member of {figures['members']})"
    )
    print(f"{'':18} {'p50 µs':>8} {'p99 µs':>8}" + (f" {'p50 x echo':>11}" if echo else ""))
    for label, name in (("evaluate", "evaluate"), ("with conversion", "with_conversion")):
        p50, p99 = figures[f"{name}_p50_us"], figures[f"{name}_p99_us"]
        print(f"{label:18} {p50:8.1f} {p99:8.1f}" + (f" {p50 / echo:11.2f}" if echo else ""))
    print(
        f"aim: 100 segments < {AIM_US:.0f} µs: {figures['evaluate_p50_us']:.1f} µs"
        + (f"; echo p50 {echo:.1f} µs" if echo else "")
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return 0 if figures["evaluate_p50_us"] < AIM_US else 1


if __name__ == "__main__":
    sys.exit(main())
