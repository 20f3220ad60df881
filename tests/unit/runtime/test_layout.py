"""The layout promise: every module's file path ends with its import path, no
import hook stands between the two, and no module imports itself back."""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SRC_ROOTS = [ROOT / "runtime" / "src", *sorted((ROOT / "services").glob("*/src"))]


def first_party_modules() -> dict[str, Path]:
    """Every hand-written module of the five distributions, by dotted name."""
    modules = {}
    for src in SRC_ROOTS:
        for path in src.rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            parts = path.relative_to(src).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = first_party_modules()


def test_layout__five_distributions__found():
    assert len(SRC_ROOTS) == 5
    assert {"tessera.server", "tessera.profiles", "tessera.decision.server"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_layout__every_module__file_path_ends_with_import_path(name: str):
    module = importlib.import_module(name)

    path = Path(module.__file__ or "")

    expected_tail = Path(*name.split("."))
    if path.name == "__init__.py":
        assert path.parent.parts[-len(expected_tail.parts) :] == expected_tail.parts
    else:
        assert path.with_suffix("").parts[-len(expected_tail.parts) :] == expected_tail.parts
    assert path.resolve() == MODULES[name].resolve()


def test_layout__environment__no_editable_import_hook():
    finders = [type(finder).__module__ for finder in sys.meta_path]
    hooks = [name for name in finders if "editable" in name.lower()]
    site_hooks = [
        path.name
        for entry in sys.path
        if entry and Path(entry).is_dir()
        for path in Path(entry).glob("__editable__*finder*.py")
    ]

    assert hooks == []
    assert site_hooks == []


# Parsed while the test module is collected, before any test runs: CPython
# 3.11 keeps ast.parse's recursion counter in interpreter-wide state
# (gh-106905). In a full run on 3.11.7 it was left off by earlier tests (the
# suite runs servers in threads, whose logged tracebacks parse source), and
# every later parse in the process failed with "AST constructor recursion
# depth mismatch".
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def imports_of(path: Path, name: str) -> Iterator[str]:
    """First-party modules `path` imports, outside `if TYPE_CHECKING:` blocks."""
    tree = TREES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from (n for orelse in child.orelse for n in [orelse, *walk(orelse)])
                continue
            yield child
            yield from walk(child)

    for node in walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in MODULES else base


def test_layout__first_party_imports__no_cycle():
    graph = {
        name: {target for target in imports_of(path, name) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)

    assert cycles == []


def test_layout__test_modules__basenames_unique_across_test_folders():
    # The test folders have no __init__.py, and pytest's default "prepend"
    # import mode imports such files by basename: two folders with the same
    # test_x.py fail collection of the whole run ("import file mismatch").
    seen: dict[str, Path] = {}
    twins = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if path.name in seen:
            twins.append((seen[path.name], path))
        seen.setdefault(path.name, path)

    assert twins == []
