"""One benchmark run: echo floor and Decide through the whole suite, in both modes.

At each concurrency: echo, Decide with in-process evaluation (the suite's own
decision service) and Decide with evaluation over RPC (a second decision
service, TESSERA_EVALUATION=rpc, on the same suite and data).

    python -m bench                 5 s per level at concurrency 1, 16, 64
    python -m bench --quick         ~1 s per level, a smoke run
    python -m bench --requests 20000
    python -m bench --modes rpc     Decide over RPC only

See bench/README.md for the method and how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import report, seed
from bench.load import LoadPool, split
from bench.proc import cpu_seconds, with_descendants
from bench.stats import (
    BASELINE,
    DECIDE_MODES,
    PROFILE_TARGETS,
    RELAY,
    STREAM_TARGETS,
    LevelSummary,
    Sample,
    ratios,
    summarise_rounds,
)
from tessera.suite import START_ORDER, free_port, start_suite, wait_serving

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODES = tuple(DECIDE_MODES.values())
"""TESSERA_EVALUATION modes, in the order they are measured: in_process, rpc."""
TARGET_OF_MODE = {mode: target for target, mode in DECIDE_MODES.items()}
ROUND_CALLS_PER_WORKER = 10
"""With --requests in rounds: the least calls each worker makes in a round."""
ROUND_WARMUP_S = 0.25
"""Unmeasured seconds at the start of every round after the first."""
READ_TARGET = "get-profile"
"""The profile service's read target: measured with the reads, before the writes."""
QUIET_WINDOW_S = 0.5
QUIET_CPU_SHARE = 0.15
"""The suite is quiet once all its processes together spend less than this share of
one core over QUIET_WINDOW_S (idle, with its feeds polling, they spend about 0.06)."""
QUIET_TIMEOUT_S = 60.0
"""A suite not quiet within this many seconds makes the run a problem."""
RPC_DECISION = "decision-rpc"
"""Name of the second decision service (TESSERA_EVALUATION=rpc) in logs and exit codes."""

