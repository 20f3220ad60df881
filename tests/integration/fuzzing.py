"""Fuzzing helpers: requests built from descriptors, raw wire bytes, calls, and stored data.

Everything is driven by protobuf descriptors, so an RPC or a field added to
a contract is fuzzed without a line here:

- `typed_requests(descriptor, seed, pool)`: well-typed messages of any
  request type, each field kept from a valid `seed` request, generated with
  extremes for its type (empty, huge, NUL and unicode strings, NaN and
  infinite doubles, integer extremes, enum numbers the contract does not
  define, timestamps out of range, deep and huge Structs, over-long lists),
  or left out; one member of each oneof.
- `raw_requests(descriptor, typed)`: bytes a well-behaved client would never
  send: random bytes, valid messages truncated, flipped or doubled, invalid
  UTF-8 in a string field, wrong wire types, nesting beyond protobuf's
  limit, lengths that lie.
- `call(channel, rpc, requests)`: one call with identity serializers, so the
  bytes reach the server as they are; its status, and how long it took.
- `StoredData`: every row of each service's own tables and every hot-store
  value, to compare before and after a call.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st
from sqlalchemy import Engine, MetaData, Table, select

from tessera import guard

F = FieldDescriptor

# ---------------------------------------------------------------- typed messages

INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}

EXTREME_STRINGS = [
    "",
    " ",
    "\x00",
    "key\x00",
    "é",
    "Ünïcödé ключ 键",
    "👩‍👩‍👧‍👦",
    "\u202ertl",
    "\ufeffbom",
    "\U0010ffff",
    "line\nbreak\r\t",
    "' OR 1=1 --",
    "%s%n{0}",
    "../../etc/passwd",
    "NaN",
    "-1",
    "k" * 40,
    "k" * 41,
    "k" * 64,
    "k" * 65,
    "k" * 129,
    "k" * 256,
    "k" * 257,
    "é" * 257,
    "p" * 4097,
    "r" * 65_537,
]
"""Strings at and beyond every length a guard or a column bounds, and awkward content."""

EXTREME_DOUBLES = [
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    5e-324,
    1e308,
    -1e308,
    2.0**53,
    2.0**53 + 2,
    -(2.0**63),
    1.5,
    -1.0,
]

# Timestamp seconds at and beyond protobuf's range, and the 64-bit extremes.
EXTREME_SECONDS = [
    guard.TIMESTAMP_MIN_SECONDS,
    guard.TIMESTAMP_MIN_SECONDS - 1,
    guard.TIMESTAMP_MAX_SECONDS,
    guard.TIMESTAMP_MAX_SECONDS + 1,
    -1,
    1,
    4_102_444_800,  # 2100: in range, but in the future
    guard.DURATION_MAX_SECONDS + 1,
    -(2**63),
    2**63 - 1,
]
EXTREME_NANOS = [0, 999_999_999, 1_000_000_000, -1, -999_999_999, -(2**31), 2**31 - 1]

# Over-long lists: at and just past the guard's bounds.
MANY = [32, 33, 1000, 1001]

MESSAGE_DEPTH = 6
"""How deep generated messages go (the contracts nest about four deep)."""


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message descriptor."""
    return message_factory.GetMessageClass(descriptor)


def strings(pool: Sequence[str]) -> st.SearchStrategy[str]:
    """Real keys and ids first (lookups hit stored rows), then anything."""
    return st.one_of(
        st.sampled_from(list(pool) or [""]),
        st.from_regex(r"\A[a-z][a-z0-9_-]{0,15}\Z"),
        st.sampled_from(EXTREME_STRINGS),
        # Any code point but lone surrogates, which no client can encode.
        st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    )


