"""Definitions as code: segments, experiments and campaigns kept in YAML files.

A file holds one or more YAML documents; each is one definition: its `kind`
(`Segment`, `Experiment` or `Campaign`) and the fields of that proto message,
by their proto names (`docs/definitions-as-code.md` shows each kind):

    kind: Segment
    key: juicer-fans
    name: Juicer fans
    rule:
      text: session.category_views("juicers") >= 2

Every field is checked against the message before anything is sent, so a
misspelt or mistyped field is named with its file, line and path. The fields
the service sets (`version`, `created_at`, `updated_at`, a campaign's
`experiment_key`) are ignored, so what `tessera ... get -o yaml` prints
applies as it is.

This module reads, checks, orders and compares; `tessera.admin` talks to the
services.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tessera.convert import SERVICE_SET_FIELDS, as_written

SUFFIXES = (".yaml", ".yml")

# Messages that proto JSON writes as plain values rather than as their fields.
WELL_KNOWN = frozenset(
    f"google.protobuf.{name}"
    for name in ("Struct", "Value", "ListValue", "Timestamp", "Duration", "FieldMask")
)


@dataclass(frozen=True)
class Kind:
    """One kind of definition: its message, the service that owns it, its RPC names."""

    name: str
    """As written in a file's `kind`: Segment, Experiment, Campaign."""
    noun: str
    """As printed: segment, experiment, campaign."""
    plural: str
    """The list field of its List response, and the CLI's command."""
    service: str
    """The service that stores it (its address setting)."""
    message: type[Message]
    stub: type[Any]
    """The generated synchronous stub of that service."""
    module: Any
    """The generated module holding its request messages."""
    ignored: tuple[str, ...] = SERVICE_SET_FIELDS

    def request(self, rpc: str, **fields: Any) -> Message:
        """The request message of `rpc` (e.g. "Get" gives GetSegmentRequest)."""
        name = f"{rpc}{self.plural.capitalize() if rpc == 'List' else self.name}Request"
        request: Message = getattr(self.module, name)(**fields)
        return request

    def method(self, channel: Any, rpc: str) -> Any:
        """The stub method of `rpc` on `channel`, e.g. SegmentService.GetSegment."""
        name = f"{rpc}{self.plural.capitalize() if rpc == 'List' else self.name}"
        return getattr(self.stub(channel), name)


@functools.cache
def kinds() -> dict[str, Kind]:
    """Every kind by name, in the order they are applied: a later kind may refer to an earlier.

    Imported on first use: a service's image holds only its own generated API.
    """
    from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
    from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc
    from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

    ordered = [
        Kind(
            "Segment",
            "segment",
            "segments",
            "segments",
            segments_pb2.Segment,
            segments_pb2_grpc.SegmentServiceStub,
            segments_pb2,
        ),
        Kind(
            "Experiment",
            "experiment",
            "experiments",
            "experiments",
            experiments_pb2.Experiment,
            experiments_pb2_grpc.ExperimentServiceStub,
            experiments_pb2,
        ),
        Kind(
            "Campaign",
            "campaign",
            "campaigns",
            "decision",
            decision_pb2.Campaign,
            decision_pb2_grpc.DecisionServiceStub,
            decision_pb2,
            ignored=(*SERVICE_SET_FIELDS, "experiment_key"),
        ),
    ]
    return {kind.name: kind for kind in ordered}


def kind_of(plural: str) -> Kind:
    """The kind whose command is `plural` ("segments")."""
    return next(kind for kind in kinds().values() if kind.plural == plural)


@dataclass(frozen=True)
class Definition:
    """One definition read from a file."""

    kind: Kind
    message: Message
    source: str
    """Where it was written: `path:line` of its document."""
    lines: dict[tuple[str | int, ...], int] = _field(default_factory=dict, compare=False)
    """The line of each field in its file, by path: ("variants", 0, "weight")."""

    @property
    def key(self) -> str:
        key: str = getattr(self.message, "key")  # noqa: B009 - every definition has a key
        return key

    @property
    def name(self) -> str:
        """As printed: `segment/juicer-fans`."""
        return f"{self.kind.noun}/{self.key}"

    @property
    def file(self) -> str:
        return self.source.rsplit(":", 1)[0]

    def where(self, field_path: str) -> str:
        """`path:line` of a field named as services name it (`campaign.variants[0].weight`)."""
        parts: list[str | int] = []
        for name in re.findall(r"[^.\[\]]+", field_path.removeprefix(f"{self.kind.noun}.")):
            parts.append(int(name) if name.isdigit() else name)
        path = tuple(parts)
        if not path or path[:1] not in self.lines:  # a field the file does not write
            return self.source
        return f"{self.file}:{_line_of(path, self.lines)}"