T = TypeVar("T")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick overrides the timing and pool-size ones."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per level")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="measure a fixed number of requests per level instead of a duration",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="cap of a level's measured window with --requests",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="measure each read level (echo, Decide, GetProfile) in this many rounds, "
        "interleaved with the other reads at the same concurrency (each round a share "
        "of --duration or --requests)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="~1 s levels in one round, 200 profiles"
    )
    parser.add_argument(
        "--concurrency", default="1,16,64", help="comma-separated closed-loop worker counts"
    )
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--profiles", type=int, default=1000, help="seeded profiles")
    parser.add_argument("--payload-bytes", type=int, default=64, help="echo payload size")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each call, s")
    parser.add_argument("--echo-only", action="store_true", help="skip the suite and Decide")
    parser.add_argument(
        "--skip-profiles",
        action="store_true",
        help="skip the profile service targets (get-profile, track, track-stream, track-batched)",
    )
    parser.add_argument(
        "--skip-decide",
        action="store_true",
        help="skip both Decide targets (and the rpc decision service): echo and the profile "
        "service only",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated evaluation modes of Decide to measure: in_process, rpc",
    )
    parser.add_argument(
        "--suite-env",
        action="append",
        default=[],
        metavar="TESSERA_X=VALUE",
        help="extra setting for the suite's processes (repeatable)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.profiles = 1.0, 0.3, min(args.profiles, 200)
        args.rounds = 1
        if args.requests is not None:
            args.requests = min(args.requests, 2000)
    args.levels = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    if not args.levels or min(args.levels) < 1:
        parser.error("--concurrency needs positive integers")
    if args.processes < 1 or args.profiles < 2:
        parser.error("--processes must be >= 1 and --profiles >= 2")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    least = ROUND_CALLS_PER_WORKER * args.rounds * max(args.levels)
    if args.requests is not None and args.rounds > 1 and args.requests < least:
        # A round's share spread over the workers: fewer calls than workers
        # would leave some idle, and every round ends in a wind-down.
        parser.error(
            f"--requests {args.requests} in {args.rounds} rounds at concurrency "
            f"{max(args.levels)}: give at least {least}, or --rounds 1"
        )
    for item in args.suite_env:
        if "=" not in item or not item.startswith("TESSERA_"):
            parser.error(f"--suite-env {item!r}: expected TESSERA_NAME=VALUE")
        if item.startswith("TESSERA_EVALUATION="):
            parser.error("--suite-env TESSERA_EVALUATION: use --modes; each mode has a service")
    chosen = {m.strip() for m in args.modes.split(",") if m.strip()}
    if not chosen or chosen - set(MODES):
        parser.error(f"--modes {args.modes!r}: expected a comma-separated subset of {MODES}")
    args.modes = [] if args.skip_decide else [m for m in MODES if m in chosen]
    if args.skip_decide and args.skip_profiles:
        parser.error("--skip-decide with --skip-profiles leaves echo alone: use --echo-only")
    return args


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def echo_server(timeout_s: float = 30.0, relay_to: str | None = None) -> Iterator[str]:
    """Run `python -m bench.echo` in its own process; yield its loopback address.

    With `relay_to`, the relay: each call passed on to the echo at that address.
    """
    with echo_process(timeout_s, relay_to) as (address, _):
        yield address


@contextlib.contextmanager
def echo_process(timeout_s: float = 30.0, relay_to: str | None = None) -> Iterator[tuple[str, int]]:
    """Run `python -m bench.echo` in its own process; yield its address and process id."""
    relay = [] if relay_to is None else ["--relay-to", relay_to]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.echo", "--host", "127.0.0.1", "--port", "0", *relay],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        line = process.stdout.readline() if ready else ""
        if " listening on " not in line:
            raise RuntimeError(f"echo server did not start (said {line.strip()!r})")
        yield line.rsplit(" ", 1)[1].strip(), process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.returncode != 0:
            _say(f"echo server exited with {process.returncode}")


@dataclass
class SuiteRun:
    """The suite as the benchmark sees it: addresses, seeded profiles, what went wrong."""

    addresses: dict[str, str] = field(default_factory=dict)
    profiles: list[seed.SeededProfile] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)
    """Decide targets ready to measure and the decision service address of each."""
    info: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    """Why the suite (and so every Decide target) is not measured."""
    rpc_problem: str | None = None
    """Why decide-rpc alone is not measured."""
    pids: dict[str, int] = field(default_factory=dict)
    """Each running service's process id (the rpc decision service's too)."""

    @property
    def cookies(self) -> list[str]:
        """The seeded profiles' cookies, which Decide requests rotate over."""
        return [p.cookie for p in self.profiles]


def _suite_env(data_dir: str, extra: list[str]) -> dict[str, str]:
    env = {
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_DATA_DIR": data_dir,
        # Embedded defaults whatever the caller's shell has set.
        "TESSERA_DATABASE_URL": "",
        "TESSERA_REDIS_URL": "",
        "TESSERA_LOG_LEVEL": "WARNING",
        # The suite's own decision service is the in-process one, whatever
        # the shell says; rpc runs in a process of its own (rpc_decision).
        "TESSERA_EVALUATION": "in_process",
        # Empty addresses make start_suite point peers at the free ports it picks.
        **{f"TESSERA_{name.upper()}_ADDRESS": "" for name in START_ORDER},
    }
    env.update(item.split("=", 1) for item in extra)  # type: ignore[misc]
    return env


