"""The `tessera` command: run the suite, one service, or call Decide.

tessera up                 start all four services, stop them on Ctrl-C
tessera serve profiles     serve one service in this process
tessera decide --identity cookie=abc --placement home_hero
tessera train conversion   learn the conversion model from the stored events
tessera report --simulate  the report of a simulated experiment: table and PNG
tessera apply -f examples/juicer
                           create or update segments, experiments, campaigns from YAML
tessera segments list      (also experiments, campaigns: list, get, delete; profiles: get,
                           export, delete; track): a table, or --output json / yaml
tessera segments size KEY  size and value of a segment (or a rule)
tessera migrate            create or upgrade every service's tables
"""

from __future__ import annotations

import sys

# gRPC core reads its settings when grpc is first imported: a process that
# serves takes Tessera's before anything imports grpc.
from tessera import grpc_setup

if grpc_setup.serves(sys.argv):
    grpc_setup.for_serving()

# isort: split

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from tessera import admin, logs, metrics, tracing
from tessera.channels import CHANNELS
from tessera.console import error_line
from tessera.errors import TesseraError
from tessera.settings import SERVICES, RuntimeSettings, check_exposure
from tessera.suite import START_ORDER, start_suite

# Module and class of each service's wiring; imported only when served.
FACTORIES = {
    "profiles": ("tessera.profiles.server", "ProfilesService"),
    "segments": ("tessera.segments.server", "SegmentsService"),
    "experiments": ("tessera.experiments.server", "ExperimentsService"),
    "decision": ("tessera.decision.server", "DecisionService"),
}


def build_service(name: str) -> Any:
    """The service object for `name`, with settings from the environment."""
    module_name, class_name = FACTORIES[name]
    return getattr(importlib.import_module(module_name), class_name)()


def serve(name: str, worker: bool = False) -> int:
    """Serve one service until SIGTERM or SIGINT; several workers when configured."""
    from tessera import server, workers

    settings = RuntimeSettings()
    logs.configure(name, settings.log_level)
    try:
        check_exposure(settings)
        tracing.configure(name, settings.otlp_endpoint)
        if not worker and settings.workers > 1:
            return workers.supervise(name, settings)
    except TesseraError as error:
        logging.getLogger("tessera.cli").error(str(error), extra={"service": name})
        return 1

    async def main() -> None:
        # Built inside the event loop: peer channels bind to the loop that runs them.
        service = build_service(name)
        metrics.serve(settings.host, settings.metrics_port_of(name))
        await server.run(
            service,
            settings.host,
            settings.port_of(name),
            settings.grace_period_s,
            reuse_port=worker,
        )

    try:
        asyncio.run(main())
    except Exception:  # one structured line saying why, not a bare traceback
        logging.getLogger("tessera.cli").exception("could not serve", extra={"service": name})
        return 1
    return 0


def migrate(services: list[str], check: bool, new_revision: str | None = None) -> int:
    """Upgrade (or with `check`, only report) the tables of `services`, all four by default."""
    from tessera import db, migrations

    if new_revision is not None:
        for name in services:
            print(f"{name}: wrote {migrations.new_revision(name, new_revision)}")
        return 0

    settings = RuntimeSettings()
    logs.configure("migrate", settings.log_level)
    behind = False
    for name in services or START_ORDER:
        database = db.open_database(settings, name)
        try:
            if check:
                at, head, known = migrations.state(database.engine, name)
                verdict = "up to date" if at == head else "behind" if known else "ahead"
                behind = behind or (at != head and known)
                print(f"{name}: at {at or 'nothing'}, this release's head {head}: {verdict}")
                continue
            done = migrations.upgrade(database.engine, name)
        except TesseraError as error:
            print(f"{name}: {error}", file=sys.stderr)
            return 1
        finally:
            database.dispose()
        moved = f"{done.before or 'empty'} -> {done.after}" if done.changed else "nothing to do"
        print(f"{name}: {moved} (at {done.after})")
    return 1 if behind else 0


def _take_terminal() -> Callable[[], None]:
    """Make this process the terminal's foreground, so Ctrl-C reaches it alone.

    Under `make run`, Ctrl-C would otherwise also reach make, which reports
    the run as interrupted (exit 2) even when the suite stopped cleanly. Like
    a shell's job control: a process group of our own, given the terminal,
    and the terminal given back on the way out. Returns the give-back.
    """
    if not sys.stdin.isatty():
        return lambda: None
    fd = sys.stdin.fileno()

    def foreground(group: int) -> None:
        # A background group that sets the foreground gets SIGTTOU: ignore it.
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(fd, group)
        finally:
            signal.signal(signal.SIGTTOU, previous)

    try:
        before = os.tcgetpgrp(fd)
        os.setpgid(0, 0)
        foreground(os.getpgrp())
    except OSError:  # a session leader, or no controlling terminal
        return lambda: None
    return lambda: foreground(before)


def up() -> int:
    """Start all four services as processes; stop them all on Ctrl-C or SIGTERM."""
    give_back = _take_terminal()
    try:
        return _up()
    finally:
        give_back()


