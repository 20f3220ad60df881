"""Tessera's benchmark: Decide (in process and over RPC) against a one-hop echo floor.

Run from the repository root with `python -m bench` (or `make bench`).
"""

# gRPC core reads its settings when grpc is first imported: every benchmark
# process (echo, load generators, the suite it starts) runs as the services do.
from tessera import grpc_setup  # noqa: F401
