"""The experiment service's own tables beyond definitions: exposures, sticky records, goals."""

from .sql import ExposureStore, PendingSticky

__all__ = ["ExposureStore", "PendingSticky"]
