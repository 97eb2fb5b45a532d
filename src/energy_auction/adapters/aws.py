"""AWS adapters. Each takes its boto3 client in the constructor, so moto or a real endpoint just works."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from energy_auction import codec
from energy_auction.errors import OrdersAlreadyProcessed, StorageUnavailable
from energy_auction.orders import Order, OrderStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

# Error codes after which the same request may succeed (nothing was written).
_TRANSIENT_ERRORS = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)
_TRANSIENT_CANCELLATIONS = frozenset(
    {
        "None",
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)

# The orders table (the CDK stack and the tests create it from these names).
ORDERS_KEY = "record_id"
TTL_ATTRIBUTE = "expires_at"
PENDING_INDEX = "pending-orders"
"""Sparse GSI over pending orders: partition key ``pending_shard`` (S), sort key ``expires_at`` (N),
projection ALL. Only pending orders carry ``pending_shard``, so the index holds nothing else."""
PENDING_SHARD_ATTRIBUTE = "pending_shard"
PENDING_SHARDS = 8
"""Pending orders spread over this many index partitions (by a hash of record_id)."""

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class Backoff:
    """Bounded retries with exponential backoff and full jitter."""

    def __init__(
        self,
        max_attempts: int = 5,
        base_delay: float = 0.05,
        max_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_attempts = max_attempts
        self._base = base_delay
        self._max = max_delay
        self._sleep = sleep

    def pause(self, attempt: int) -> None:
        self._sleep(random.uniform(0, min(self._max, self._base * 2**attempt)))


def order_to_item(order: Order) -> dict[str, Any]:
    plain = order.model_dump(mode="python", exclude_none=True)
    plain["status"] = order.status.value
    return {key: _serializer.serialize(value) for key, value in plain.items()}


def item_to_order(item: dict[str, Any]) -> Order:
    return Order.model_validate({key: _deserializer.deserialize(value) for key, value in item.items()})


class DynamoDbOrderStore:
    """Orders in a DynamoDB table keyed by record_id, TTL on ``expires_at``.

    A submission is one ``TransactWriteItems`` call (at most 100 orders), so it is stored whole or
    not at all, and each Put is conditional: an order the auction has processed cannot be replaced
    until it expires. Throttling and transaction conflicts are retried with backoff; after
    ``backoff.max_attempts`` the store raises ``StorageUnavailable``.
    """

    def __init__(self, client: DynamoDBClient, table_name: str, backoff: Backoff | None = None) -> None:
        self._client = client
        self._table = table_name
        self._backoff = backoff or Backoff()

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        if not orders:
            return
        items: Any = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": order_to_item(order),
                    "ConditionExpression": "attribute_not_exists(record_id) OR #status = :pending "
                    "OR expires_at <= :now",
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": {
                        ":pending": {"S": OrderStatus.PENDING.value},
                        ":now": {"N": str(now)},
                    },
                    "ReturnValuesOnConditionCheckFailure": "NONE",
                }
            }
            for order in orders
        ]
        # One token for every attempt of this write: if an attempt that timed out did commit,
        # DynamoDB answers the retry with success instead of applying (or refusing) it again.
        token = hashlib.sha256(codec.dumps(items).encode()).hexdigest()[:36]
        for attempt in range(self._backoff.max_attempts):
            try:
                self._client.transact_write_items(TransactItems=items, ClientRequestToken=token)
                return
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                if code == "TransactionCanceledException":
                    reasons = [r.get("Code", "None") for r in err.response.get("CancellationReasons", [])]
                    processed = [
                        o.record_id
                        for o, r in zip(orders, reasons, strict=False)
                        if r == "ConditionalCheckFailed"
                    ]
                    if processed:
                        raise OrdersAlreadyProcessed(processed) from None
                    if not set(reasons) <= _TRANSIENT_CANCELLATIONS:
                        raise
                elif code not in _TRANSIENT_ERRORS:
                    raise
            except (BotoConnectionError, HTTPClientError):
                pass  # connection trouble: retried with the same ClientRequestToken, so applied once
            if attempt + 1 < self._backoff.max_attempts:
                self._backoff.pause(attempt)
        raise StorageUnavailable()

    def get_order(self, record_id: str) -> Order | None:
        try:
            response = self._client.get_item(
                TableName=self._table, Key={"record_id": {"S": record_id}}, ConsistentRead=True
            )
        except (ClientError, BotoConnectionError, HTTPClientError) as err:
            if (
                isinstance(err, ClientError)
                and err.response.get("Error", {}).get("Code") not in _TRANSIENT_ERRORS
            ):
                raise
            raise StorageUnavailable() from None
        item = response.get("Item")
        return item_to_order(item) if item else None


class S3ResultStore:
    """Accepted results as JSON objects in the results bucket."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        self._client.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=codec.dumps(document).encode(),
            ContentType="application/json",
        )
        return f"s3://{self._bucket}/{key}"


class S3WorkStore:
    """A run's order results as one JSON array in S3, where the Distributed Map's ItemReader reads them."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "work/") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    def write_items(self, run_id: str, items: Sequence[dict[str, Any]]) -> dict[str, str]:
        key = f"{self._prefix}runs/{run_id}/results.json"
        self._client.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=codec.dumps(list(items)).encode(),
            ContentType="application/json",
        )
        return {"bucket": self._bucket, "key": key}


def secrets_manager_secret(secret_id: str, max_age_seconds: int) -> str:
    """The secret's string value through Powertools Parameters (cached for ``max_age_seconds``)."""
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(secret_id, max_age=max_age_seconds)
    if not isinstance(value, str):
        raise TypeError("the JWT secret must be a string secret")
    return value
