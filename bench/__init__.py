"""Tessera's benchmark: Decide (in process and over RPC) against a one-hop echo floor.

Run from the repository root with `python -m bench` (or `make bench`).
"""
