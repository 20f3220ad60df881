"""Domain errors shared by every service.

Domain code raises these; the runtime maps them to gRPC status codes in one
place (`tessera.server`). Each error names the field it is about, so the
caller can tell what to fix.
"""

from __future__ import annotations


class TesseraError(Exception):
    """Base of every error a caller should see with its message."""

    code_name = "INTERNAL"

    def __init__(self, message: str, *, field: str = "") -> None:
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InvalidArgument(TesseraError):
    """The request is malformed; `field` names the offending field path."""

    code_name = "INVALID_ARGUMENT"


class NotFound(TesseraError):
    """The named thing does not exist."""

    code_name = "NOT_FOUND"


class AlreadyExists(TesseraError):
    """A thing with that key exists already."""

    code_name = "ALREADY_EXISTS"


class FailedPrecondition(TesseraError):
    """The system is not in the state the request needs (e.g. a stale version)."""

    code_name = "FAILED_PRECONDITION"


class ResourceExhausted(TesseraError):
    """The request is larger than a documented limit allows."""

    code_name = "RESOURCE_EXHAUSTED"


class Unavailable(TesseraError):
    """A dependency cannot be reached right now; retrying may succeed."""

    code_name = "UNAVAILABLE"


class DeadlineExceeded(TesseraError):
    """A dependency did not answer within the call's deadline."""

    code_name = "DEADLINE_EXCEEDED"


class Unimplemented(TesseraError):
    """The capability is part of the contract but not built yet."""

    code_name = "UNIMPLEMENTED"


def require(condition: bool, field: str, message: str) -> None:
    """Raise InvalidArgument for `field` unless `condition` holds."""
    if not condition:
        raise InvalidArgument(message, field=field)
