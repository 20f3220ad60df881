"""JSON for stored values (SQL JSON columns, hot-store values): orjson, as the
standard library would write and read it.

Profiles' sessions and histories are decoded and encoded on every event and
every read; orjson does that several times faster than the `json` module.
The output is the same JSON (compact, no NaN or Infinity, which no stored
value holds: numbers are validated finite before they are stored). Anything
orjson refuses that `json` accepts (an integer past 64 bits, a non-finite
number written by an older release) falls back to `json`, so nothing that
used to be stored or read stops working.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS  # int keys become strings, as json.dumps makes them


def dumps(value: Any) -> str:
    """`value` as JSON text."""
    return dump_bytes(value).decode()


def dump_bytes(value: Any) -> bytes:
    """`value` as UTF-8 JSON."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def loads(text: str | bytes) -> Any:
    """The value of JSON text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
