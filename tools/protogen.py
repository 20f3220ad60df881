"""Generate the Python API of every proto under protos/ into gen/.

Run before and after the editable install: `--packages` only lays out the
package folders (setuptools wants them to exist), the full run calls protoc
from grpcio-tools. Generated code is never edited by hand and never committed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def lay_out_packages() -> None:
    """Create gen/tessera/<service>/v1 with __init__.py files."""
    for proto in proto_files():
        package_dir = GEN / proto.parent.relative_to(PROTOS)
        package_dir.mkdir(parents=True, exist_ok=True)
        for folder in (package_dir, package_dir.parent):
            (folder / "__init__.py").touch()


def generate() -> None:
    """Run protoc for every proto file, with .pyi stubs for type checking."""
    import grpc_tools
    from grpc_tools import protoc  # installed with the project

    if GEN.exists():
        shutil.rmtree(GEN)
    lay_out_packages()
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={GEN}",
        f"--pyi_out={GEN}",
        f"--grpc_python_out={GEN}",
        *[str(p) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", action="store_true", help="only lay out package folders")
    options = parser.parse_args()
    if options.packages:
        lay_out_packages()
    else:
        generate()


if __name__ == "__main__":
    main()
