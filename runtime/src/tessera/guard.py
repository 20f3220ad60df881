"""The guard at the edge: one check of every request before a handler sees it.

A client can send bytes that do not decode, numbers that are not finite,
timestamps protobuf cannot represent, NUL characters that PostgreSQL refuses,
and sizes no shop ever needs. Each of those would otherwise surface deep in a
handler or a store as INTERNAL, or worse be stored and break later reads. The
guard walks the decoded message by its descriptor, so every RPC and every
field added later is covered without a line of its own, and answers the
first problem as `InvalidArgument` (or `ResourceExhausted` for sizes) naming
the field path (`event.properties.price`, `identities[3].value`).

What it cannot know from the type alone (a key's syntax, a weight's range,
which fields are required) stays with the domain; the guard only makes sure
that what reaches the domain is representable everywhere it will be stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from tessera.errors import InvalidArgument, ResourceExhausted

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
# google.protobuf.Duration's documented range: +-10,000 years.
DURATION_MAX_SECONDS = 315_576_000_000

# Strings that hold prose rather than an identifier get the longer limit;
# rules get their own.
PROSE_FIELDS = frozenset({"name", "description", "page_token"})
"""Also `page_token`: a GetRoadmap token holds a key, a period and more, base64-encoded,
longer than an id."""
RULE_FIELDS = frozenset({"text", "json_logic"})


@dataclass(frozen=True)
class Refused:
    """A message of a client stream that the guard refused, handed on in its place.

    One bad message need not end a stream whose other messages are good: the
    handler gets this instead of the message and decides (TrackStream counts
    it as rejected and goes on; IdentifyStream answers that request with the
    error).
    """

    error: InvalidArgument | ResourceExhausted
    message: Message | None = None
    """The message as decoded, when it decoded: a handler may read its id."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may hold; each is a TESSERA_MAX_* setting."""

    id_chars: int = 256
    """Ids, keys, identity values, event types, placements: any short string."""
    prose_chars: int = 4096
    """Names and descriptions."""
    rule_chars: int = 65_536
    """A segment rule, text or JsonLogic."""
    identities: int = 32
    """Identities in one request or event."""
    placements: int = 32
    """Placements in one Decide."""
    repeated: int = 1000
    """Items of any other repeated field (variants, keys, exposures)."""
    struct_bytes: int = 65_536
    """Encoded size of one Struct (traits, properties, context, payload)."""
    struct_entries: int = 1000
    """Keys and list items in one Struct, counted over its whole tree."""
    struct_depth: int = 8
    """Nesting of objects and lists inside one Struct."""
    number: float = 2.0**53
    """Largest magnitude of a number in a Struct: JSON's exact integer range."""


def decode(parse: Callable[[bytes], Message], data: bytes) -> Message:
    """Parse request bytes, answering what cannot be decoded as INVALID_ARGUMENT.

    Invalid UTF-8 in a string and nesting deeper than protobuf's recursion
    limit both fail here, before any handler runs.
    """
    try:
        return parse(data)
    except (DecodeError, RecursionError, ValueError) as error:
        raise InvalidArgument(
            f"the request cannot be decoded ({error}); strings must be valid UTF-8 "
            "and messages nested at most 100 deep",
            field="request",
        ) from None


def check(message: Message, limits: Limits, path: str = "") -> None:
    """Raise for the first field of `message` no handler or store could take."""
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.is_repeated:
            _check_repeated(field, value, limits, name)
        else:
            _check_value(field, value, limits, name)


_MAP_ENTRIES: dict[Descriptor, bool] = {}
"""Whether each message type of a repeated field is a map's entry: asked of its options
once, not per request."""


def _is_map_entry(message_type: Descriptor) -> bool:
    known = _MAP_ENTRIES.get(message_type)
    if known is None:
        known = _MAP_ENTRIES[message_type] = bool(message_type.GetOptions().map_entry)
    return known


def _check_repeated(field: FieldDescriptor, values: Any, limits: Limits, path: str) -> None:
    entry = field.message_type
    if entry is not None and _is_map_entry(entry):
        _check_map(entry, values, limits, path)
        return
    name = field.name
    if name == "identities":
        bound = limits.identities
    elif name == "placements":
        bound = limits.placements
    else:
        bound = limits.repeated
    if len(values) > bound:
        raise ResourceExhausted(
            f"holds {len(values)} items; at most {bound} are allowed", field=path
        )
    for index, value in enumerate(values):
        _check_value(field, value, limits, f"{path}[{index}]")


