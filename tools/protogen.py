"""Generate the Python API of every proto under protos/ into the package it belongs to.

`protos/tessera/<name>/v1/*.proto` becomes `tessera.<name>.v1`, written into
the distribution that owns it: `services/<name>/src/tessera/<name>/v1/` for a
service, `runtime/src/tessera/<name>/v1/` for the shared messages (`common`)
and the benchmark's echo API (`bench`). Typed stubs (`.pyi`) for messages and
gRPC stubs come from mypy-protobuf, so mypy checks the code that uses them.

The install step runs this; generated files are never edited by hand and never
committed (.gitignore), and `--check` tells whether they match the protos.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
SERVICES = ("profiles", "segments", "experiments", "decision")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def src_root(proto: Path) -> Path:
    """The src folder of the distribution that owns `proto`'s package."""
    name = proto.relative_to(PROTOS).parts[1]  # tessera/<name>/v1/x.proto
    return ROOT / "services" / name / "src" if name in SERVICES else ROOT / "runtime" / "src"


def run_protoc(out: Path) -> None:
    """protoc from grpcio-tools over every proto, into `out` (tessera/<name>/v1/...)."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *[str(p) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


def placed(out: Path) -> dict[Path, bytes]:
    """Each generated file of `out`, keyed by where it belongs in the tree."""
    files = {}
    for proto in proto_files():
        package = proto.parent.relative_to(PROTOS)
        for suffix in GENERATED_SUFFIXES:
            name = proto.stem + suffix
            files[src_root(proto) / package / name] = (out / package / name).read_bytes()
    return files


def generate(check: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        run_protoc(Path(tmp))
        files = placed(Path(tmp))
    stale = [path for path, text in files.items() if not path.exists() or path.read_bytes() != text]
    if check:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)} (run `make proto`)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[path])
    return 0


def clean() -> None:
    """Remove every generated file (for `make clean`)."""
    for root in (ROOT / "runtime" / "src", *(ROOT / "services" / s / "src" for s in SERVICES)):
        for suffix in GENERATED_SUFFIXES:
            for path in root.rglob(f"*{suffix}"):
                path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    group.add_argument("--clean", action="store_true", help="remove every generated file")
    options = parser.parse_args()
    if options.clean:
        clean()
        return 0
    return generate(options.check)


if __name__ == "__main__":
    sys.exit(main())
