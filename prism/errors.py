"""Domain errors. Each carries the ``extensions.code`` a client sees; the GraphQL layer maps them
in one place (``prism.execution.extensions``). Messages are written for the client: never put SQL,
paths or stack traces in them."""

from __future__ import annotations

from typing import Any, ClassVar


class PrismError(Exception):
    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        # graphql-core copies `extensions` of the original error onto the GraphQL error.
        self.extensions: dict[str, Any] = {"code": self.code, **details}


class Unauthenticated(PrismError):
    code = "UNAUTHENTICATED"


class Forbidden(PrismError):
    code = "FORBIDDEN"


class NotFound(PrismError):
    code = "NOT_FOUND"


class BadUserInput(PrismError):
    code = "BAD_USER_INPUT"


class Conflict(PrismError):
    code = "CONFLICT"


class PayloadTooLarge(PrismError):
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(PrismError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class QueryTooComplex(PrismError):
    code = "QUERY_TOO_COMPLEX"


class RateLimited(PrismError):
    code = "RATE_LIMITED"


class PersistedQueryNotFound(PrismError):
    code = "PERSISTED_QUERY_NOT_FOUND"


class PersistedQueryRequired(PrismError):
    code = "PERSISTED_QUERY_REQUIRED"


class ServiceUnavailable(PrismError):
    code = "SERVICE_UNAVAILABLE"


class ResumePointLost(PrismError):
    """An event stream cannot resume where the client asked: the event named is not (or no
    longer) in the outbox. Start again without `after` (and read the state back)."""

    code = "RESUME_POINT_LOST"


class SubscriberTooSlow(PrismError):
    """An event stream fell further behind than the server buffers for it, and was ended.
    Resume with `after` (the id of the last event received)."""

    code = "SUBSCRIBER_TOO_SLOW"


def not_found(kind: str) -> NotFound:
    """The one message for a missing row *and* a row the caller may not see."""
    return NotFound(f"{kind} not found.")


class OutcomeUnknown(PrismError):
    """The connection was lost while a mutation committed: it may or may not have happened.
    Read the state back before retrying."""

    code = "OUTCOME_UNKNOWN"
