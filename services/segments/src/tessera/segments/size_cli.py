"""`tessera segments size`: the size and value of a segment or a rule, as a table.

tessera segments size fr-buyers
tessera segments size 'trait.country == "FR" and count(purchase, within=30d) >= 1'
tessera segments size vip --goal signup --window 7

Calls EstimateSize on a running segment service (TESSERA_SEGMENTS_ADDRESS,
or the default port) and prints members, share of all profiles, conversion
rate and revenue per member for the goal and window, and what a rule reads
of a live visit that sizing counts as between visits.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import grpc

from tessera.segments.domain.nodes import SEGMENT_KEY

_NOT_KEYS = frozenset({"true", "false", "null"})


def configure(commands: Any) -> None:
    """Add `size` and its options to the subcommands of `segments` (list, get, delete)."""
    size = commands.add_parser(
        "size",
        help="members and value of a segment or rule",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size.add_argument(
        "target",
        help="a segment key, or a rule (text, or JsonLogic starting with '{')",
    )
    size.add_argument(
        "--rule", action="store_true", help="read TARGET as a rule even if it looks like a key"
    )
    size.add_argument("--goal", default="", help="goal event type (default: purchase)")
    size.add_argument("--window", type=int, default=0, help="days of goal events (default: 30)")
    size.add_argument("--address", help="segment service host:port (default: from settings)")
    size.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default: 10)")


def request_for(args: argparse.Namespace) -> Any:
    """The EstimateSize request the arguments describe."""
    from tessera.segments.v1 import segments_pb2

    request = segments_pb2.EstimateSizeRequest(goal_event_type=args.goal, window_days=args.window)
    target = args.target.strip()
    if not args.rule and SEGMENT_KEY.match(target) and target not in _NOT_KEYS:
        request.segment_key = target
    elif target.startswith("{"):
        request.rule.json_logic = target
    else:
        request.rule.text = target
    return request


def render(reply: Any, target: str, out: TextIO) -> None:
    """The answer as a table (rich), then what was counted as between visits."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False, soft_wrap=False)
    table = Table(title=f"Size and value of {target}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row(
        "members", f"{reply.members:,}", f"{reply.fraction:.1%} of {reply.total:,} profiles"
    )
    table.add_row(
        "converted",
        f"{reply.converters:,}",
        f"{reply.conversion_rate:.1%}: {reply.goal_event_type} in {reply.window_days} days",
    )
    table.add_row("revenue", f"{reply.revenue:,.2f}", f"{reply.revenue_per_member:,.2f} a member")
    table.add_row("as of", f"#{reply.as_of_sequence:,}", "last change feed record applied")
    console.print(table)
    for item in reply.left_out:
        console.print(f"[bold]{item.attribute}[/bold] {item.reason}.", markup=True)


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Ask, print; 0 when answered, 1 otherwise (said on `err`)."""
    from tessera.segments.v1 import segments_pb2_grpc
    from tessera.settings import RuntimeSettings

    address = args.address or RuntimeSettings().address_of("segments")
    request = request_for(args)
    with grpc.insecure_channel(address) as channel:
        try:
            reply = segments_pb2_grpc.SegmentServiceStub(channel).EstimateSize(
                request, timeout=args.timeout
            )
        except grpc.RpcError as error:
            call: Any = error
            print(f"{call.code().name}: {call.details()}", file=err)
            if call.code() == grpc.StatusCode.UNAVAILABLE:
                print(f"Is the suite running at {address}? Start it with `make run`.", file=err)
            return 1
    render(reply, args.target if request.segment_key else "the rule", out)
    return 0