RULE_TOKENS = [
    "trait.country",
    "trait.age",
    "trait",
    "context.page",
    "channel",
    "identity.email",
    "session.page_views",
    'session.category_views("juicers")',
    "session.cart",
    "feature.conversion_probability",
    "feature.rfm.recency_days",
    'feature.interest("kitchen")',
    'segment("fuzz-segment")',
    'has_identity("email")',
    "count(purchase, within=30d)",
    "count(purchase, within=0d)",
    "count(purchase, within=99999999999999999999d)",
    "sum(purchase.revenue, within=7d)",
    "count(",
    "within=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not",
    "and",
    "or",
    "contains",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    '"FR"',
    '"\\u0000"',
    '"\\ud800"',
    "1",
    "-1",
    "0.5",
    "-0",
    "1e308",
    "1e999",
    "-1e999",
    "9" * 40,
    "true",
    "false",
    "null",
    "30d",
    "#",
    "\n",
]
"""Pieces of the text rule notation, to be put together in any order."""

JSON_LOGIC_OPERATORS = [
    "var",
    "==",
    "===",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "and",
    "or",
    "!",
    "!!",
    "segment",
    "has_identity",
    "category_views",
    "interest",
    "count",
    "sum",
    "if",
    "nope",
]


def rule_texts() -> st.SearchStrategy[str]:
    """Text rules: the notation's pieces in any order, mostly almost right."""
    return st.lists(st.sampled_from(RULE_TOKENS), min_size=1, max_size=12).map(" ".join)


def json_logic_texts() -> st.SearchStrategy[str]:
    """JsonLogic rules: operators over any arguments, NaN and Infinity included."""
    leaves = st.one_of(
        st.sampled_from(["trait.country", "session.page_views", "purchase", "30d", "revenue"]),
        st.sampled_from([None, True, 0, -1, 1.5, 1e308, 2**70, math.nan, math.inf]),
        st.text(max_size=5),
    )
    values = st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.sampled_from(JSON_LOGIC_OPERATORS), inner, min_size=1, max_size=2),
        ),
        max_leaves=10,
    )
    return values.map(json.dumps)


def integers(kind: int) -> st.SearchStrategy[int]:
    low, high = INT_RANGES[kind]
    extremes = sorted({0, 1, low, high, max(low, -1), min(high, 2**31), min(high, 2**53 + 1)})
    return st.one_of(st.integers(-3, 3).filter(lambda n: low <= n), st.sampled_from(extremes))


def doubles(width: int = 64) -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(EXTREME_DOUBLES if width == 64 else [math.nan, math.inf, 1.5]),
        st.floats(width=width),
    )


def timestamps(cls: type[Message]) -> st.SearchStrategy[Message]:
    def build(seconds: int, nanos: int) -> Message:
        stamp = cls()
        stamp.seconds = seconds  # type: ignore[attr-defined]
        stamp.nanos = nanos  # type: ignore[attr-defined]
        return stamp

    return st.builds(
        build,
        st.one_of(st.sampled_from(EXTREME_SECONDS), st.integers(0, 2_000_000_000)),
        st.one_of(st.sampled_from(EXTREME_NANOS), st.integers(0, 999_999_999)),
    )


def struct_keys(pool: Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["price", "category", "revenue", "country"]), strings(pool))


def json_values(pool: Sequence[str]) -> st.SearchStrategy[Any]:
    """Plain JSON-like values with the numbers and strings a Struct can carry."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        doubles(),
        st.sampled_from([2**53 + 1, -(2**53) - 1, 10**20]),
        strings(pool),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(struct_keys(pool), children, max_size=3),
        ),
        max_leaves=8,
    )


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"n": value}
    return {"deep": value}


def struct_dicts(pool: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts for a Struct: ordinary ones, and deep, wide and huge ones."""
    return st.one_of(
        st.dictionaries(struct_keys(pool), json_values(pool), max_size=4),
        st.sampled_from([8, 9, 40, 120]).map(_nested),
        st.sampled_from([1000, 1001]).map(lambda n: {f"k{i}": i for i in range(n)}),
        st.just({"big": "b" * 70_000}),
        st.just({"list": list(range(1001))}),
        st.just({"k" * 257: 1}),
        st.just({"a\x00b": 1}),
        st.just({"": 1}),
    )


