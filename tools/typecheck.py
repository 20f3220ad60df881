"""Type-check the domain packages with mypy --strict.

The import names (`tessera.segments.domain`) differ from the folders
(`services/segments/domain`), which mypy cannot map by itself; so this lays
out a tree of symbolic links under build/typecheck that mirrors the import
names, and runs mypy on it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"
SERVICES = ("profiles", "segments", "experiments", "decision")


def lay_out() -> None:
    """build/typecheck/tessera/{runtime modules, <service> -> services/<service>}."""
    if TREE.exists():
        shutil.rmtree(TREE)
    package = TREE / "tessera"
    package.mkdir(parents=True)
    for module in (ROOT / "tessera").glob("*.py"):
        (package / module.name).symlink_to(module)
    for service in SERVICES:
        (package / service).symlink_to(ROOT / "services" / service)


def main() -> int:
    lay_out()
    packages = [arg for service in SERVICES for arg in ("-p", f"tessera.{service}.domain")]
    command = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", *packages]
    return subprocess.call(command, cwd=TREE, env={"MYPYPATH": str(TREE), "PATH": ""})


if __name__ == "__main__":
    sys.exit(main())
