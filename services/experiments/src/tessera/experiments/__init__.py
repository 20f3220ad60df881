"""Experiment service: assignment, exposures and results."""