@contextlib.contextmanager
def suite_for_bench(args: argparse.Namespace, run_id: str) -> Iterator[SuiteRun]:
    """Start and seed the suite on embedded stores in a temporary data dir.

    With mode rpc, a second decision service (`rpc_decision`) joins it. A
    suite or rpc service that fails to start or to answer is recorded in
    `problem` or `rpc_problem` rather than raised, so whatever still works
    is measured and reported.
    """
    run = SuiteRun()
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as data_dir:
        env = _suite_env(data_dir, args.suite_env)
        run.info["env"] = {k: v for k, v in env.items() if k != "TESSERA_DATA_DIR"}
        log_path = Path(data_dir) / "suite.log"
        suite = None
        rpc: subprocess.Popen[bytes] | None = None
        with log_path.open("wb") as log:
            try:
                _say("starting the suite ...")
                suite = start_suite(env, free_ports=True, stdout=log.fileno())
                run.addresses = dict(suite.addresses)
                run.info["addresses"] = run.addresses
                run.pids = {name: process.pid for name, process in suite.processes.items()}
                _seed(run, args, run_id)
                if "in_process" in args.modes:
                    run.targets[TARGET_OF_MODE["in_process"]] = run.addresses["decision"]
            except Exception as error:
                run.problem = f"{type(error).__name__}: {error}"
                _say(f"suite unavailable: {run.problem}")
                _say(_tail(log_path))
            if run.problem is None and "rpc" in args.modes:
                rpc_log = Path(data_dir) / f"{RPC_DECISION}.log"
                try:
                    rpc = rpc_decision(run, env, rpc_log, suite.grace_s if suite else 5.0)
                    run.pids[RPC_DECISION] = rpc.pid
                except Exception as error:
                    run.rpc_problem = f"{type(error).__name__}: {error}"
                    _say(f"{RPC_DECISION} unavailable: {run.rpc_problem}")
                    _say(_tail(rpc_log))
            try:
                yield run
            finally:
                codes: dict[str, int] = {}
                # The rpc service first: it calls the suite's services.
                if rpc is not None:
                    codes[RPC_DECISION] = _stop(rpc, suite.grace_s if suite else 5.0)
                if suite is not None:
                    codes = {**suite.stop(), **codes}
                if codes:
                    run.info["exit_codes"] = codes


