"""The benchmark's wait for a quiet suite, against real processes' CPU in /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from bench.proc import with_descendants
from bench.run import QUIET_WINDOW_S, settle


@contextlib.contextmanager
def _python(code: str) -> Iterator[int]:
    """A Python process running `code`, its pid; killed at the end."""
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_settle__idle_process__quiet_after_one_window() -> None:
    with _python("import time; time.sleep(30)") as pid:
        waited = settle({"idle": pid}, timeout_s=10.0)

    assert waited is not None
    assert QUIET_WINDOW_S <= waited < 10.0


def test_settle__process_spinning_a_core__never_quiet() -> None:
    with _python("while True: pass") as pid:
        waited = settle({"busy": pid}, timeout_s=1.6)

    assert waited is None


def test_settle__idle_supervisor_of_a_busy_worker__never_quiet() -> None:
    # As `TESSERA_WORKERS=2`: the pid the harness holds is the supervisor's.
    spin = "import subprocess, sys, time; "
    spin += "subprocess.Popen([sys.executable, '-c', 'while True: pass']); time.sleep(30)"
    with _python(spin) as pid:
        try:
            waited = settle({"supervisor": pid}, timeout_s=1.6)
        finally:
            for below in with_descendants([pid]) - {pid}:
                os.kill(below, signal.SIGKILL)

    assert waited is None


def test_settle__process_gone__counts_as_quiet() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    assert settle({"gone": gone.pid, "me": os.getpid()}, timeout_s=5.0) is not None