def structs(cls: type[Message], pool: Sequence[str]) -> st.SearchStrategy[Message]:
    def build(values: dict[str, Any]) -> Message:
        struct = cls()
        struct.update(values)  # type: ignore[attr-defined]
        return struct

    return struct_dicts(pool).map(build)


def _present(message: Message | None) -> dict[str, Any]:
    if message is None:
        return {}
    return {field.name: value for field, value in message.ListFields()}


def _set(message: Message, field: FieldDescriptor, value: Any) -> None:
    """Set `field` of `message` to a value as the strategies draw it."""
    target: Any = getattr(message, field.name)
    if _is_map(field):
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value:
            if value_field.message_type is not None:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        if field.message_type is not None:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _single(
    field: FieldDescriptor, seed: Any, pool: Sequence[str], depth: int, tame: bool = False
) -> Any:
    """A strategy for one value of `field` (an item, when it is repeated)."""
    kind = field.type
    if kind == F.TYPE_STRING and field.name == "text":
        return st.one_of(rule_texts(), strings(pool))
    if kind == F.TYPE_STRING and field.name == "json_logic":
        return st.one_of(json_logic_texts(), strings(pool))
    if kind == F.TYPE_STRING:
        return strings(pool)
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=16)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_DOUBLE:
        return doubles()
    if kind == F.TYPE_FLOAT:
        return doubles(32)
    if kind == F.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    if kind in INT_RANGES:
        return integers(kind)
    return typed_messages(field.message_type, seed, pool, depth + 1, tame)


def _values(
    field: FieldDescriptor, seed: Any, pool: Sequence[str], depth: int, tame: bool = False
) -> Any:
    """A strategy for the whole value of `field`: a value, a list, or map items."""
    if _is_map(field):
        entry = field.message_type
        keys = _single(entry.fields_by_name["key"], None, pool, depth)
        values = _single(entry.fields_by_name["value"], None, pool, depth)
        return st.lists(st.tuples(keys, values), max_size=3)
    if not field.is_repeated:
        return _single(field, seed, pool, depth)
    first = seed[0] if seed else None
    item = _single(field, first, pool, depth, tame)
    many = st.tuples(item, st.sampled_from(MANY)).map(lambda pair: [pair[0]] * pair[1])
    return st.one_of(st.lists(item, max_size=3), many)


def typed_requests(
    descriptor: Descriptor, seed: Message | None, pool: Sequence[str]
) -> st.SearchStrategy[Message]:
    """Requests of `descriptor`'s type: the seed with a field or two changed, or anything.

    Near-valid requests get past the first check into handlers and stores;
    wild ones try every combination.
    """
    return st.one_of(
        typed_messages(descriptor, seed, pool, tame=True),
        typed_messages(descriptor, seed, pool, tame=False),
    )


# Weights of what happens to a field: a tame message keeps the seed's fields
# and leaves the others out, mostly; a wild one picks evenly.
TAME_SEEDED = ["seed"] * 8 + ["generate", "omit"]
TAME_UNSEEDED = ["omit"] * 6 + ["generate"]
WILD_SEEDED = ["seed", "generate", "omit"]
WILD_UNSEEDED = ["omit", "generate"]


