"""Tessera: a personalization platform of four gRPC services.

This package is the shared runtime (settings, server bootstrap, errors,
storage plumbing, peer channels, CLI). The services live under
`tessera.profiles`, `tessera.segments`, `tessera.experiments` and
`tessera.decision`; their generated APIs under `tessera.<service>.v1`.
"""

__version__ = "0.1.0"
