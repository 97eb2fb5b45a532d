"""Which AWS errors are worth retrying: the pipeline tasks raise TransientFailure for these."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from energy_auction.errors import StorageUnavailable, TransientFailure
from energy_auction.observability import logger

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


@contextmanager
def retried_by_the_state_machine(task: str) -> Iterator[None]:
    """Run a pipeline task's work; an error worth retrying becomes ``TransientFailure``, which the
    state machine's Retry takes (with backoff), and is logged by its type only."""
    try:
        yield
    except Exception as err:
        if is_transient(err):
            logger.warning(f"{task} failed; the state machine retries", extra={"error": type(err).__name__})
            raise TransientFailure(type(err).__name__) from err
        raise
