"""Fault injection around real boto3 clients, in the style of aws-samples' serverless-test-samples;
and a work store in memory.

Fakes beat mocks here: the wrapped client is a real botocore client talking to moto, so every call
that is not faulted really happens (request validation, condition checks, stored items), and the
faults we inject are the same ``ClientError`` objects botocore raises, so a test can only pass if
the adapter copes with what AWS actually sends, not with what a mock was told to return.

Usage::

    faulty = FaultyClient(boto3.client("dynamodb"))
    faulty.fail("transact_write_items", error_code="ThrottlingException", times=2)
    faulty.fail("transact_write_items", error_code="TransactionCanceledException",
                cancellation_reasons=["TransactionConflict", "None"])
    faulty.fail("get_item", exception=EndpointConnectionError(endpoint_url="http://x"))
    faulty.transform("batch_get_item", lambda response, request: {**response, "Responses": {}})
    ...
    assert faulty.calls["transact_write_items"] == 3
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from energy_auction import codec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_DEFAULT_MESSAGES = {
    "ThrottlingException": "Rate of requests exceeds the allowed throughput.",
    "ProvisionedThroughputExceededException": (
        "The level of configured provisioned throughput for the table was exceeded."
    ),
    "RequestLimitExceeded": "Throughput exceeds the current throughput limit for your account.",
    "InternalServerError": "Internal server error",
    "ServiceUnavailable": "Service is unavailable",
    "ValidationException": "One or more parameter values were invalid",
    "ResourceNotFoundException": "Requested resource not found",
}
_HTTP_STATUS = {"InternalServerError": 500, "ServiceUnavailable": 503}
_REASON_MESSAGES = {
    "ConditionalCheckFailed": "The conditional request failed",
    "TransactionConflict": "Transaction is ongoing for the item",
    "ThrottlingError": "Throughput exceeds the current capacity for one or more global secondary indexes.",
    "ValidationError": "One or more parameter values were invalid",
}


def client_error(
    operation_name: str,
    error_code: str,
    message: str | None = None,
    cancellation_reasons: Sequence[str] | None = None,
    exception_class: type[ClientError] = ClientError,
) -> ClientError:
    """A ``ClientError`` shaped as botocore parses a DynamoDB (JSON protocol) error response.

    Modeled error fields such as ``CancellationReasons`` sit at the top level of ``err.response``,
    next to ``Error``, exactly where botocore (and moto) put them.
    """
    if message is None:
        if cancellation_reasons is not None:
            message = (
                "Transaction cancelled, please refer cancellation reasons for specific reasons "
                f"[{', '.join(cancellation_reasons)}]"
            )
        else:
            message = _DEFAULT_MESSAGES.get(error_code, error_code)
    status = _HTTP_STATUS.get(error_code, 400)
    response: dict[str, Any] = {
        "Error": {"Code": error_code, "Message": message},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "HTTPHeaders": {"x-amzn-errortype": error_code},
            "RetryAttempts": 0,
        },
        "Message": message,
    }
    if cancellation_reasons is not None:
        reasons: list[dict[str, str]] = []
        for code in cancellation_reasons:
            reason = {"Code": code}
            if code in _REASON_MESSAGES:
                reason["Message"] = _REASON_MESSAGES[code]
            reasons.append(reason)
        response["CancellationReasons"] = reasons
    return exception_class(response, operation_name)  # type: ignore[arg-type]


Transform = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
"""Rewrites a real response: called with the response and the request's keyword arguments."""


