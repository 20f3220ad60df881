"""The benchmark's wait for a quiet suite, against real processes' CPU in /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.run import QUIET_WINDOW_S, settle


def test_settle__idle_process__quiet_after_one_window() -> None:
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        waited = settle({"idle": idle.pid}, timeout_s=10.0)
    finally:
        idle.kill()
        idle.wait()

    assert waited is not None
    assert QUIET_WINDOW_S <= waited < 10.0


def test_settle__process_spinning_a_core__never_quiet() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        waited = settle({"busy": busy.pid}, timeout_s=1.6)
    finally:
        busy.kill()
        busy.wait()

    assert waited is None


def test_settle__process_gone__counts_as_quiet() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    assert settle({"gone": gone.pid, "me": os.getpid()}, timeout_s=5.0) is not None
