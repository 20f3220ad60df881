"""The experiment service's own tables beyond definitions: exposures, sticky records, goals."""

from .sql import ExposureStore, GoalEvent, PendingSticky, Person

__all__ = ["ExposureStore", "GoalEvent", "PendingSticky", "Person"]
