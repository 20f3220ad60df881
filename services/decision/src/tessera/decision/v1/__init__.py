"""tessera.decision.v1: generated from protos/tessera/decision/v1 by tools/protogen.py.

Never edited by hand, never committed: the install step writes it.
"""
