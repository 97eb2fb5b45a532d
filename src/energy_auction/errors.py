"""Domain errors. Each carries a stable ``code``; the API maps error classes to HTTP statuses in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


class EnergyAuctionError(Exception):
    """Base class of every error the service reports to a client."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, Any]:
        """Extra JSON fields for the error body, beyond ``error`` and ``message``."""
        return {}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: which record (index, record_id), which field, and what."""

    message: str
    index: int | None = None
    record_id: str | None = None
    field: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvalidJson(EnergyAuctionError):
    code = "invalid_json"


class UnsupportedMediaType(EnergyAuctionError):
    code = "unsupported_media_type"


class BodyTooLarge(EnergyAuctionError):
    code = "body_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request body is {size} bytes; the limit is {limit} bytes")
        self.limit = limit

    def details(self) -> dict[str, Any]:
        return {"limit_bytes": self.limit}


class OrdersInvalid(EnergyAuctionError):
    code = "validation_failed"

    def __init__(self, problems: Sequence[Problem]) -> None:
        count = len(problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the request; nothing was stored")
        self.problems = list(problems)

    def details(self) -> dict[str, Any]:
        return {"problems": [p.as_dict() for p in self.problems]}


class TooManyOrders(EnergyAuctionError):
    code = "too_many_orders"

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} orders in one request; the limit is {limit}; nothing was stored")
        self.limit = limit

    def details(self) -> dict[str, Any]:
        return {"limit": self.limit}


class OrdersAlreadyProcessed(EnergyAuctionError):
    code = "order_already_processed"

    def __init__(self, record_ids: Sequence[str]) -> None:
        super().__init__(
            "the auction has processed (or is processing) these orders, so they cannot be changed "
            "until they expire; nothing from this request was stored"
        )
        self.record_ids = sorted(record_ids)

    def details(self) -> dict[str, Any]:
        return {"record_ids": self.record_ids}


class OrderLocked(EnergyAuctionError):
    """A cancel of an order a pipeline run holds, or that the market decided and a run will settle."""

    code = "order_locked"

    def __init__(self, record_id: str) -> None:
        super().__init__(
            f"a pipeline run is settling order {record_id!r}, so it cannot be cancelled; "
            "read it again to see its outcome"
        )
        self.record_id = record_id

    def details(self) -> dict[str, Any]:
        return {"record_id": self.record_id}


class InvalidQuery(EnergyAuctionError):
    """A query string parameter that the route does not take, or a value it cannot use."""

    code = "invalid_query"

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter

    def details(self) -> dict[str, Any]:
        return {"parameter": self.parameter}


class InvalidCursor(EnergyAuctionError):
    """A listing cursor this service did not make for this caller and these filters."""

    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("cursor is not one this service gave you for these filters; start again without it")


class RoleForbidden(EnergyAuctionError):
    """The caller's role may not do this (the authorizer's policy refuses it first on AWS)."""

    code = "forbidden"


class ClaimLost(EnergyAuctionError):
    """A run tried to complete an order it no longer holds (its claim lapsed or another run took it)."""

    code = "claim_lost"


class OrderNotFound(EnergyAuctionError):
    """No live order of the caller's with this record_id (another trader's answers the same)."""

    code = "not_found"

    def __init__(self, record_id: str) -> None:
        super().__init__(f"no unexpired order with record_id {record_id!r}")
        self.record_id = record_id


class StorageUnavailable(EnergyAuctionError):
    """The store failed after bounded retries; the request had no effect and may be retried."""

    code = "storage_unavailable"

    def __init__(self, message: str = "the order store is unavailable; retry later", retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        return {"retry_after_seconds": self.retry_after}


class OrderRejected(Exception):
    """Raised by ProcessOrder (Lambda B) for a rejected order; the state machine catches it by name
    (the Lambda error type) and publishes the rejection notice."""

    def __init__(self, record_id: str) -> None:
        super().__init__(f"Order status is rejected! record_id={record_id}")
        self.record_id = record_id


class TransientFailure(Exception):
    """A pipeline task failed for a reason worth retrying (throttling, a 5xx, a dropped connection).

    The state machine retries Lambda errors of this type with backoff."""


GATEWAY_RESPONSES: dict[str, tuple[int, dict[str, str]]] = {
    "UNAUTHORIZED": (401, {"error": "unauthorized", "message": "missing or invalid bearer token"}),
    "ACCESS_DENIED": (403, {"error": "forbidden", "message": "this token may not call this resource"}),
    # An unknown route (API Gateway's default for it is a 403 "Missing Authentication Token").
    "MISSING_AUTHENTICATION_TOKEN": (404, {"error": "not_found", "message": "no such route"}),
}
"""The bodies API Gateway answers with when the authorizer refuses a request (deployed as gateway
responses; the local stack answers the same)."""

GATEWAY_DEFAULT_ERRORS: dict[str, str] = {"DEFAULT_4XX": "request_refused", "DEFAULT_5XX": "internal_error"}
"""The ``error`` code of every other response API Gateway makes itself; each keeps its own status
(413, 415, 502, 504, ...) and says why in ``message``. The local gateway's own refusals (a body
shorter than its Content-Length, a URL or a header too long) answer with the same codes."""

BEARER_CHALLENGE = "Bearer"
"""``WWW-Authenticate`` of a 401 when no bearer token was given (RFC 6750 section 3). API Gateway's
one UNAUTHORIZED response cannot tell a missing token from a refused one, so on AWS every 401 has it."""
INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'  # noqa: S105 (an RFC 6750 error code)
"""``WWW-Authenticate`` of a 401 for a bearer token that was given and refused (the local stack)."""
INVALID_REQUEST_CHALLENGE = 'Bearer error="invalid_request"'
"""``WWW-Authenticate`` of a 401 for a request with more than one Authorization header (the local stack)."""

THROTTLED_BODY = {"error": "throttled", "message": "too many requests; retry later"}
"""API Gateway's 429 when the stage's throttle refuses a request (AWS only), with Retry-After."""
THROTTLED_RETRY_AFTER_SECONDS = 1