def rpc_decision(
    run: SuiteRun, suite_env: dict[str, str], log_path: Path, grace_s: float
) -> subprocess.Popen[bytes]:
    """Start a decision service with TESSERA_EVALUATION=rpc beside the seeded suite.

    It shares the suite's data dir, so it reads the campaign the suite's
    decision service stored (SQLite in WAL mode; this process only reads
    campaigns) instead of seeding it again: CreateCampaign would also create
    the campaign's experiment, which exists already. Its peers are the
    suite's profile, segment and experiment services. Returns the process
    once Decide there gives the campaign; `run.targets` then has decide-rpc.
    """
    port = free_port()
    address = f"127.0.0.1:{port}"
    overrides = {
        "TESSERA_EVALUATION": "rpc",
        "TESSERA_DECISION_PORT": str(port),
        "TESSERA_DECISION_ADDRESS": "",
        **{
            f"TESSERA_{name.upper()}_ADDRESS": run.addresses[name]
            for name in ("profiles", "segments", "experiments")
        },
    }
    _say(f"starting {RPC_DECISION} (TESSERA_EVALUATION=rpc) ...")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "serve", "decision"],
            env={**os.environ, **suite_env, **overrides},
            stdout=log.fileno(),
            stderr=log.fileno(),
        )
    try:
        if not wait_serving(address, 30.0, process):
            code = process.poll()
            why = f"exited with {code}" if code is not None else "did not become SERVING"
            raise RuntimeError(f"{RPC_DECISION} {why} at {address}")
        ready_s = asyncio.run(seed.wait_until_decides(address, run.profiles))
    except BaseException:
        _stop(process, grace_s)
        raise
    _say(f"{RPC_DECISION} sees the campaign after {ready_s:.2f} s")
    run.targets[TARGET_OF_MODE["rpc"]] = address
    run.info[RPC_DECISION] = {
        "address": address,
        "env": {k: v for k, v in overrides.items() if k != "TESSERA_DECISION_PORT"},
        "data_dir": "shared with the suite's decision service",
        "decide_ready_s": round(ready_s, 3),
    }
    return process


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM `process`, wait for its drain, kill it past that; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(grace_s + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join([f"--- {path.name} (last lines) ---", *text[-lines:]])


def _seed(run: SuiteRun, args: argparse.Namespace, run_id: str) -> None:
    started = time.monotonic()
    asyncio.run(seed.seed_definitions(run.addresses["segments"], run.addresses["decision"]))
    profiles = asyncio.run(seed.seed_profiles(run.addresses["profiles"], args.profiles, run_id))
    seeded_s = time.monotonic() - started
    _say(f"seeded 1 segment, 1 campaign, {len(profiles)} profiles in {seeded_s:.1f} s")
    ready_s = asyncio.run(seed.wait_until_decides(run.addresses["decision"], profiles))
    _say(f"Decide sees the campaign after {ready_s:.2f} s")
    visits_s = asyncio.run(
        seed.first_visits(run.addresses["decision"], run.addresses["profiles"], profiles)
    )
    _say(f"every profile visited once, first exposures stuck, in {visits_s:.1f} s")
    run.profiles = list(profiles)
    run.info["seed"] = {
        "segment": seed.SEGMENT_KEY,
        "campaign": seed.CAMPAIGN_KEY,
        "placement": seed.PLACEMENT,
        "profiles": len(profiles),
        "gold_profiles": sum(p.gold for p in profiles),
        "seed_s": round(seeded_s, 3),
        "decide_ready_s": round(ready_s, 3),
        "first_visits_s": round(visits_s, 3),
    }


def settle(pids: dict[str, int], timeout_s: float = QUIET_TIMEOUT_S) -> float | None:
    """Wait until the suite's processes are quiet; the seconds waited, None if they never were.

    A write level leaves work behind: the segment service follows every change
    on the profile service's feed, and after a few seconds of TrackStream at
    full speed both spend seconds more at a core each. A read level measured
    then would measure that backlog as much as itself. A service run as
    several workers (`TESSERA_WORKERS`) is its supervisor's pid: its workers
    are counted with it. A process that starts during a window counts all it
    spent; one that ends during it is left out of it.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = _cpu_by_pid(pids.values())
        time.sleep(QUIET_WINDOW_S)
        after = _cpu_by_pid(pids.values())
        spent = sum(used - before.get(pid, 0.0) for pid, used in after.items())
        if spent < QUIET_CPU_SHARE * QUIET_WINDOW_S:
            return time.monotonic() - started
    return None


def _cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each of `pids` and the processes below them, those still there."""
    spent: dict[int, float] = {}
    for pid in with_descendants(pids):
        with contextlib.suppress(OSError):  # ended: no longer counted
            spent[pid] = cpu_seconds(pid)
    return spent


def round_order(phase: Sequence[T], round_index: int) -> list[T]:
    """The targets of one round: each round starts one further on, so no target is
    always the one measured first (or last) in a round."""
    turn = round_index % len(phase) if phase else 0
    return [*phase[turn:], *phase[:turn]]


def measure(
    args: argparse.Namespace, echo_address: str, relay_address: str, suite: SuiteRun
) -> tuple[list[LevelSummary], dict[int, float | None]]:
    """Every level, and how long each concurrency waited for a quiet suite.

    At each concurrency, first the reads (echo, the relay, each Decide mode, GetProfile) on a
    quiet suite, in `args.rounds` rounds, each target taking a share of its level
    in each round: the machine is shared and its speed wanders over tens of
    seconds, so latencies measured one after the other could come from different
    machines. Interleaved, each read spreads over the same stretch of time as echo.
    Then the writes (Track, TrackStream), one window each as a level of its own:
    cut into rounds, each write window would open inside the backlog the one
    before left (`settle`).
    """
    pool = LoadPool(args.processes)
    summaries: list[LevelSummary] = []
    settled: dict[int, float | None] = {}
    try:
        for concurrency in args.levels:
            reads: list[tuple[str, str, tuple[str, ...]]] = [
                (BASELINE, echo_address, ()),
                (RELAY, relay_address, ()),
            ]
            writes: list[tuple[str, str, tuple[str, ...]]] = []
            if suite.problem is None and suite.profiles:
                cookies = tuple(suite.cookies)
                reads += [
                    (target, suite.targets[target], cookies)
                    for target in DECIDE_MODES
                    if target in suite.targets
                ]
                if not args.skip_profiles:
                    profiles = suite.addresses["profiles"]
                    reads.append((READ_TARGET, profiles, cookies))
                    writes += [
                        (target, profiles, cookies)
                        for target in PROFILE_TARGETS
                        # A track-stream call carries 100 events: past 16 at once
                        # a call waits longer than its deadline and measures nothing.
                        if target != READ_TARGET
                        and (target not in STREAM_TARGETS or concurrency <= 16)
                    ]
            if suite.pids:
                _say(f"waiting for a quiet suite before concurrency {concurrency} ...")
                settled[concurrency] = settle(suite.pids)
            for phase, rounds in ((reads, args.rounds), (writes, 1)):
                samples: dict[str, list[Sample]] = {target: [] for target, _, _ in phase}
                shares = split(args.requests, rounds) if args.requests is not None else None
                for round_index in range(rounds):
                    for target, address, cookies in round_order(phase, round_index):
                        _say(
                            f"{target} at concurrency {concurrency}, "
                            f"round {round_index + 1} of {rounds} ..."
                        )
                        samples[target].append(
                            pool.sample(
                                target,
                                address,
                                concurrency,
                                payload_bytes=args.payload_bytes,
                                cookies=cookies,
                                # The first round warms the services up; later rounds
                                # only let the new connections settle.
                                warmup_s=args.warmup
                                if round_index == 0
                                else min(args.warmup, ROUND_WARMUP_S),
                                duration_s=args.duration / rounds,
                                requests=None if shares is None else shares[round_index],
                                max_s=args.max_seconds / rounds,
                                timeout_s=args.timeout,
                            )
                        )
                summaries += [
                    summarise_rounds(target, concurrency, samples[target]) for target, _, _ in phase
                ]
    finally:
        pool.close()
    return summaries, settled


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; 0 only for a clean run."""
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    machine = report.machine_info()
    problems: list[str] = []
    suite = SuiteRun(problem="skipped (--echo-only)") if args.echo_only else None
    with (
        echo_server() as echo_address,
        echo_server(relay_to=echo_address) as relay_address,
        contextlib.ExitStack() as stack,
    ):
        _say(f"echo serving on {echo_address}, the relay to it on {relay_address}")
        if suite is None:
            suite = stack.enter_context(suite_for_bench(args, stamp))
        summaries, settled = measure(args, echo_address, relay_address, suite)
        if settled:
            suite.info["settle_s"] = {
                str(c): None if s is None else round(s, 2) for c, s in settled.items()
            }
            problems += [
                f"the suite was not quiet within {QUIET_TIMEOUT_S:.0f} s before concurrency {c}"
                for c, s in settled.items()
                if s is None
            ]
    if suite.problem and not args.echo_only:
        problems.append(f"Decide not measured: {suite.problem}")
    if suite.rpc_problem:
        problems.append(f"{TARGET_OF_MODE['rpc']} not measured: {suite.rpc_problem}")
    # A service that does not exit 0 on SIGTERM did not drain cleanly.
    unclean = {n: c for n, c in suite.info.get("exit_codes", {}).items() if c != 0}
    if unclean:
        problems.append(f"suite services exited uncleanly: {unclean}")
    problems += [
        f"{s.target} at concurrency {s.concurrency}: {s.errors} errors {s.error_codes}"
        for s in summaries
        if s.errors
    ]
    level_ratios = ratios(summaries)
    print(report.format_table(summaries, level_ratios))
    if settled:
        waits = ", ".join(
            f"{c}: {'not quiet' if w is None else f'{w:.1f} s'}" for c, w in settled.items()
        )
        print(f"\nwaited for a quiet suite before each concurrency ({waits})")
    document = {
        "schema": 4,
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "status": "ok" if not problems else "problems",
        "problems": problems,
        "machine": machine,
        "settings": {
            "concurrency": args.levels,
            "modes": [] if args.echo_only else args.modes,
            "processes": args.processes,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "round_warmup_s": min(args.warmup, ROUND_WARMUP_S),
            "duration_s": None if args.requests is not None else args.duration,
            "requests": args.requests,
            "max_s": args.max_seconds if args.requests is not None else None,
            "timeout_s": args.timeout,
            "payload_bytes": args.payload_bytes,
            "profiles": args.profiles,
            "quick": args.quick,
            "measured_by": "requests" if args.requests is not None else "duration",
        },
        "suite": suite.info,
        "levels": [s.to_dict() for s in summaries],
        "ratios": [r.to_dict() for r in level_ratios],
    }
    paths = report.write_json(document, args.results_dir, stamp)
    if problems:
        print("\nRUN HAD PROBLEMS:\n  " + "\n  ".join(problems))
    print(f"\nwrote {os.path.relpath(paths[0])} and {os.path.relpath(paths[1])}")
    return 1 if problems else 0