def typed_messages(
    descriptor: Descriptor,
    seed: Message | None,
    pool: Sequence[str],
    depth: int = 0,
    tame: bool = False,
) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type: each field from `seed`, generated, or absent."""
    cls = message_class(descriptor)
    if descriptor.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return timestamps(cls)
    if descriptor.full_name == "google.protobuf.Struct":
        return structs(cls, pool)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        present = _present(seed)
        if depth >= MESSAGE_DEPTH:
            return message
        oneof_fields = set()
        for oneof in descriptor.oneofs:
            members = list(oneof.fields)
            oneof_fields.update(member.name for member in members)
            chosen = seed.WhichOneof(oneof.name) if seed is not None else None
            options: list[str | None] = [chosen] * (8 if tame else 1) if chosen else []
            options += [None, *(member.name for member in members if member.name != chosen)]
            name = draw(st.sampled_from(options))
            if name is None:
                continue
            field = descriptor.fields_by_name[name]
            weights = TAME_SEEDED if tame else WILD_SEEDED
            from_seed = name == chosen and draw(st.sampled_from(weights)) != "generate"
            if from_seed:
                value = present[name]
            else:
                value = draw(_values(field, present.get(name), pool, depth, tame))
            _set(message, field, value)
        for field in descriptor.fields:
            if field.name in oneof_fields:
                continue
            seeded = field.name in present
            if tame:
                modes = TAME_SEEDED if seeded else TAME_UNSEEDED
            else:
                modes = WILD_SEEDED if seeded else WILD_UNSEEDED
            mode = draw(st.sampled_from(modes))
            if mode == "seed":
                _set(message, field, _seed_value(field, present[field.name]))
            elif mode == "generate":
                value = draw(_values(field, present.get(field.name), pool, depth, tame))
                _set(message, field, value)
        return message

    return build()


def _seed_value(field: FieldDescriptor, value: Any) -> Any:
    if _is_map(field):
        return list(value.items())
    return value


# ---------------------------------------------------------------- raw bytes


def varint(number: int) -> bytes:
    """Protobuf's base-128 varint; negative numbers as their 64-bit two's complement."""
    number &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


WIRE_TYPES = {
    F.TYPE_DOUBLE: 1,
    F.TYPE_FIXED64: 1,
    F.TYPE_SFIXED64: 1,
    F.TYPE_FLOAT: 5,
    F.TYPE_FIXED32: 5,
    F.TYPE_SFIXED32: 5,
    F.TYPE_STRING: 2,
    F.TYPE_BYTES: 2,
    F.TYPE_MESSAGE: 2,
    F.TYPE_GROUP: 3,
}
"""The wire type of each field type; every other type is a varint (0)."""

INVALID_UTF8 = [
    b"\xff",
    b"\xc3\x28",  # a lead byte without its continuation
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\x80",
    b"\xe2\x82",  # truncated
]


def field_paths(
    descriptor: Descriptor, depth: int = 4, seen: tuple[str, ...] = ()
) -> list[tuple[FieldDescriptor, ...]]:
    """Every path of fields from `descriptor` down to a field, at most `depth` long.

    A message type is entered at most twice on one path (Struct nests itself).
    """
    paths: list[tuple[FieldDescriptor, ...]] = []
    for field in descriptor.fields:
        paths.append((field,))
        inner = field.message_type
        if inner is None or depth <= 1 or seen.count(inner.full_name) >= 2:
            continue
        for rest in field_paths(inner, depth - 1, (*seen, inner.full_name)):
            paths.append((field, *rest))
    return paths


def _wrap(path: Sequence[FieldDescriptor], leaf: bytes) -> bytes:
    """`leaf` (the encoded last field) inside the messages of `path[:-1]`."""
    for field in reversed(path[:-1]):
        leaf = delimited(field.number, leaf)
    return leaf


def _with_invalid_utf8(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    paths = [p for p in field_paths(descriptor) if p[-1].type == F.TYPE_STRING]
    if not paths:
        return st.nothing()
    return st.builds(
        lambda path, before, bad: _wrap(path, delimited(path[-1].number, before + bad)),
        st.sampled_from(paths),
        st.sampled_from([b"", b"ok-"]),
        st.sampled_from(INVALID_UTF8),
    )


def _wrong_wire_type(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    paths = field_paths(descriptor)
    if not paths:
        return st.nothing()

    def encode(path: tuple[FieldDescriptor, ...], wire_type: int, payload: bytes) -> bytes:
        number = path[-1].number
        body = {
            0: varint(int.from_bytes(payload[:8] or b"\x01", "little")),
            1: payload.ljust(8, b"\x00")[:8],
            2: varint(len(payload)) + payload,
            3: b"",  # a group left open
            4: b"",  # an end-group without its start
            5: payload.ljust(4, b"\x00")[:4],
        }.get(wire_type, payload)
        return _wrap(path, tag(number, wire_type) + body)

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        path = draw(st.sampled_from(paths))
        right = WIRE_TYPES.get(path[-1].type, 0)
        wire_type = draw(st.sampled_from([t for t in range(8) if t != right]))
        return encode(path, wire_type, draw(st.binary(max_size=12)))

    return build()


def _deeply_nested(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Nesting past protobuf's limit of 100: through a Struct, or unknown groups."""
    struct_paths = [
        p
        for p in field_paths(descriptor, depth=3)
        if p[-1].message_type is not None
        and p[-1].message_type.full_name == "google.protobuf.Struct"
    ]

    def struct_chain(path: tuple[FieldDescriptor, ...], levels: int) -> bytes:
        struct = b""
        for _ in range(levels):
            value = delimited(5, struct)  # Value.struct_value
            struct = delimited(1, delimited(1, b"n") + delimited(2, value))  # Struct.fields
        return _wrap(path, delimited(path[-1].number, struct))

    def groups(levels: int) -> bytes:
        return tag(999, 3) * levels + tag(999, 4) * levels

    levels = st.sampled_from([33, 34, 100, 101, 1000, 20_000])
    options = [levels.map(groups)]
    if struct_paths:
        options.append(st.builds(struct_chain, st.sampled_from(struct_paths), levels))
    return st.one_of(options)


