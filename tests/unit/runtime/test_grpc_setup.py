"""gRPC core's setting is in place before grpc loads in a serving process, and only there."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tessera import grpc_setup


def _experiments(argv: list[str], module: str, environ: dict[str, str]) -> str:
    """GRPC_EXPERIMENTS once `module` and grpc are imported in a process started as `argv`."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.argv = {argv!r}\n"
            f"import {module}, grpc, os\n"
            "print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))",
        ],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    return done.stdout.strip()


def _without_setting() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}


def test_tessera_serve__sets_it_before_grpc_loads() -> None:
    assert (
        _experiments(["tessera", "serve", "profiles"], "tessera.cli", _without_setting())
        == grpc_setup.GRPC_EXPERIMENTS
    )


@pytest.mark.parametrize("argv", [["tessera", "up"], ["tessera", "decide"], ["tessera"]])
def test_commands_that_do_not_serve__keep_grpc_defaults(argv: list[str]) -> None:
    assert _experiments(argv, "tessera.cli", _without_setting()) == "<unset>"


def test_echo_server__served_as_the_services_are() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, os, sys; sys.argv = ['echo', '--help']\n"
            "try:\n    runpy.run_module('bench.echo', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))",
        ],
        capture_output=True,
        text=True,
        env=_without_setting(),
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == grpc_setup.GRPC_EXPERIMENTS


@pytest.mark.parametrize("value", ["", "-event_engine_dns"])
def test_operator_value__wins_even_empty(value: str) -> None:
    environ = {**os.environ, "GRPC_EXPERIMENTS": value}

    assert _experiments(["tessera", "serve", "profiles"], "tessera.cli", environ) == value