def _check_map(entry: Descriptor, values: Any, limits: Limits, path: str) -> None:
    if len(values) > limits.repeated:
        raise ResourceExhausted(
            f"holds {len(values)} entries; at most {limits.repeated} are allowed", field=path
        )
    value_field = entry.fields_by_name["value"]
    for key, value in values.items():
        _check_string(str(key), limits.id_chars, f"{path} key")
        _check_value(value_field, value, limits, f"{path}[{key!r}]")


def _check_value(field: FieldDescriptor, value: Any, limits: Limits, path: str) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        _check_string(value, _string_limit(field.name, limits), path)
    elif kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if not math.isfinite(value):
            raise InvalidArgument(f"must be a finite number, not {value}", field=path)
    elif field.enum_type is not None:
        _check_enum(field.enum_type, value, path)
    elif field.message_type is not None:
        full_name = field.message_type.full_name
        if full_name == "google.protobuf.Struct":
            _check_struct_size(value, limits, path)
            _check_struct(value, limits, path, depth=1, entries=[0])
        elif full_name == "google.protobuf.Timestamp":
            _check_timestamp(value, path)
        elif full_name == "google.protobuf.Duration":
            _check_duration(value, path)
        else:
            check(value, limits, path)


def _string_limit(name: str, limits: Limits) -> int:
    if name in RULE_FIELDS:
        return limits.rule_chars
    if name in PROSE_FIELDS:
        return limits.prose_chars
    return limits.id_chars


def _check_string(value: str, bound: int, path: str) -> None:
    if "\x00" in value:
        raise InvalidArgument("must not contain a NUL character", field=path)
    if len(value) > bound:
        raise InvalidArgument(
            f"is {len(value)} characters long; at most {bound} are allowed", field=path
        )


def _check_enum(enum: EnumDescriptor, value: int, path: str) -> None:
    if value not in enum.values_by_number:
        known = ", ".join(v.name for v in enum.values)
        raise InvalidArgument(f"{value} is not a {enum.name} ({known})", field=path)


def _check_timestamp(value: Any, path: str) -> None:
    if not TIMESTAMP_MIN_SECONDS <= value.seconds <= TIMESTAMP_MAX_SECONDS:
        raise InvalidArgument(
            "must lie between 0001-01-01 and 9999-12-31 (seconds "
            f"{TIMESTAMP_MIN_SECONDS} to {TIMESTAMP_MAX_SECONDS}), not {value.seconds}",
            field=path,
        )
    if not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgument(f"nanos must be 0 to 999,999,999, not {value.nanos}", field=path)


def _check_duration(value: Any, path: str) -> None:
    if abs(value.seconds) > DURATION_MAX_SECONDS:
        raise InvalidArgument(
            f"must be within +-{DURATION_MAX_SECONDS} seconds, not {value.seconds}", field=path
        )
    if abs(value.nanos) >= 1_000_000_000 or (value.seconds * value.nanos) < 0:
        raise InvalidArgument(
            f"nanos must be below one second and of the seconds' sign, not {value.nanos}",
            field=path,
        )


def _check_struct_size(struct: Any, limits: Limits, path: str) -> None:
    size = struct.ByteSize()
    if size > limits.struct_bytes:
        raise ResourceExhausted(
            f"is {size} bytes encoded; at most {limits.struct_bytes} are allowed", field=path
        )


def _check_struct(struct: Any, limits: Limits, path: str, depth: int, entries: list[int]) -> None:
    for key, value in struct.fields.items():
        _check_string(key, limits.id_chars, f"{path} key")
        _check_struct_value(value, limits, f"{path}.{key}", depth, entries)


def _check_struct_value(
    value: Any, limits: Limits, path: str, depth: int, entries: list[int]
) -> None:
    entries[0] += 1
    if entries[0] > limits.struct_entries:
        raise ResourceExhausted(
            f"holds more than {limits.struct_entries} keys and items", field=path
        )
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise InvalidArgument(f"must be a finite number, not {number}", field=path)
        if abs(number) > limits.number:
            raise InvalidArgument(
                f"{number:g} is out of range; numbers must lie within +-{limits.number:.0f}",
                field=path,
            )
    elif kind == "string_value":
        if "\x00" in value.string_value:
            raise InvalidArgument("must not contain a NUL character", field=path)
    elif kind in ("struct_value", "list_value"):
        if depth >= limits.struct_depth:
            raise InvalidArgument(f"nests deeper than {limits.struct_depth} levels", field=path)
        if kind == "struct_value":
            _check_struct(value.struct_value, limits, path, depth + 1, entries)
        else:
            for index, item in enumerate(value.list_value.values):
                _check_struct_value(item, limits, f"{path}[{index}]", depth + 1, entries)
