"""The `tessera` commands for the people who run campaigns, against a running suite.

tessera segments|experiments|campaigns list          a table, or -o json / -o yaml
tessera segments|campaigns get|delete KEY            (experiments: get|stop KEY)
tessera profiles get|export|delete PROFILE_ID        or --identity TYPE=VALUE
tessera track --identity cookie=abc --type product_view --property category=juicers
tessera apply -f examples/juicer [--dry-run]         create or update from YAML files

Each service is reached at its TESSERA_<SERVICE>_ADDRESS setting (default
127.0.0.1 and its port), or at `--address`. A failed call prints its gRPC
status and message on one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from tessera import console, manifests
from tessera.channels import CHANNELS
from tessera.convert import as_written
from tessera.errors import TesseraError
from tessera.manifests import Definition, Kind, ManifestError
from tessera.settings import RuntimeSettings

PAGE_SIZE = 1000
"""Definitions asked for per List call (the services' most)."""


class Failed(Exception):
    """A command that cannot go on; its message is the one line to print."""

    exit_code = 1


class Usage(Failed):
    """The command line does not say enough: exit 2, as argparse does."""

    exit_code = 2


# -- arguments -----------------------------------------------------------------


def identity_arg(text: str) -> tuple[str, str]:
    """`TYPE=VALUE` as a pair, for --identity."""
    kind, equals, value = text.partition("=")
    if not (kind and equals and value):
        raise argparse.ArgumentTypeError(f"{text!r} is not TYPE=VALUE, e.g. cookie=abc")
    return kind, value


def property_arg(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` for --property; VALUE is read as JSON when it is JSON, else as text."""
    name, equals, raw = text.partition("=")
    if not (name and equals):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE, e.g. category=juicers")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


def object_arg(text: str) -> dict[str, Any]:
    """A JSON object, for --properties."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"price\": 19.9}'")
    return value


def _connection_options(service: str) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--address",
        help=f"{service} service host:port (default: TESSERA_{service.upper()}_ADDRESS, "
        "else 127.0.0.1 and its port)",
    )
    options.add_argument("--timeout", type=float, default=10.0, help="seconds per call (10)")
    return options


def _output_option() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "-o",
        "--output",
        choices=console.OUTPUTS,
        default="table",
        help="table (default), or json / yaml with the proto field names",
    )
    return options


def add_commands(commands: Any) -> dict[str, Any]:
    """Add the definition, profile, track and apply commands to `tessera`'s subparsers.

    Returns the subcommands of `segments`, `experiments` and `campaigns` by name, so
    that a service adds its own (`segments size`).
    """
    output = _output_option()
    subcommands: dict[str, Any] = {}
    for plural, noun, service, removal in (
        ("segments", "segment", "segments", "delete"),
        ("experiments", "experiment", "experiments", "stop"),
        ("campaigns", "campaign", "decision", "delete"),
    ):
        connection = _connection_options(service)
        parser = commands.add_parser(
            plural,
            help=f"list, show or {removal} {plural}",
            description=f"List, show or {removal} {plural} on a running suite.",
        )
        actions = parser.add_subparsers(dest="action", required=True)
        subcommands[plural] = actions
        actions.add_parser("list", parents=[output, connection], help=f"every {noun}, in key order")
        get = actions.add_parser("get", parents=[output, connection], help=f"one {noun}, whole")
        get.add_argument("key")
        if removal == "delete":
            what = (
                "its experiment is stopped and kept with its results"
                if noun == "campaign"
                else "refused while another segment's rule refers to it"
            )
            remove = actions.add_parser(
                "delete", parents=[connection], help=f"remove a {noun} ({what})"
            )
        else:
            remove = actions.add_parser(
                "stop",
                parents=[output, connection],
                help="stop an experiment: it assigns nobody and keeps its results "
                "(experiments are never deleted)",
            )
        remove.add_argument("key")

    connection = _connection_options("profiles")
    profiles = commands.add_parser(
        "profiles",
        help="show, export or erase a person's profile",
        description="Show, export or erase a profile on a running suite, found by profile "
        "id (canonical or merged) or by an identity.",
    )
    actions = profiles.add_subparsers(dest="action", required=True)
    for action, parents, text in (
        ("get", [output, connection], "traits, hot session and features"),
        ("export", [output, connection], "everything held about the person, events included"),
        ("delete", [connection], "erase the person: profile, identities, events, hot state"),
    ):
        parser = actions.add_parser(action, parents=parents, help=text)
        parser.add_argument("profile_id", nargs="?", help="profile id (or use --identity)")
        parser.add_argument(
            "--identity", type=identity_arg, metavar="TYPE=VALUE", help="an identity instead"
        )

    track = commands.add_parser(
        "track",
        parents=[output, connection],
        help="record one event",
        description="Record one event on the profile service. The event id is printed: if "
        "the call fails, send the event again with --event-id and that id (it is stored once).",
    )
    track.add_argument("--type", required=True, help="event type, e.g. product_view, purchase")
    track.add_argument(
        "--identity",
        action="append",
        type=identity_arg,
        default=[],
        metavar="TYPE=VALUE",
        help="an identity of the person, e.g. cookie=abc; repeatable",
    )
    track.add_argument("--profile-id", default="", help="the profile, instead of identities")
    track.add_argument(
        "--property",
        action="append",
        type=property_arg,
        default=[],
        metavar="NAME=VALUE",
        help='an event property; VALUE is read as JSON when it is (19.9, true, "123"), '
        "else as text; repeatable",
    )
    track.add_argument(
        "--properties", type=object_arg, default={}, help="event properties as a JSON object"
    )
    track.add_argument("--channel", default="web", choices=CHANNELS, help="(default: web)")
    track.add_argument("--event-id", default="", help="idempotency key (default: a new one)")
    track.add_argument("--timestamp", default="", help="RFC 3339 time (default: now)")

    apply = commands.add_parser(
        "apply",
        help="create or update segments, experiments and campaigns from YAML files",
        description="Create or update the definitions in YAML files (docs/definitions-as-code"
        ".md): unchanged ones are left alone, changed ones are updated and shown as a diff; "
        "segments first, then experiments, then campaigns. Nothing is deleted.",
    )
    apply.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        type=Path,
        help="a YAML file, or a directory of them (subdirectories too); repeatable",
    )
    apply.add_argument(
        "--dry-run", action="store_true", help="show what would change; write nothing"
    )
    for service in ("segments", "experiments", "decision"):
        apply.add_argument(
            f"--{service}-address",
            help=f"default: TESSERA_{service.upper()}_ADDRESS, else 127.0.0.1 and its port",
        )
    apply.add_argument("--timeout", type=float, default=10.0, help="seconds per call (10)")
    return subcommands


COMMANDS = ("segments", "experiments", "campaigns", "profiles", "track", "apply")


def run(args: argparse.Namespace) -> int:
    """Run one of the commands added by `add_commands`; the exit code."""
    try:
        if args.command == "apply":
            return apply(args)
        if args.command == "track":
            return track(args)
        if args.command == "profiles":
            return profiles(args)
        return definitions(args)
    except Failed as failure:
        print(failure, file=sys.stderr)
        return failure.exit_code
    except ModuleNotFoundError as missing:  # a one-service image: tessera-runtime and one service
        print(
            f"tessera {args.command} needs the generated API of every service it talks to, "
            f"and {missing.name} is not installed here (the decision image and `make install` "
            "have all four)",
            file=sys.stderr,
        )
        return 1


@dataclass
class Service:
    """A channel to one service and the deadline of each call on it."""

    address: str
    channel: grpc.Channel
    timeout: float

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        """`method(request)`; a failure becomes Failed with its one line."""
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise Failed(console.error_line(error, self.address)) from None


def _address(args: argparse.Namespace, service: str, flag: str = "address") -> str:
    given: str | None = getattr(args, flag, None)
    return given or RuntimeSettings().address_of(service)


def _connect(stack: ExitStack, address: str, timeout: float) -> Service:
    channel = stack.enter_context(grpc.insecure_channel(address))
    return Service(address, channel, timeout)


# -- segments, experiments, campaigns ------------------------------------------


def definitions(args: argparse.Namespace) -> int:
    """`tessera segments|experiments|campaigns list|get|delete|stop`."""
    kind = manifests.kind_of(args.command)
    with ExitStack() as stack:
        service = _connect(stack, _address(args, kind.service), args.timeout)
        if args.action == "list":
            show_list(kind, list(_all(kind, service)), args.output)
        elif args.action == "get":
            show_one(kind, _get(kind, service, args.key), args.output)
        elif args.action == "delete":
            service.call(
                kind.method(service.channel, "Delete"), kind.request("Delete", key=args.key)
            )
            print(f"{kind.noun}/{args.key} deleted")
        else:  # stop: an experiment keeps its exposures and results
            from tessera.experiments.v1 import experiments_pb2

            stored = _get(kind, service, args.key)
            stopped = as_written(stored)
            stopped.status = experiments_pb2.EXPERIMENT_STATUS_STOPPED
            request = kind.request("Update", experiment=stopped, expected_version=stored.version)
            reply = service.call(kind.method(service.channel, "Update"), request)
            show_one(kind, reply.experiment, args.output)
    return 0


def _all(kind: Kind, service: Service) -> Iterator[Message]:
    token = ""
    while True:
        reply = service.call(
            kind.method(service.channel, "List"),
            kind.request("List", page_size=PAGE_SIZE, page_token=token),
        )
        yield from getattr(reply, kind.plural)
        token = reply.next_page_token
        if not token:
            return


def _get(kind: Kind, service: Service, key: str) -> Any:
    reply = service.call(kind.method(service.channel, "Get"), kind.request("Get", key=key))
    return getattr(reply, kind.noun)


def _find(kind: Kind, service: Service, key: str) -> Any:
    """The stored definition, or None when there is none with that key."""
    try:
        reply = kind.method(service.channel, "Get")(
            kind.request("Get", key=key), timeout=service.timeout
        )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise Failed(console.error_line(error, service.address)) from None
    return getattr(reply, kind.noun)


def show_list(kind: Kind, items: list[Any], output: str) -> None:
    """Definitions as a table, or as documents `tessera apply` reads back."""
    if output == "yaml":
        sys.stdout.write(manifests.to_yaml(manifests.to_document(kind, m) for m in items))
        return
    if output == "json":
        console.print_data([manifests.to_document(kind, m) for m in items], output)
        return
    columns, row = SUMMARIES[kind.name]
    grid = console.table(*columns, whole=WHOLE)
    for item in items:
        grid.add_row(*row(item))
    console.show(grid, f"{len(items)} {kind.plural if len(items) != 1 else kind.noun}")


def show_one(kind: Kind, item: Any, output: str) -> None:
    """One definition whole: field by field, or as a document `tessera apply` reads back."""
    if output == "yaml":
        sys.stdout.write(manifests.to_yaml([manifests.to_document(kind, item)]))
    elif output == "json":
        console.print_data(manifests.to_document(kind, item), output)
    else:
        console.show(console.details(console.rows(item)))


def _status(message: Any) -> Any:
    text = console.enum_text(message.DESCRIPTOR.fields_by_name["status"], message.status)
    return console.status(text)


def _goal(message: Any) -> str:
    if not message.HasField("goal"):
        return ""
    kind = console.enum_text(message.goal.DESCRIPTOR.fields_by_name["kind"], message.goal.kind)
    return f"{message.goal.event_type} ({kind})"


def _variants(message: Any) -> str:
    total = sum(v.weight for v in message.variants) or 1.0
    control = message.control_variant_key
    return "\n".join(
        f"{v.key} {v.weight / total:.0%}" + (" (control)" if v.key == control != "control" else "")
        for v in message.variants
    )


def _segment_row(segment: Any) -> list[Any]:
    notation = segment.rule.WhichOneof("rule") or ""
    rule = getattr(segment.rule, notation) if notation else ""
    return [
        segment.key,
        segment.name,
        rule if notation == "text" else f"{notation}: {rule}",
        str(segment.version),
        console.when(segment.updated_at),
    ]


def _experiment_row(experiment: Any) -> list[Any]:
    return [
        experiment.key,
        _status(experiment),
        _variants(experiment),
        f"{experiment.traffic_fraction or 1.0:.0%}",
        ", ".join(experiment.audience_segment_keys) or "everyone",
        _goal(experiment),
        str(experiment.version),
    ]


def _campaign_row(campaign: Any) -> list[Any]:
    return [
        campaign.key,
        _status(campaign),
        str(campaign.priority),
        ", ".join(campaign.placements),
        ", ".join(campaign.audience_segment_keys) or "everyone",
        _variants(campaign),
        _goal(campaign),
        str(campaign.version),
    ]


WHOLE = ("KEY", "STATUS", "PRIORITY", "TRAFFIC", "GOAL", "VERSION", "UPDATED")
"""Columns of short values, never wrapped: the others wrap when the terminal is narrow."""

SUMMARIES: dict[str, tuple[tuple[str, ...], Callable[[Any], list[Any]]]] = {
    "Segment": (("KEY", "NAME", "RULE", "VERSION", "UPDATED"), _segment_row),
    "Experiment": (
        ("KEY", "STATUS", "VARIANTS", "TRAFFIC", "AUDIENCE", "GOAL", "VERSION"),
        _experiment_row,
    ),
    "Campaign": (
        ("KEY", "STATUS", "PRIORITY", "PLACEMENTS", "AUDIENCE", "VARIANTS", "GOAL", "VERSION"),
        _campaign_row,
    ),
}


# -- profiles and events -------------------------------------------------------


def profiles(args: argparse.Namespace) -> int:
    """`tessera profiles get|export|delete`."""
    from tessera.common.v1 import common_pb2
    from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

    if bool(args.profile_id) == bool(args.identity):
        raise Usage(f"profiles {args.action}: name a PROFILE_ID or an --identity TYPE=VALUE")
    with ExitStack() as stack:
        service = _connect(stack, _address(args, "profiles"), args.timeout)
        stub = profiles_pb2_grpc.ProfileServiceStub(service.channel)
        if args.identity:
            kind, value = args.identity
            lookup = profiles_pb2.GetProfileRequest(
                identity=common_pb2.Identity(type=kind, value=value)
            )
        else:
            lookup = profiles_pb2.GetProfileRequest(profile_id=args.profile_id)
        if args.action == "get" or args.identity:
            profile = service.call(stub.GetProfile, lookup).profile
            profile_id = profile.profile_id
        else:
            profile_id = args.profile_id
        if args.action == "get":
            _show_profile(profile, args.output)
        elif args.action == "export":
            _show_export(_export(service, stub, profile_id), args.output)
        else:
            reply = service.call(
                stub.DeleteProfile, profiles_pb2.DeleteProfileRequest(profile_id=profile_id)
            )
            print(f"profile {profile_id} deleted: {reply.deleted_events} events erased")
    return 0


def _show_profile(profile: Any, output: str) -> None:
    if output != "table":
        console.print_data(manifests.to_dict(profile), output)
        return
    rows = console.rows(profile, skip=["event_history"])
    series = len(profile.event_history.series)
    rows.append(("event_history", f"{series} series by day (-o yaml shows them)"))
    console.show(console.details(rows))


def _export(service: Service, stub: Any, profile_id: str) -> Any:
    """Every page of ExportProfile as one response: the first page's profile, all events."""
    from tessera.profiles.v1 import profiles_pb2

    whole = profiles_pb2.ExportProfileResponse()
    token = ""
    while True:
        page = service.call(
            stub.ExportProfile,
            profiles_pb2.ExportProfileRequest(profile_id=profile_id, page_token=token),
        )
        if not token:
            whole.CopyFrom(page)
        else:
            whole.events.extend(page.events)
        token = page.next_page_token
        if not token:
            whole.next_page_token = ""
            return whole


def _show_export(export: Any, output: str) -> None:
    if output != "table":
        console.print_data(manifests.to_dict(export), output)
        return
    rows = console.rows(export.profile, "profile.", skip=["profile.event_history"])
    rows += console.rows(export, skip=["profile", "events"])
    grid = console.table("TIME", "TYPE", "CHANNEL", "EVENT ID", "PROPERTIES", whole=["EVENT ID"])
    channel = export.events[0].DESCRIPTOR.fields_by_name["channel"] if export.events else None
    for event in export.events:
        assert channel is not None
        grid.add_row(
            console.when(event.timestamp),
            event.type,
            console.enum_text(channel, event.channel),
            event.event_id,
            console.plain_json(json_format.MessageToDict(event.properties)),
        )
    console.show(console.details(rows), "", grid, f"{len(export.events)} events")


def track(args: argparse.Namespace) -> int:
    """`tessera track`: one event through ProfileService.Track."""
    from tessera.common.v1 import common_pb2
    from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

    if not (args.identity or args.profile_id):
        raise Usage("track: name the person with --identity TYPE=VALUE or --profile-id")
    event = common_pb2.Event(
        event_id=args.event_id or uuid.uuid4().hex,
        profile_id=args.profile_id,
        identities=[common_pb2.Identity(type=k, value=v) for k, v in args.identity],
        channel=common_pb2.Channel.Value(f"CHANNEL_{args.channel.upper()}"),
        type=args.type,
    )
    properties = struct_pb2.Struct()
    properties.update({**args.properties, **dict(args.property)})
    event.properties.CopyFrom(properties)
    if args.timestamp:
        try:
            event.timestamp.FromJsonString(args.timestamp)
        except ValueError as error:
            raise Usage(f"track: --timestamp {args.timestamp!r}: {error}") from None
    with ExitStack() as stack:
        service = _connect(stack, _address(args, "profiles"), args.timeout)
        stub = profiles_pb2_grpc.ProfileServiceStub(service.channel)
        try:
            reply = service.call(stub.Track, profiles_pb2.TrackRequest(event=event))
        except Failed as failure:  # the same id makes the retry count once
            raise Failed(f"{failure}; send it again with --event-id {event.event_id}") from None
    if args.output != "table":
        shown = {"event_id": event.event_id, "profile_id": reply.profile_id}
        console.print_data({**shown, "duplicate": reply.duplicate}, args.output)
    else:
        again = " (a duplicate: stored before, counted once)" if reply.duplicate else ""
        print(f"event {event.event_id} tracked on profile {reply.profile_id}{again}")
    return 0


# -- apply ---------------------------------------------------------------------


@dataclass
class Change:
    """What apply does with one definition."""

    definition: Definition
    stored: Any
    """The stored definition; None when there is none yet."""
    action: str
    """created, configured or unchanged."""
    diff: list[str]


def apply(args: argparse.Namespace) -> int:
    """`tessera apply -f`: plan every definition, then write the changed ones in order."""
    try:
        definitions = manifests.apply_order(manifests.load(args.filename))
    except ManifestError as error:
        raise Failed(str(error)) from None
    if not definitions:
        raise Failed(f"apply: no definitions in {', '.join(map(str, args.filename))}")
    from rich.text import Text

    out = console.console()
    with ExitStack() as stack:
        services: dict[str, Service] = {}
        for definition in definitions:
            name = definition.kind.service
            if name not in services:
                address = _address(args, name, f"{name}_address")
                services[name] = _connect(stack, address, args.timeout)
        changes = [_plan(d, services[d.kind.service]) for d in definitions]
        counts = {"created": 0, "configured": 0, "unchanged": 0}
        for change in changes:
            counts[change.action] += 1
            written, collisions = ("", []) if args.dry_run else _write(change, services)
            suffix = " (dry run)" if args.dry_run and change.action != "unchanged" else written
            out.print(f"{change.definition.name} {change.action}{suffix}", soft_wrap=True)
            for line in change.diff:
                out.print(Text(line, style=_diff_style(line)), soft_wrap=True)
            for collision in collisions:  # the roadmap check of a campaign write
                out.print(Text(f"  collides with {collision}", style="yellow"), soft_wrap=True)
    summary = ", ".join(f"{n} {action}" for action, n in counts.items())
    if args.dry_run:
        out.print(f"dry run: {summary}; nothing written", soft_wrap=True)
    else:
        out.print(summary, soft_wrap=True)
    return 0


def _plan(definition: Definition, service: Service) -> Change:
    kind = definition.kind
    try:
        desired = manifests.as_stored(kind, definition.message)
    except TesseraError as error:  # the service would refuse it the same way
        where = definition.where(error.field)
        raise Failed(f"{where}: {definition.name}: {error.code_name}: {error}") from None
    stored = _find(kind, service, definition.key)
    if stored is None:
        return Change(definition, None, "created", [])
    if as_written(stored) == desired:
        return Change(definition, stored, "unchanged", [])
    lines = manifests.diff(
        kind,
        stored,
        desired,
        f"{definition.name} (stored, version {stored.version})",
        f"{definition.name} ({definition.file})",
    )
    return Change(definition, stored, "configured", lines)


def _write(change: Change, services: dict[str, Service]) -> tuple[str, list[str]]:
    """Create or update one definition; what to add to its line (its new version).

    And, for a campaign, the collisions the roadmap check reported
    (docs/roadmap.md), one line each.
    """
    definition = change.definition
    kind = definition.kind
    service = services[kind.service]
    if change.action == "unchanged":
        return "", []
    try:
        if change.stored is None:
            reply = service.call(
                kind.method(service.channel, "Create"),
                kind.request("Create", **{kind.noun: definition.message}),
            )
        else:
            # The version planned against: a change made since then is not overwritten.
            reply = service.call(
                kind.method(service.channel, "Update"),
                kind.request(
                    "Update",
                    **{kind.noun: definition.message, "expected_version": change.stored.version},
                ),
            )
    except Failed as failure:
        # A service names the field first ("campaign.priority: ..."): point at its line.
        field_path = str(failure).partition(": ")[2].partition(": ")[0]
        where = definition.where(field_path if " " not in field_path else "")
        raise Failed(f"{where}: {definition.name}: {failure}") from None
    collisions = [f"{c.campaign_key}: {c.summary}" for c in getattr(reply, "collisions", ())]
    return f" (version {getattr(reply, kind.noun).version})", collisions


def _diff_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("@@"):
        return "cyan"
    return "green" if line.startswith("+") else "red" if line.startswith("-") else ""
