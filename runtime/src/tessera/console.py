"""What the `tessera` command prints: tables for people, JSON and YAML for programs.

Tables are drawn with rich; JSON and YAML are proto JSON with the proto field
names (`preserving_proto_field_name`), as `tessera decide` and the files of
`tessera apply` use them. A failed call is one line: its gRPC status and the
service's message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

if TYPE_CHECKING:  # rich is imported when something is printed: `tessera serve` needs none of it
    from rich.console import Console
    from rich.table import Table

OUTPUTS = ("table", "json", "yaml")


def console() -> Console:
    """Standard output as rich sees it: colour and the terminal's width on a terminal.

    Into a pipe or file, tables take the width they need (like `kubectl get`),
    so what a script or a diff reads is never wrapped.
    """
    from rich.console import Console

    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 1000
    return out


def print_data(data: Any, output: str) -> None:
    """`data` (plain dicts and lists) as JSON or YAML on standard output."""
    if output == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(
            yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
        )


def error_line(error: grpc.RpcError, address: str) -> str:
    """One line for a failed call: status and message, and what to do when nothing listens."""
    call: Any = error  # a grpc.Call as well
    line = f"{call.code().name}: {call.details()}"
    if call.code() == grpc.StatusCode.UNAVAILABLE:
        line += (
            f" (is the suite running at {address}? Start it with `make run` or `tessera up`,"
            " or name the address with --address or TESSERA_*_ADDRESS)"
        )
    return line


def table(*columns: str, whole: Iterable[str] = ("KEY",)) -> Table:
    """A table with a header row and no borders, like `kubectl get`.

    The `whole` columns (keys, ids) are never wrapped; the others wrap at
    spaces when the terminal is narrow.
    """
    from rich import box
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    kept = set(whole)
    for column in columns:
        if column in kept:
            grid.add_column(column, no_wrap=True)
        else:
            grid.add_column(column, overflow="fold", min_width=min(len(column), 10) + 2)
    return grid


def show(*renderables: Any) -> None:
    """Print tables and text on standard output, without the padding rich leaves at line ends."""
    from rich.measure import Measurement

    out = console()
    # Narrower than its narrowest form, rich would leave columns out: rather
    # let the lines run long, as `kubectl get` does.
    unbounded = out.options.update_width(10_000)
    needed = max((Measurement.get(out, unbounded, r).minimum for r in renderables), default=0)
    out.width = max(out.width, needed)
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    sys.stdout.write(text + "\n")


STATUS_STYLES = {"running": "green", "paused": "yellow", "stopped": "red", "draft": "dim"}


def status(text: str) -> Any:
    """A status word, coloured on a terminal (running green, stopped red)."""
    from rich.text import Text

    return Text(text, style=STATUS_STYLES.get(text, ""))


def details(rows: Iterable[tuple[str, str]]) -> Table:
    """Field and value, one per row: one thing shown whole."""
    from rich.table import Table

    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, text in rows:
        grid.add_row(label, text)
    return grid


def when(stamp: Any) -> str:
    """A Timestamp as `2026-05-01 09:30:00 UTC`; empty when unset."""
    if not (stamp.seconds or stamp.nanos):
        return ""
    moment: dt.datetime = stamp.ToDatetime(tzinfo=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def enum_text(field: FieldDescriptor, number: int) -> str:
    """An enum value without its type's prefix, lowercased: CAMPAIGN_STATUS_RUNNING -> running."""
    enum = field.enum_type
    assert enum is not None
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    return value.name.removeprefix(prefix).lower()


def plain_json(value: Any) -> str:
    """Compact JSON on one line, keys sorted, whole numbers without `.0` (Struct numbers are
    doubles)."""

    def whole(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer() and abs(item) < 2**53:
            return int(item)
        if isinstance(item, dict):
            return {k: whole(v) for k, v in item.items()}
        if isinstance(item, list):
            return [whole(v) for v in item]
        return item

    return json.dumps(whole(value), ensure_ascii=False, sort_keys=True)


def number(value: float) -> str:
    """A number as people write it: 9, 0.5, 0.0241."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def value_text(field: FieldDescriptor, value: Any) -> str:
    """One (non-repeated) value of `field`, on one line."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_text(field, value)
    if field.message_type is not None:
        name = field.message_type.full_name
        if name == "google.protobuf.Timestamp":
            return when(value)
        if name == "tessera.common.v1.Identity":  # as --identity takes it
            return f"{value.type}={value.value}"
        if name == "tessera.profiles.v1.ExportedIdentity":
            hashed = f" (hashed: {value.hash_method})" if value.hashed else ""
            return f"{value.type}={value.value}{hashed}"
        if name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.Duration"):
            return plain_json(json_format.MessageToDict(value))
        return inline(value)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return number(value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "yes" if value else "no"
    return str(value)


def field_text(field: FieldDescriptor, value: Any) -> str:
    """A field's whole value: a repeated field or map gives one line per item."""
    nested = field.message_type
    if nested is not None and nested.GetOptions().map_entry:
        value_field = nested.fields_by_name["value"]
        return "\n".join(f"{k}: {value_text(value_field, v)}" for k, v in sorted(value.items()))
    if field.is_repeated:
        simple = field.type != FieldDescriptor.TYPE_MESSAGE
        return (", " if simple else "\n").join(value_text(field, item) for item in value)
    return value_text(field, value)


def inline(message: Message) -> str:
    """A message's set fields on one line: `key: juicer-banner, weight: 9`."""
    parts = []
    for field, value in message.ListFields():
        text = field_text(field, value).replace("\n", "; ")
        parts.append(f"{field.name}: {text}")
    return ", ".join(parts)


def rows(message: Message, prefix: str = "", skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Every set field of `message` as (dotted name, text); nested messages flattened.

    A repeated message (variants, cart, identities) keeps one line per item.
    """
    skipped = set(skip)
    result: list[tuple[str, str]] = []
    for field, value in message.ListFields():
        label = f"{prefix}{field.name}"
        if label in skipped:
            continue
        nested = field.message_type
        if (
            nested is not None
            and not field.is_repeated
            and not nested.full_name.startswith("google.protobuf.")
        ):
            result += rows(value, f"{label}.", skipped)
        else:
            result.append((label, field_text(field, value)))
    return result