def _up() -> int:
    stopping = False

    def stop_all(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        suite = start_suite()
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print("\nTessera is up:")
    for name in START_ORDER:
        print(f"  {name:<12} {suite.addresses[name]}")
    print("Ctrl-C stops all services.\n", flush=True)
    code = 0
    while not stopping:
        crashed = suite.exited()
        if crashed:
            print(f"{crashed} exited unexpectedly; stopping the suite", file=sys.stderr)
            code = 1
            break
        time.sleep(0.2)
    codes = suite.stop()
    print(f"Tessera stopped ({', '.join(f'{n}={c}' for n, c in codes.items())}).", flush=True)
    return code if all(c == 0 for c in codes.values()) else 1


def decide(args: argparse.Namespace) -> int:
    """Call Decide once and print the answer as JSON."""
    from tessera.common.v1 import common_pb2
    from tessera.decision.v1 import decision_pb2, decision_pb2_grpc

    request = decision_pb2.DecideRequest(
        identities=[common_pb2.Identity(type=kind, value=value) for kind, value in args.identity],
        channel=common_pb2.Channel.Value(f"CHANNEL_{args.channel.upper()}"),
        placements=args.placement,
        context=args.context,
        explain=args.explain,
    )
    address = args.address or RuntimeSettings().address_of("decision")
    with grpc.insecure_channel(address) as channel:
        try:
            reply = decision_pb2_grpc.DecisionServiceStub(channel).Decide(
                request, timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(error_line(error, address), file=sys.stderr)
            return 1
    shown = json_format.MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    print(json.dumps(shown, indent=2))
    return 0


DEMO_VISITOR = "visitor-42"


def demo(args: argparse.Namespace) -> int:
    """Define the juicer example of the README on a running suite; safe to run twice."""
    from tessera.common.v1 import common_pb2
    from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
    from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
    from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

    settings = RuntimeSettings()
    segment = segments_pb2.Segment(
        key="juicer-fans",
        name="Juicer fans",
        description="Looked at juicers at least twice in this visit.",
        rule=segments_pb2.Rule(text='session.category_views("juicers") >= 2'),
    )
    campaign = decision_pb2.Campaign(
        key="juicer-promo",
        name="Juicer promotion",
        goal=common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION),
        placements=["home_hero"],
        audience_segment_keys=["juicer-fans"],
        priority=10,
        control_variant_key="control",
        status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
    )
    banner = campaign.variants.add(key="juicer-banner", weight=9)
    banner.payload.update({"title": "Fresh juice, 20% off", "image": "/img/juicers.jpg"})
    campaign.variants.add(key="control", weight=1)
    visitor = common_pb2.Identity(type="cookie", value=DEMO_VISITOR)
    try:
        with grpc.insecure_channel(settings.address_of("segments")) as channel:
            segments = segments_pb2_grpc.SegmentServiceStub(channel)
            _create_once(
                lambda: segments.CreateSegment(segments_pb2.CreateSegmentRequest(segment=segment))
            )
        with grpc.insecure_channel(settings.address_of("decision")) as channel:
            decision = decision_pb2_grpc.DecisionServiceStub(channel)
            _create_once(
                lambda: decision.CreateCampaign(
                    decision_pb2.CreateCampaignRequest(campaign=campaign)
                )
            )
        with grpc.insecure_channel(settings.address_of("profiles")) as channel:
            profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
            for index, product in enumerate(("j-100", "j-200")):
                event = common_pb2.Event(
                    event_id=f"demo-view-{index}",
                    identities=[visitor],
                    channel=common_pb2.CHANNEL_WEB,
                    type="product_view",
                )
                event.properties.update({"category": "juicers", "product_id": product})
                profiles.Track(profiles_pb2.TrackRequest(event=event), timeout=5)
    except grpc.RpcError as error:
        print(error_line(error, settings.address_of("segments")), file=sys.stderr)
        return 1
    print(
        "Defined segment juicer-fans and campaign juicer-promo (90% banner, 10% control);\n"
        f"{DEMO_VISITOR} looked at two juicers. Now try:\n"
        f"  tessera decide --identity cookie={DEMO_VISITOR} "
        "--placement home_hero --placement footer"
    )
    return 0


def _context(text: str) -> struct_pb2.Struct:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"page": "home"}\'')
    context = struct_pb2.Struct()
    context.update(value)
    return context