class FaultyClient:
    """Delegates every attribute to a real boto3 client; queued faults are raised instead of calling it.

    Faults are per operation (the client's method name, e.g. ``"transact_write_items"``) and are used
    in the order they were queued; once an operation's faults are used up, calls reach the real client.
    Queued transforms rewrite the real response of the next calls (e.g. a partial ``BatchGetItem``).
    ``calls`` counts every call of every operation made through this wrapper, faulted or not.

    With ``serialize_calls`` the real client handles one call at a time, whatever the threads: moto
    does not apply a request atomically (threads can interleave inside one transaction), DynamoDB does.
    """

    def __init__(self, real_client: Any, *, serialize_calls: bool = False) -> None:
        self._real = real_client
        self._faults: defaultdict[str, deque[Callable[[], BaseException]]] = defaultdict(deque)
        self._transforms: defaultdict[str, deque[Transform]] = defaultdict(deque)
        self._serial = threading.Lock() if serialize_calls else None
        self.calls: Counter[str] = Counter()
        self._counting = threading.Lock()  # a store's threads (a claim's updates) call at once

    @property
    def real(self) -> Any:
        """The wrapped client, for reads and writes a test makes without counting or faults."""
        return self._real

    def fail(
        self,
        operation: str,
        *,
        error_code: str | None = None,
        message: str | None = None,
        cancellation_reasons: Sequence[str] | None = None,
        exception: BaseException | None = None,
        times: int = 1,
    ) -> FaultyClient:
        """Make the next ``times`` calls of ``operation`` raise instead of reaching the real client.

        Give either ``error_code`` (a ``ClientError`` of the client's modeled class for that code is
        raised, e.g. ``TransactionCanceledException`` with ``cancellation_reasons``) or ``exception``
        (raised as is, e.g. ``EndpointConnectionError``).
        """
        if (error_code is None) == (exception is None):
            raise TypeError("give exactly one of error_code and exception")
        if cancellation_reasons is not None and error_code != "TransactionCanceledException":
            raise TypeError("cancellation_reasons only go with TransactionCanceledException")
        if not callable(getattr(self._real, operation, None)):
            raise AttributeError(f"the client has no operation {operation!r}")
        api_name = self._real.meta.method_to_api_mapping.get(operation, operation)

        def fault() -> BaseException:
            if exception is not None:
                return exception
            assert error_code is not None
            return client_error(
                api_name,
                error_code,
                message,
                cancellation_reasons,
                exception_class=self._real.exceptions.from_code(error_code),
            )

        self._faults[operation].extend([fault] * times)
        return self

    def transform(self, operation: str, change: Transform, *, times: int = 1) -> FaultyClient:
        """Let the next ``times`` calls of ``operation`` reach the real client, then return
        ``change(response, request_kwargs)`` instead of its response (queued faults come first)."""
        if not callable(getattr(self._real, operation, None)):
            raise AttributeError(f"the client has no operation {operation!r}")
        self._transforms[operation].extend([change] * times)
        return self

    def pending(self, operation: str) -> int:
        """How many queued faults of ``operation`` are not used yet."""
        return len(self._faults[operation])

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if name.startswith("_") or name not in self._real.meta.method_to_api_mapping:
            return attribute

        def operation(*args: Any, **kwargs: Any) -> Any:
            with self._counting:
                self.calls[name] += 1
            faults = self._faults.get(name)
            if faults:
                raise faults.popleft()()
            if self._serial is None:
                response = attribute(*args, **kwargs)
            else:
                with self._serial:
                    response = attribute(*args, **kwargs)
            transforms = self._transforms.get(name)
            if transforms:
                return transforms.popleft()(response, kwargs)
            return response

        return operation


def dynamodb_client(faulty: FaultyClient) -> DynamoDBClient:
    """``faulty`` typed as the DynamoDB client it wraps, for an adapter that takes one.

    A deliberate fake: it forwards every attribute to the real client and only adds faults, so it
    is a DynamoDB client by duck typing, not by class.
    """
    return cast("DynamoDBClient", faulty)


class MemoryWorkStore:
    """The WorkStore port in memory: each run's batches file as the Distributed Map's ItemReader
    reads it back (JSON), by run.

    Like the S3 store it takes the batches as they come, to the end, and fails only after (as a
    PutObject would): ``failures`` are raised, one a write, before the next writes succeed.
    """

    def __init__(self, failures: Sequence[BaseException] = ()) -> None:
        self.written: dict[str, list[dict[str, Any]]] = {}
        self.failures = list(failures)

    def write_batches(self, run_id: str, batches: Iterable[dict[str, Any]]) -> dict[str, str]:
        body = codec.dumps(list(batches))
        if self.failures:
            raise self.failures.pop(0)
        self.written[run_id] = json.loads(body)
        return {"bucket": "work-bucket", "key": f"work/runs/{run_id}/batches.json"}
