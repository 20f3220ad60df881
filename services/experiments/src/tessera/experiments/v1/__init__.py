"""tessera.experiments.v1: generated from protos/tessera/experiments/v1 by tools/protogen.py.

Never edited by hand, never committed: the install step writes it.
"""