def _lying_lengths() -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [
            tag(1, 2) + varint(2**31) + b"abc",
            tag(1, 2) + varint(2**64 - 1) + b"abc",
            tag(1, 2) + b"\xff" * 11,  # a varint longer than ten bytes
            tag(0, 0) + b"\x01",  # field number 0
            varint(((2**29) << 3) | 0) + b"\x01",  # field number past the largest
            tag(1, 2),  # length missing
            b"\x80",  # a varint cut off
        ]
    )


def _mutated(typed: st.SearchStrategy[Message]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = draw(typed).SerializeToString()
        how = draw(st.sampled_from(["truncate", "flip", "insert", "double"]))
        if how == "double":
            # Concatenated messages merge: repeated fields grow, singulars are overwritten.
            return data * draw(st.integers(2, 40))
        if not data:
            return draw(st.binary(min_size=1, max_size=8))
        at = draw(st.integers(0, len(data) - 1))
        if how == "truncate":
            return data[:at]
        if how == "flip":
            mask = draw(st.integers(1, 255))
            return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]

    return build()


def raw_requests(
    descriptor: Descriptor, typed: st.SearchStrategy[Message]
) -> st.SearchStrategy[bytes]:
    """Bytes for a request of `descriptor`'s type that no generated client would send."""
    return st.one_of(
        _mutated(typed),
        _with_invalid_utf8(descriptor),
        _wrong_wire_type(descriptor),
        _deeply_nested(descriptor),
        _lying_lengths(),
        st.binary(max_size=64),
    )


# ---------------------------------------------------------------- calls