class ManifestError(Exception):
    """A file that cannot be applied; the message names file, line and field."""


class _FieldError(Exception):
    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class _Loader(yaml.SafeLoader):
    """Safe YAML that keeps timestamps as text: proto JSON parses them itself."""


_Loader.add_constructor(
    "tag:yaml.org,2002:timestamp",
    lambda loader, node: loader.construct_scalar(node),  # type: ignore[arg-type]
)


def files_of(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, directories walked (sorted, with their subdirectories)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return found


def load(paths: Iterable[Path]) -> list[Definition]:
    """Every definition in the files and directories named, checked; in file order.

    Raises ManifestError for the first problem: unreadable YAML, a document
    without a known kind, an unknown or mistyped field, a key defined twice.
    """
    definitions: list[Definition] = []
    seen: dict[tuple[str, str], str] = {}
    for path in files_of(paths):
        for definition in _load_file(path):
            where = seen.setdefault((definition.kind.name, definition.key), definition.source)
            if where != definition.source:
                raise ManifestError(
                    f"{definition.source}: {definition.name} is defined twice (first in {where})"
                )
            definitions.append(definition)
    return definitions


def _load_file(path: Path) -> Iterator[Definition]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: cannot read: {error}") from None
    loader = _Loader(text)
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
                data = loader.construct_document(node)
            except yaml.YAMLError as error:
                raise ManifestError(f"{path}:{_yaml_where(error)}") from None
            if node is None or data is None:  # an empty document, e.g. after a final ---
                continue
            lines: dict[tuple[str | int, ...], int] = {}
            _positions(node, (), lines, path)
            yield _definition(data, lines, path)
    finally:
        loader.dispose()


def _yaml_where(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f" {problem}"
    return f"{mark.line + 1}:{mark.column + 1}: {problem}"


def _positions(
    node: yaml.Node,
    path: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
    file: Path,
) -> None:
    """The 1-based line of every key and item under `node`; a key written twice is refused."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in keys:
                raise ManifestError(
                    f"{file}:{key_node.start_mark.line + 1}: {_dotted((*path, key))} "
                    "is written twice"
                )
            keys.add(key)
            _positions(value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _positions(item, (*path, index), lines, file)


def _dotted(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _definition(data: Any, lines: dict[tuple[str | int, ...], int], path: Path) -> Definition:
    where = f"{path}:{lines[()]}"
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: a definition is a mapping with a kind, not {_what(data)}")
    known = kinds()
    kind_name = data.get("kind")
    if kind_name not in known:
        said = f"kind {kind_name!r} is not known" if "kind" in data else "kind is missing"
        line = lines.get(("kind",), lines[()])
        raise ManifestError(f"{path}:{line}: {said}: use one of {', '.join(known)}")
    kind = known[kind_name]
    fields = {k: v for k, v in data.items() if k != "kind" and k not in kind.ignored}
    message = kind.message()
    try:
        _check(fields, message.DESCRIPTOR, ())
        json_format.ParseDict(fields, message)
    except _FieldError as error:
        line = _line_of(error.path, lines)
        name = f"{kind.noun}/{data.get('key', '')!s}"
        raise ManifestError(
            f"{path}:{line}: {name}: {_dotted(error.path)}: {error.message}"
        ) from None
    except json_format.ParseError as error:  # what the field walk let through
        raise ManifestError(f"{where}: {kind.noun}: {_clean(str(error))}") from None
    definition = Definition(kind, message, where, lines)
    if not definition.key:
        raise ManifestError(f"{where}: {kind.noun}: key: is required")
    return definition


def _line_of(path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int:
    while path not in lines:
        path = path[:-1]
    return lines[path]


def _what(value: Any) -> str:
    """A value as an error message names it: 'high', 3.5, true, a list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    names = {list: "a list", dict: "a mapping", type(None): "empty"}
    return names.get(type(value), type(value).__name__)


def _check(value: Any, descriptor: Any, path: tuple[str | int, ...]) -> None:
    """Raise _FieldError at the first field of `value` that `descriptor` would refuse."""
    if not isinstance(value, dict):
        raise _FieldError(
            path, f"must be a mapping of {descriptor.name} fields, not {_what(value)}"
        )
    by_name = {f.name: f for f in descriptor.fields} | {f.json_name: f for f in descriptor.fields}
    for key, item in value.items():
        here = (*path, key)
        field = by_name.get(key)
        if field is None:
            names = [f.name for f in descriptor.fields]
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; fields: {', '.join(names)}"
            raise _FieldError(here, f"{descriptor.name} has no field {key!r}{hint}")
        if item is None:
            continue
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            if not isinstance(item, dict):
                raise _FieldError(here, f"must be a mapping, not {_what(item)}")
            value_field = nested.fields_by_name["value"]
            for map_key, map_value in item.items():
                _check_value(map_value, value_field, (*here, map_key), descriptor)
        elif field.is_repeated:
            if not isinstance(item, list):
                raise _FieldError(here, f"must be a list, not {_what(item)}")
            for index, element in enumerate(item):
                _check_value(element, field, (*here, index), descriptor)
        else:
            _check_value(item, field, here, descriptor)


def _check_value(
    value: Any, field: FieldDescriptor, path: tuple[str | int, ...], parent: Any
) -> None:
    """Raise _FieldError when `value` cannot be one (non-repeated) value of `field`."""
    nested = field.message_type
    if nested is not None and nested.full_name not in WELL_KNOWN:
        _check(value, nested, path)
        return
    if field.enum_type is not None and isinstance(value, str):
        names = [v.name for v in field.enum_type.values if v.number != 0]
        if value not in field.enum_type.values_by_name:
            raise _FieldError(
                path, f"{value!r} is not a {field.enum_type.name}: use one of {', '.join(names)}"
            )
        return
    if field.type == FieldDescriptor.TYPE_STRING and not isinstance(value, str):
        raise _FieldError(path, f"must be text, not {_what(value)}: put it in quotes")
    if field.cpp_type in _WHOLE and (isinstance(value, bool) or not isinstance(value, int)):
        raise _FieldError(path, f"must be a whole number, not {_what(value)}")
    if field.cpp_type in _REAL and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _FieldError(path, f"must be a number, not {_what(value)}")
    if field.type == FieldDescriptor.TYPE_BOOL and not isinstance(value, bool):
        raise _FieldError(path, f"must be true or false, not {_what(value)}")
    # Scalars and well-known types: proto JSON's own parser says what is wrong.
    scratch = message_factory.GetMessageClass(parent)()
    try:
        json_format.ParseDict({field.name: [value] if field.is_repeated else value}, scratch)
    except json_format.ParseError as error:
        hint = {
            "google.protobuf.Timestamp": ": write an RFC 3339 time, e.g. 2026-12-01T00:00:00Z",
            "google.protobuf.Duration": ": write seconds with an s, e.g. 86400s",
        }.get(nested.full_name if nested is not None else "", "")
        raise _FieldError(path, _clean(str(error)) + hint) from None


_WHOLE = frozenset(
    (
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    )
)
_REAL = frozenset((FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT))


def _clean(text: str) -> str:
    """protobuf's parse message without its nesting preamble and path suffix."""
    text = re.sub(r"Failed to parse \w+ field: ", "", text)
    text = re.sub(r"\s*at [\w.\[\]\"]+\.*$", "", text.strip())
    return text.rstrip(".")


# -- comparing -----------------------------------------------------------------


def as_stored(kind: Kind, message: Message) -> Message:
    """`message` as its service would store it, without the fields the service sets.

    Apply compares this with what is stored: equal means unchanged, nothing
    is written. It mirrors each service's defaults: a campaign gets its
    control variant and experiment key from the decision service's own
    `normalised`, which also checks it (and raises InvalidArgument naming
    the field); an experiment without status is a draft.
    """
    if kind.name == "Campaign":
        from tessera.decision.application.campaigns import normalised

        return as_written(normalised(message))  # type: ignore[arg-type]
    stored = as_written(message)
    if kind.name == "Experiment" and not getattr(stored, "status"):  # noqa: B009
        from tessera.experiments.v1 import experiments_pb2

        stored.status = experiments_pb2.EXPERIMENT_STATUS_DRAFT  # type: ignore[attr-defined]
    return stored


def to_dict(message: Message) -> dict[str, Any]:
    """A message as proto JSON with proto field names, leaving out unset fields.

    Fields keep their proto order; the keys of maps and Structs (payloads,
    traits, properties) are sorted, so the same message always prints the
    same. Numbers print as people write them: 64-bit integers as numbers
    rather than proto JSON's strings (`version: 3`), whole doubles without
    `.0` (`weight: 9`); both parse back to the same message.
    """
    shown: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _tidy(message, shown)
    plain: dict[str, Any] = _whole_numbers(shown)
    return plain


_INT64 = frozenset((FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64))


def _tidy(message: Message, shown: dict[str, Any]) -> None:
    """int64 strings to numbers and map keys sorted, in place, field by field."""
    for field, value in message.ListFields():
        if field.name not in shown:
            continue
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            value_field = nested.fields_by_name["value"]
            entries = shown[field.name]
            for key, item in entries.items():
                if value_field.cpp_type in _INT64:
                    entries[key] = int(item)
                elif value_field.message_type is not None and (
                    value_field.message_type.full_name not in WELL_KNOWN
                ):
                    _tidy(value[key], item)
            shown[field.name] = dict(sorted(entries.items()))
        elif nested is not None and nested.full_name == "google.protobuf.Struct":
            shown[field.name] = (
                [_sorted(x) for x in shown[field.name]]
                if field.is_repeated
                else _sorted(shown[field.name])
            )
        elif nested is not None and nested.full_name not in WELL_KNOWN:
            items = (
                zip(value, shown[field.name], strict=True)
                if field.is_repeated
                else [(value, shown[field.name])]
            )
            for inner, inner_shown in items:
                _tidy(inner, inner_shown)
        elif field.cpp_type in _INT64:
            item = shown[field.name]
            shown[field.name] = [int(x) for x in item] if field.is_repeated else int(item)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def to_document(kind: Kind, message: Message) -> dict[str, Any]:
    """A definition as a document `tessera apply` reads back: its kind, then its fields."""
    return {"kind": kind.name, **to_dict(message)}


def to_yaml(documents: Iterable[dict[str, Any]]) -> str:
    """YAML documents in field order, separated by `---`."""
    return yaml.safe_dump_all(
        list(documents), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )


def diff(kind: Kind, stored: Message, desired: Message, stored_label: str, label: str) -> list[str]:
    """A unified diff from the stored definition to the desired one, as lines."""

    def lines(message: Message) -> list[str]:
        return to_yaml([to_document(kind, as_written(message))]).splitlines()

    return list(
        difflib.unified_diff(
            lines(stored), lines(desired), fromfile=stored_label, tofile=label, lineterm=""
        )
    )


def apply_order(definitions: list[Definition]) -> list[Definition]:
    """Definitions in the order they can be written: segments (those a segment's rule
    refers to first), then experiments, then campaigns; otherwise as read."""
    order = list(kinds())
    by_kind = sorted(definitions, key=lambda d: order.index(d.kind.name))
    segments = [d for d in by_kind if d.kind.name == "Segment"]
    return _references_first(segments) + [d for d in by_kind if d.kind.name != "Segment"]


def _references_first(segments: list[Definition]) -> list[Definition]:
    from tessera.errors import TesseraError
    from tessera.segments.domain.segments import dependencies
    from tessera.segments.transport.convert import rule_from_proto

    by_key = {d.key: d for d in segments}
    ordered: list[Definition] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(definition: Definition) -> None:
        if definition.key in placed:
            return
        if definition.key in visiting:
            raise ManifestError(
                f"{definition.source}: {definition.name} is in a cycle of segment references"
            )
        visiting.add(definition.key)
        try:
            refers = dependencies(rule_from_proto(definition.message.rule))  # type: ignore[attr-defined]
        except TesseraError as error:
            where = definition.where(error.field)
            raise ManifestError(f"{where}: {definition.name}: {error.code_name}: {error}") from None
        for key in sorted(refers & by_key.keys()):
            place(by_key[key])
        visiting.discard(definition.key)
        placed.add(definition.key)
        ordered.append(definition)

    for definition in segments:
        place(definition)
    return ordered
