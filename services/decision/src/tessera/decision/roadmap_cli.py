"""`tessera roadmap`: the campaigns per placement on a calendar, with their overlaps.

tessera roadmap                          the next 13 weeks, every placement
tessera roadmap --placement home_hero    one placement (repeatable)
tessera roadmap --months 12 --from 2026-09-01
tessera roadmap -o json                  GetRoadmap's answer, for programs

Calls DecisionService.GetRoadmap on a running suite (TESSERA_DECISION_ADDRESS,
or --address). Each placement is a table: a row per campaign (priority,
conflict group, status) and a column per week or month, with a bar where the
campaign's schedule is live; below it, the pairs of campaigns that collide
there, with the people in both audiences (SegmentService.EstimateSize) and
which of the two those people get. docs/roadmap.md shows a sample.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import grpc

from tessera.channels import CHANNEL_NAMES

LIVE, IDLE = "██", "▒▒"
"""A running campaign's bar; a draft or paused one's (live only once it runs)."""
DEFAULT_WEEKS = 13
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def configure(commands: Any) -> argparse.ArgumentParser:
    """Add `roadmap` and its options to `tessera`'s subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "roadmap",
        help="campaigns per placement on a calendar, with their overlaps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--placement",
        action="append",
        default=[],
        help="only this placement; repeatable (default: every placement)",
    )
    parser.add_argument(
        "--from",
        dest="start",
        type=dt.date.fromisoformat,
        help="first day, YYYY-MM-DD (default: the Monday of this week, or the 1st with --months)",
    )
    span = parser.add_mutually_exclusive_group()
    span.add_argument("--weeks", type=int, help=f"a column per week (default: {DEFAULT_WEEKS})")
    span.add_argument("--months", type=int, help="a column per month instead")
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml"),
        default="table",
        help="table (default), or GetRoadmap's answer as json / yaml",
    )
    parser.add_argument("--address", help="decision service host:port (default: from settings)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default: 10)")
    return parser


def columns(
    start: dt.date | None, weeks: int | None, months: int | None, today: dt.date
) -> list[tuple[dt.date, dt.date]]:
    """The calendar's columns as [first day, day after the last)."""
    if months is not None:
        first = start or today.replace(day=1)
        spans = []
        for _ in range(months):
            after = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            spans.append((first, after))
            first = after
        return spans
    first = start or today - dt.timedelta(days=today.weekday())
    count = weeks if weeks is not None else DEFAULT_WEEKS
    week = dt.timedelta(weeks=1)
    return [(first + week * i, first + week * (i + 1)) for i in range(count)]


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def request_for(
    args: argparse.Namespace, spans: list[tuple[dt.date, dt.date]], now: dt.datetime
) -> Any:
    """The GetRoadmap request for the calendar's span.

    Without --from, the calendar starts on this week's Monday (or the 1st)
    but the roadmap asked for starts now: overlaps are from today on, not
    from a Monday before the campaigns existed.
    """
    from tessera.decision.v1 import decision_pb2

    request = decision_pb2.GetRoadmapRequest(placements=args.placement)
    first = _midnight(spans[0][0])
    request.start_time.FromDatetime(first if args.start is not None else max(first, now))
    request.end_time.FromDatetime(_midnight(spans[-1][1]))
    return request


def whole_roadmap(stub: Any, request: Any, timeout: float) -> Any:
    """Every page of GetRoadmap as one answer, the deadline shared by all the calls."""
    deadline = time.monotonic() + timeout
    reply = stub.GetRoadmap(request, timeout=timeout)
    while reply.next_page_token:
        page_request = type(request)()
        page_request.CopyFrom(request)
        page_request.page_token = reply.next_page_token
        page = stub.GetRoadmap(page_request, timeout=max(0.0, deadline - time.monotonic()))
        reply.campaigns.extend(page.campaigns)
        reply.collisions.extend(page.collisions)
        reply.next_page_token = page.next_page_token
    return reply


def _header(spans: list[tuple[dt.date, dt.date]], by_month: bool) -> list[str]:
    """Column titles: the month over the first column it starts in, then the day."""
    titles = []
    shown_month: tuple[int, int] | None = None
    shown_year: int | None = None
    for first, _ in spans:
        if by_month:
            top = str(first.year) if first.year != shown_year else ""
            shown_year = first.year
            titles.append(f"{top}\n{MONTH_NAMES[first.month - 1]}")
            continue
        month = (first.year, first.month)
        top = MONTH_NAMES[first.month - 1] if month != shown_month else ""
        shown_month = month
        titles.append(f"{top}\n{first.day:02d}")
    return titles


