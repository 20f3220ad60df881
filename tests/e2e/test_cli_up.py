"""`make run`, stopped with Ctrl-C in its terminal, stops every service cleanly and exits 0."""

from __future__ import annotations

import os
import pty
import select
import shutil
import sys
import time
from pathlib import Path

import pytest

from tessera.suite import START_ORDER, free_port


def read_until(fd: int, marker: bytes, timeout_s: float) -> bytes:
    """What the terminal shows until `marker` appears (or EOF, or the deadline)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closed: every process on it has exited
            break
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make, as the README does")
def test_make_run__ctrl_c_in_terminal__services_stop_cleanly_and_make_exits_0(tmp_path: Path):
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"run:\n\t@{sys.executable} -m tessera.cli up\n")
    env = {**os.environ, "TESSERA_DATA_DIR": str(tmp_path / "data")}
    for name in START_ORDER:
        env[f"TESSERA_{name.upper()}_PORT"] = str(free_port())
    env.pop("TESSERA_DATABASE_URL", None)
    env.pop("TESSERA_REDIS_URL", None)

    pid, terminal = pty.fork()
    if pid == 0:  # the child: make, on a terminal of its own, as a person runs it
        os.execvpe("make", ["make", "-s", "-f", str(makefile), "run"], env)
    try:
        started = read_until(terminal, b"Ctrl-C stops", 60)
        assert b"Ctrl-C stops" in started, started.decode(errors="replace")
        os.write(terminal, b"\x03")  # Ctrl-C, as typed
        shown = read_until(terminal, b"Tessera stopped", 30)
        shown += read_until(terminal, b"\n", 2)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(terminal)

    assert b"profiles=0, segments=0, experiments=0, decision=0" in shown, shown.decode(
        errors="replace"
    )
    assert b"Interrupt" not in shown
    assert os.waitstatus_to_exitcode(status) == 0
