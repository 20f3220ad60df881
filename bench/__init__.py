"""Tessera's benchmark: Decide through the whole suite against a one-hop echo floor.

Run from the repository root with `python -m bench` (or `make bench`).
"""
