"""Running the `tessera` command against the test suite, as a person at a terminal would."""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tessera import cli, manifests
from tessera.suite import Suite

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "juicer"


@dataclass
class Run:
    """What one command printed and its exit code."""

    code: int
    out: str
    err: str


class Tessera:
    """The `tessera` command with the suite's addresses in its TESSERA_* settings."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> Run:
        self.capsys.readouterr()
        try:
            code = cli.main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)


def use_suite(monkeypatch: pytest.MonkeyPatch, suite: Suite) -> None:
    """Point the command's settings at `suite`, with tables as wide as they need."""
    for name, address in suite.addresses.items():
        monkeypatch.setenv(f"TESSERA_{name.upper()}_ADDRESS", address)
    monkeypatch.delenv("COLUMNS", raising=False)


def examples_copy(folder: Path) -> tuple[Path, str]:
    """The juicer examples with every key given a suffix of this test's own; and the suffix.

    The suite is shared by every end-to-end test (`tessera demo` defines
    juicer-fans too), so each test applies the same files under keys of its own.
    """
    suffix = uuid.uuid4().hex[:6]
    target = folder / "juicer"
    shutil.copytree(EXAMPLES, target)
    keys = [d.key for d in manifests.load([EXAMPLES])]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, keys)) + r")\b(?!-\w)")
    for path in target.glob("*.yaml"):
        path.write_text(pattern.sub(lambda m: f"{m.group(1)}-{suffix}", path.read_text()))
    return target, suffix
