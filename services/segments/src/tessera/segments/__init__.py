"""Segment service: audiences, their rule language and their size."""
