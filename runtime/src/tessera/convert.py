"""Conversions between protobuf well-known types and plain Python values."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from tessera.channels import CHANNEL_NAMES
from tessera.common.v1 import common_pb2
from tessera.definitions import Definition
from tessera.errors import InvalidArgument

M = TypeVar("M", bound=Message)


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a dict; whole numbers come back as int.

    What `json_format.MessageToDict` gives (then whole numbers as int), read
    from the Struct directly: it runs on every event and every profile a
    rule evaluates, and the generic JSON path cost several times more.
    """
    return {key: _plain(value) for key, value in struct.fields.items()}


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            # As json_format refuses it: such a Value has no JSON form.
            name = "NaN" if math.isnan(number) else "Infinity"
            raise ValueError(
                f"Fail to serialize {name} for Value.number_value, which would parse as "
                "string_value"
            )
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    return None  # null_value, or a Value with nothing set (json_format reads it as null)


def dict_to_struct(values: dict[str, Any] | None) -> struct_pb2.Struct:
    """A dict as a Struct."""
    struct = struct_pb2.Struct()
    if values:
        struct.update(values)
    return struct


def timestamp_to_datetime(stamp: timestamp_pb2.Timestamp) -> dt.datetime | None:
    """A Timestamp as an aware UTC datetime; None when unset (zero)."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=dt.UTC)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def datetime_to_timestamp(value: dt.datetime | str | None) -> timestamp_pb2.Timestamp:
    """A datetime (or ISO string) as a Timestamp; unset for None."""
    stamp = timestamp_pb2.Timestamp()
    if value is None:
        return stamp
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    # Integer arithmetic on the difference from the epoch: what
    # Timestamp.FromDatetime computes, at a sixth of its cost (every profile
    # read converts several times).
    since = value - _EPOCH
    stamp.seconds = since.days * 86_400 + since.seconds
    stamp.nanos = since.microseconds * 1000
    return stamp


def check_channel(value: int, field: str) -> int:
    """`value` if it is a known Channel, else INVALID_ARGUMENT for `field`."""
    if value != common_pb2.CHANNEL_UNSPECIFIED and value not in CHANNEL_NAMES:
        raise InvalidArgument(f"unknown channel {value}", field=field)
    return value


def to_json(message: Message) -> str:
    """A message as canonical proto JSON, for storage."""
    return json_format.MessageToJson(message, indent=None, sort_keys=True)


def from_json(text: str, message: M) -> M:
    """Parse proto JSON stored by `to_json` into `message`, tolerating unknown fields."""
    return json_format.Parse(text, message, ignore_unknown_fields=True)


def stored_message(definition: Definition, message: M) -> M:
    """A stored definition as its message, with the service-set version and times.

    The message type must have `version`, `created_at` and `updated_at`, as
    Segment, Experiment and Campaign do.
    """
    from_json(definition.body, message)
    message.version = definition.version  # type: ignore[attr-defined]
    message.created_at.CopyFrom(datetime_to_timestamp(definition.created_at))  # type: ignore[attr-defined]
    message.updated_at.CopyFrom(datetime_to_timestamp(definition.updated_at))  # type: ignore[attr-defined]
    return message


SERVICE_SET_FIELDS = ("version", "created_at", "updated_at")
"""Fields of a definition message that the service sets on every write."""


def as_written(message: M) -> M:
    """A copy of a definition message without the fields the service sets."""
    copy = type(message)()
    copy.CopyFrom(message)
    for name in SERVICE_SET_FIELDS:
        copy.ClearField(name)
    return copy
