"""gRPC core's settings are in place before grpc is imported, in every entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tessera import grpc_setup

ENTRY_POINTS = ["tessera.cli", "bench", "tests.conftest"]


def _imports(module: str, environ: dict[str, str]) -> tuple[list[str], str]:
    """The modules `import module` then `import grpc` load, in order; GRPC_EXPERIMENTS then."""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            f"import os, {module}, grpc; print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))",
        ],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    # -X importtime lists a module when its import finishes. grpc_setup imports
    # nothing of grpc, so grpc listed after it was imported after it.
    names = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line]
    return names, done.stdout.strip()


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_entry_point__imports_grpc_setup_before_grpc(module: str) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}

    names, experiments = _imports(module, environ)

    assert experiments == grpc_setup.GRPC_EXPERIMENTS
    assert "tessera.grpc_setup" in names and "grpc" in names
    assert names.index("tessera.grpc_setup") < names.index("grpc")


def test_operator_value__wins_even_empty() -> None:
    for value in ("", "-event_engine_dns"):
        environ = {**os.environ, "GRPC_EXPERIMENTS": value}

        _, experiments = _imports("tessera.cli", environ)

        assert experiments == value
