"""Which AWS errors are worth retrying: the pipeline tasks raise TransientFailure for these."""

from __future__ import annotations

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from energy_auction.errors import StorageUnavailable

TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionConflict",
        "TransactionInProgressException",
        "InternalServerError",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def is_transient(err: BaseException) -> bool:
    """True for throttling, 5xx answers, dropped connections and our own StorageUnavailable."""
    if isinstance(err, StorageUnavailable | BotoConnectionError | HTTPClientError):
        return True
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return err.response.get("Error", {}).get("Code") in TRANSIENT_CODES or status >= 500
    return False