@dataclass(frozen=True)
class Rpc:
    """One RPC of a running service."""

    method: MethodDescriptor
    address: str

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def streams_responses(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def streams_requests(self) -> bool:
        return bool(self.method.client_streaming)


@dataclass(frozen=True)
class Outcome:
    """How one call ended."""

    code: grpc.StatusCode
    details: str
    elapsed_s: float
    answered: bool
    """A stream sent its first message (or ended OK); a unary call answered OK; a
    bidirectional stream ended OK with no message answered by an error."""
    message_errors: tuple[tuple[grpc.StatusCode, str], ...] = ()
    """A bidirectional stream's per-message errors (IdentifyStream's `error`)."""


def call(channel: grpc.Channel, rpc: Rpc, requests: Sequence[bytes], timeout_s: float) -> Outcome:
    """Send `requests` as they are (identity serializers) and see how the call ends.

    A server stream is opened, its first message (or status) read, then
    cancelled; a client stream sends every request; a unary call the first.
    A bidirectional stream sends every request and reads every answer until
    it ends; answers are decoded with the method's response type, and an
    `error` they carry (a status per message) is reported beside the
    stream's own status.
    """
    started = time.monotonic()
    try:
        if rpc.streams_responses and rpc.streams_requests:
            answers = list(channel.stream_stream(rpc.path)(iter(requests), timeout=timeout_s))
            errors = tuple(_message_error(rpc, answer) for answer in answers)
            failed = tuple(error for error in errors if error is not None)
            return Outcome(
                grpc.StatusCode.OK,
                "",
                time.monotonic() - started,
                answered=not failed,
                message_errors=failed,
            )
        if rpc.streams_responses:
            stream = channel.unary_stream(rpc.path)(requests[0], timeout=timeout_s)
            try:
                next(stream)
            except StopIteration:
                pass
            finally:
                stream.cancel()
        elif rpc.streams_requests:
            channel.stream_unary(rpc.path)(iter(requests), timeout=timeout_s)
        else:
            channel.unary_unary(rpc.path)(requests[0], timeout=timeout_s)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
        details: str = error.details() or ""  # type: ignore[attr-defined]
        return Outcome(code, details, time.monotonic() - started, answered=False)
    return Outcome(grpc.StatusCode.OK, "", time.monotonic() - started, answered=True)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _message_error(rpc: Rpc, data: bytes) -> tuple[grpc.StatusCode, str] | None:
    """The status one answer of a bidirectional stream carries in its `error`, if any."""
    response = message_factory.GetMessageClass(rpc.method.output_type).FromString(data)
    if "error" not in response.DESCRIPTOR.fields_by_name or not response.HasField("error"):
        return None
    error = response.error
    return _CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.message


# ---------------------------------------------------------------- stored data


Dump = dict[str, list[str]]


class StoredData:
    """Every row of the services' own tables and every hot value, as comparable text."""

    def __init__(
        self, databases: Iterable[tuple[str, Engine]], hot: Callable[[], dict[str, bytes]]
    ) -> None:
        self._tables: list[tuple[Engine, Table]] = []
        for service, engine in databases:
            metadata = MetaData()
            metadata.reflect(engine, only=_owned_by(service))
            self._tables += [(engine, table) for table in metadata.sorted_tables]
        self._hot = hot

    @property
    def table_names(self) -> list[str]:
        return [table.name for _, table in self._tables]

    def dump(self) -> Dump:
        """The stored data now: table -> sorted rows, `hot` -> sorted key=value."""
        out: Dump = {}
        for engine, table in self._tables:
            if table.name in BACKGROUND_TABLES:
                continue
            columns = [c for c in table.columns if c.name not in BACKGROUND_COLUMNS]
            with engine.connect() as connection:
                rows = connection.execute(select(*columns)).all()
            out[table.name] = sorted(repr(tuple(row)) for row in rows)
        out["hot"] = sorted(f"{key}={value!r}" for key, value in self._hot().items())
        return out


# What the change feed's sequencer writes in the background, numbering records
# committed before (by the seed or an accepted call): not the doing of the
# call under test, so left out of the comparison. A row a refused call added
# would still show.
# The segment service stores its projection of profiles in the background too.
BACKGROUND_TABLES = frozenset({"profiles_feed", "segments_projection", "segments_feed_cursor"})
BACKGROUND_COLUMNS = frozenset({"position", "sequenced_at"})


def _owned_by(service: str) -> Callable[[str, MetaData], bool]:
    """Tables of `service`: each service's table names start with its name."""
    return lambda name, _: name.startswith(f"{service}_")


def difference(before: Dump, after: Dump, limit: int = 5) -> str:
    """What changed between two dumps, briefly: rows removed and added per table."""
    lines = []
    for name in sorted(set(before) | set(after)):
        old, new = set(before.get(name, [])), set(after.get(name, []))
        if old == new:
            continue
        lines.append(f"{name}:")
        lines += [f"  - {row[:300]}" for row in sorted(old - new)[:limit]]
        lines += [f"  + {row[:300]}" for row in sorted(new - old)[:limit]]
    return "\n".join(lines)