def render(
    reply: Any,
    spans: list[tuple[dt.date, dt.date]],
    by_month: bool,
    out: TextIO,
    asked: Sequence[str] = (),
) -> None:
    """The roadmap as one calendar table per placement (`asked`, or all), with its overlaps."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from tessera.console import status
    from tessera.decision.domain.campaigns import CampaignStatus
    from tessera.decision.domain.roadmap import first_live_day
    from tessera.decision.transport.convert import campaign_from_proto

    console = Console(file=io.StringIO(), highlight=False, soft_wrap=False, width=1000)
    domain = {c.key: campaign_from_proto(c) for c in reply.campaigns}
    first, last = spans[0][0], spans[-1][1] - dt.timedelta(days=1)
    unit = "month" if by_month else "week"
    console.print(
        f"Roadmap {first.isoformat()} to {last.isoformat()}, a column per {unit}: "
        f"{LIVE} live, {IDLE} draft or paused (live once running)"
    )
    placements = sorted({p for c in reply.campaigns for p in c.placements})
    wanted = [p for p in placements if not asked or p in asked]
    if not wanted:
        out.write(console.file.getvalue())  # type: ignore[attr-defined]
        out.write("\nNo campaign is live in this period.\n")
        return
    titles = _header(spans, by_month)
    for placement in wanted:
        grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
        for name in ("CAMPAIGN", "PRI", "GROUP", "STATUS"):
            grid.add_column(name, no_wrap=True, justify="right" if name == "PRI" else "left")
        for title in titles:
            grid.add_column(title, no_wrap=True, width=4 if by_month else 3)
        for campaign in reply.campaigns:
            if placement not in campaign.placements:
                continue
            definition = domain[campaign.key]
            bar = LIVE if definition.status == CampaignStatus.RUNNING else IDLE
            cells = [
                bar
                if first_live_day([definition.schedule], _midnight(a), _midnight(b)) is not None
                else ""
                for a, b in spans
            ]
            grid.add_row(
                campaign.key,
                str(campaign.priority),
                campaign.conflict_group or "-",
                status(definition.status.value),
                *cells,
            )
        console.print()
        console.print(Text(placement, style="bold"))
        console.print(grid)
        _overlaps(console, reply, placement, domain)
    # Without the padding rich leaves at the ends of lines.
    text = console.file.getvalue()  # type: ignore[attr-defined]
    out.write("\n".join(line.rstrip() for line in text.splitlines()) + "\n")


def _overlaps(console: Any, reply: Any, placement: str, domain: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from tessera.decision.domain.roadmap import why_first

    found = [c for c in reply.collisions if placement in c.collision.placements]
    console.print()
    if not found:
        console.print("No overlaps.")
        return
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0))
    for name in ("OVERLAP", "PEOPLE IN BOTH", "FROM", "CHANNELS", "THOSE IN BOTH GET"):
        grid.add_column(name, no_wrap=True, justify="right" if name == "PEOPLE IN BOTH" else "left")
    notes = []
    for item in found:
        collision = item.collision
        winner, other = domain[item.campaign_key], domain[collision.campaign_key]
        if collision.estimated_overlap < 0:
            people = "unknown"
        else:
            people = f"{collision.estimated_overlap:,} ({collision.overlap_fraction:.1%})"
        if collision.size_note:
            if collision.size_note not in notes:
                notes.append(collision.size_note)
            people += " " + "*" * (notes.index(collision.size_note) + 1)
        why = why_first(winner, other)
        channels = ", ".join(_channel(c) for c in collision.channels) or "all"
        grid.add_row(
            f"{winner.key} vs {other.key}",
            people,
            collision.first_day.ToDatetime().date().isoformat(),
            channels,
            f"{winner.key} ({why})",
        )
    console.print(grid)
    for index, note in enumerate(notes, 1):
        console.print(f"{'*' * index} {note}", soft_wrap=True)


def _channel(number: int) -> str:
    return CHANNEL_NAMES.get(number, str(number))


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Ask GetRoadmap, print; 0 when answered, 1 otherwise (said on `err`)."""
    from tessera import console as output
    from tessera.decision.v1 import decision_pb2_grpc
    from tessera.settings import RuntimeSettings

    out = out or sys.stdout
    err = err or sys.stderr
    for name in ("weeks", "months"):
        count = getattr(args, name)
        if count is not None and not 1 <= count <= (104 if name == "weeks" else 24):
            print(f"--{name} must be 1 to {104 if name == 'weeks' else 24}", file=err)
            return 2
    if not args.timeout > 0:
        print("--timeout must be more than 0 seconds", file=err)
        return 2
    now = dt.datetime.now(dt.UTC)
    try:
        spans = columns(args.start, args.weeks, args.months, now.date())
    except OverflowError:  # past 9999-12-31, the last day a date (and a Timestamp) holds
        print(
            f"--from {args.start}: the calendar ends on 9999-12-31; "
            "start earlier or ask for fewer columns",
            file=err,
        )
        return 2
    address = args.address or RuntimeSettings().address_of("decision")
    request = request_for(args, spans, now)
    with grpc.insecure_channel(address) as channel:
        try:
            reply = whole_roadmap(
                decision_pb2_grpc.DecisionServiceStub(channel), request, args.timeout
            )
        except grpc.RpcError as error:
            print(output.error_line(error, address), file=err)
            return 1
    if args.output != "table":
        from google.protobuf import json_format

        data = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        if args.output == "json":
            import json

            print(json.dumps(data, indent=2, ensure_ascii=False), file=out)
        else:
            import yaml

            out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return 0
    render(reply, spans, args.months is not None, out, args.placement)
    return 0