def _create_once(create: Any) -> None:
    try:
        create()
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tessera` console script."""
    parser = argparse.ArgumentParser(
        prog="tessera", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start all four services")
    serve_parser = commands.add_parser("serve", help="serve one service")
    serve_parser.add_argument("service", choices=SERVICES)
    # A worker of a supervised service (TESSERA_WORKERS > 1): shares the port.
    serve_parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    commands.add_parser("demo", help="define the README's juicer example on a running suite")
    decide_parser = commands.add_parser(
        "decide",
        help="call Decide and print the answer",
        description="Call Decide once on a running suite and print the answer as JSON.",
    )
    decide_parser.add_argument(
        "--identity",
        action="append",
        required=True,
        type=admin.identity_arg,
        metavar="TYPE=VALUE",
        help="an identity of the visitor, e.g. cookie=abc or email=a@b.c; repeatable",
    )
    decide_parser.add_argument(
        "--placement",
        action="append",
        required=True,
        help="a placement to decide, e.g. home_hero; repeatable",
    )
    decide_parser.add_argument(
        "--channel",
        default="web",
        choices=CHANNELS,
        help="the calling channel (default: web)",
    )
    decide_parser.add_argument(
        "--context", type=_context, help="request context as a JSON object, e.g. '{\"page\": 1}'"
    )
    decide_parser.add_argument(
        "--explain",
        action="store_true",
        help="also say why every other campaign of each placement was skipped (docs/decide.md)",
    )
    decide_parser.add_argument(
        "--address", help="decision service host:port (default: from TESSERA_* settings)"
    )
    decide_parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait (default: 5)"
    )
    train_parser = commands.add_parser(
        "train",
        help="learn a model from the stored events",
        description="Learn a model from the profile service's stored events and store it.",
    )
    models = train_parser.add_subparsers(dest="model", required=True)
    conversion_parser = models.add_parser(
        "conversion",
        help="the conversion model behind features.conversion_probability",
        description="Learn the conversion model from the events in the profile service's "
        "database (TESSERA_DATABASE_URL, or the embedded file in TESSERA_DATA_DIR), report "
        "AUC and calibration on held-out visits, and store it under a new version; running "
        "profile services use it within TESSERA_MODEL_POLL_S seconds.",
    )
    conversion_parser.add_argument(
        "--goal",
        help="event type that counts as converting (default: TESSERA_CONVERSION_GOAL, purchase)",
    )
    conversion_parser.add_argument(
        "--held-out",
        type=float,
        default=0.3,
        help="share of visits kept out of fitting to judge the model (default: 0.3)",
    )
    conversion_parser.add_argument(
        "--seed", type=int, default=0, help="seed of the held-out split (default: 0)"
    )
    migrate_parser = commands.add_parser(
        "migrate",
        help="create or upgrade the services' tables",
        description="Run the services' schema migrations (Alembic) against TESSERA_DATABASE_URL "
        "(or the embedded files in TESSERA_DATA_DIR): each service's tables to this release's "
        "revision. Safe to run again, and from several places at once.",
    )
    migrate_parser.add_argument(
        "service",
        nargs="*",
        metavar="SERVICE",
        help=f"services to migrate: {', '.join(SERVICES)} (default: all)",
    )
    migrate_parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; say where each schema stands, exit 1 if one is behind",
    )
    migrate_parser.add_argument(
        "--new-revision",
        metavar="MESSAGE",
        help="for developers: write the named service's next revision, what its models add "
        "to its tables (Alembic autogenerate), to review before committing",
    )
    report_parser = commands.add_parser(
        "report",
        help="an experiment's results: a table per variant and a chart of lift over time",
        description="Print an experiment's results per variant (lift, intervals, p-values, "
        "chance to beat control, status) and write a PNG of the cumulative lift with its "
        "always-valid interval over time.",
    )
    # The experiments service's own command, imported only when it runs.
    importlib.import_module("tessera.experiments.report_cli").add_arguments(report_parser)
    # The decision service's own command, imported only when it runs.
    roadmap_cli = importlib.import_module("tessera.decision.roadmap_cli")
    roadmap_cli.configure(commands)
    actions = admin.add_commands(commands)
    # `segments size` is the segment service's own command: tessera.segments.size_cli.
    segments_cli = importlib.import_module("tessera.segments.size_cli")
    segments_cli.configure(actions["segments"])
    args = parser.parse_args(argv)
    if args.command == "migrate":
        unknown = [name for name in args.service if name not in SERVICES]
        if unknown:
            migrate_parser.error(
                f"no service {', '.join(unknown)}; choose from {', '.join(SERVICES)}"
            )
        if args.new_revision is not None and len(args.service) != 1:
            migrate_parser.error("--new-revision writes one service's revision: name the service")
        return migrate(args.service, args.check, args.new_revision)
    if args.command == "report":
        return int(importlib.import_module("tessera.experiments.report_cli").run(args))
    if args.command == "roadmap":
        return int(roadmap_cli.run(args))
    if args.command == "segments" and args.action == "size":
        return int(segments_cli.run(args))
    if args.command in admin.COMMANDS:
        return admin.run(args)
    if args.command == "train":
        # The profile service's own command, imported only when it runs.
        training = importlib.import_module("tessera.profiles.train_cli")
        return int(training.run(args))
    if args.command == "up":
        return up()
    if args.command == "serve":
        return serve(args.service, worker=args.worker)
    if args.command == "demo":
        return demo(args)
    return decide(args)


if __name__ == "__main__":
    sys.exit(main())
