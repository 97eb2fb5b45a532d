"""AWS adapters. Each takes its boto3 client in the constructor, so moto or a real endpoint just works."""

from __future__ import annotations

import hashlib
import random
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from energy_auction import codec
from energy_auction.adapters.transient import TRANSIENT_CODES
from energy_auction.errors import ClaimLost, OrdersAlreadyProcessed, StorageUnavailable
from energy_auction.orders import Order, OrderStatus, settled_outcome

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

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

_T = TypeVar("_T")
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class Backoff:
    """Bounded retries with exponential backoff and full jitter, within an optional time budget."""

    def __init__(
        self,
        max_attempts: int = 5,
        base_delay: float = 0.05,
        max_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        *,
        budget_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_attempts = max_attempts
        self._base = base_delay
        self._max = max_delay
        self._sleep = sleep
        self._budget = budget_seconds
        self._clock = clock

    def pause(self, attempt: int, started: float | None = None) -> bool:
        """Sleep before the next attempt; False (no sleep) when that would overrun the time budget
        counted from ``started`` (a ``clock()`` reading), so the caller gives up in time."""
        delay = random.uniform(0, min(self._max, self._base * 2**attempt))
        if (
            started is not None
            and self._budget is not None
            and self._clock() - started + delay > self._budget
        ):
            return False
        self._sleep(delay)
        return True

    def start(self) -> float:
        return self._clock()


def order_to_item(order: Order) -> dict[str, Any]:
    """The DynamoDB item of an order. Pending orders carry ``pending_shard``, which puts them in the
    sparse pending-orders index; an item without it (a processed order) is not in the index."""
    plain = order.model_dump(mode="python", exclude_none=True)
    plain["status"] = order.status.value
    if order.status is OrderStatus.PENDING:
        plain[PENDING_SHARD_ATTRIBUTE] = pending_shard(order.record_id)
    return {key: _serializer.serialize(value) for key, value in plain.items()}


def item_to_order(item: dict[str, Any]) -> Order:
    plain = {key: _deserializer.deserialize(value) for key, value in item.items()}
    plain.pop(PENDING_SHARD_ATTRIBUTE, None)  # storage detail, not part of the order
    return Order.model_validate(plain)


def pending_shard(record_id: str) -> str:
    """The pending-orders index partition of an order: a stable hash, so it survives restarts."""
    return str(zlib.crc32(record_id.encode()) % PENDING_SHARDS)


def _error_code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


_TRANSACTION_ITEMS = 100
"""The most actions one TransactWriteItems call takes, and the most keys one BatchGetItem call reads."""

# An order a run may claim: live, pending, and free (never claimed, claim lapsed, or already this run's).
_CLAIMABLE = (
    "#status = :pending AND expires_at > :now "
    "AND (attribute_not_exists(claim_run_id) OR claim_expires_at <= :now OR claim_run_id = :run)"
)


class DynamoDbOrderStore:
    """Orders in a DynamoDB table keyed by record_id, TTL on ``expires_at``.

    A submission is one ``TransactWriteItems`` call (at most 100 orders), so it is stored whole or
    not at all, and each Put is conditional: an order the auction has processed, or a pipeline run
    has claimed, cannot be replaced until it expires (or the claim lapses).

    The pipeline finds pending orders with a query on the sparse ``PENDING_INDEX`` (one per shard,
    never a scan), claims them 100 at a time with conditional transactions, and completes or releases
    each with a conditional update on its claim, so two runs never process the same order.

    Throttling, transaction conflicts and dropped connections are retried with backoff; after
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
                    # Replaceable: new, expired, or pending and not held by a run (unclaimed or lapsed).
                    "ConditionExpression": "attribute_not_exists(record_id) OR expires_at <= :now "
                    "OR (#status = :pending AND (attribute_not_exists(claim_run_id) "
                    "OR claim_expires_at <= :now))",
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
        started = self._backoff.start()  # the API answers 503 within the budget, before its timeout
        for attempt in range(self._backoff.max_attempts):
            try:
                self._client.transact_write_items(TransactItems=items, ClientRequestToken=token)
                return
            except ClientError as err:
                code = _error_code(err)
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
                elif code not in TRANSIENT_CODES:
                    raise
            except (BotoConnectionError, HTTPClientError):
                pass  # connection trouble: retried with the same ClientRequestToken, so applied once
            if attempt + 1 >= self._backoff.max_attempts or not self._backoff.pause(attempt, started):
                break
        raise StorageUnavailable()

    def get_order(self, record_id: str) -> Order | None:
        try:
            response = self._client.get_item(
                TableName=self._table, Key={"record_id": {"S": record_id}}, ConsistentRead=True
            )
        except (ClientError, BotoConnectionError, HTTPClientError) as err:
            if isinstance(err, ClientError) and _error_code(err) not in TRANSIENT_CODES:
                raise
            raise StorageUnavailable() from None
        item = response.get("Item")
        return item_to_order(item) if item else None

    def pending_orders(self, now: int, run_id: str | None = None) -> list[Order]:
        """Live pending orders no run (other than ``run_id``) holds, by expiry then record_id.

        One query per index shard."""
        orders: list[Order] = []
        for shard in range(PENDING_SHARDS):
            request: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": PENDING_INDEX,
                "KeyConditionExpression": f"{PENDING_SHARD_ATTRIBUTE} = :shard AND expires_at > :now",
                # Claimed orders stay in the index (still pending); another run's live claim hides them.
                "FilterExpression": "attribute_not_exists(claim_run_id) OR claim_expires_at <= :now"
                " OR claim_run_id = :run",
                "ExpressionAttributeValues": {
                    ":shard": {"S": str(shard)},
                    ":now": {"N": str(now)},
                    ":run": {"S": run_id or ""},
                },
            }
            while True:
                page = self._call(self._client.query, **request)
                orders.extend(item_to_order(item) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(orders, key=lambda o: (o.expires_at, o.record_id))

    def claim_orders(
        self, record_ids: Sequence[str], run_id: str, now: int, lease_seconds: int
    ) -> list[Order]:
        """Claim with transactions of up to 100 conditional updates, then read the claimed orders back.

        Orders whose condition fails are dropped from the transaction and the rest retried, so
        claiming n orders takes about n/100 transactions and n/100 batch reads. Returns the claimed
        orders in the order of ``record_ids``. When it raises ``StorageUnavailable`` some orders may
        be claimed already; the same run claiming again gets them back.
        """
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        unique = list(dict.fromkeys(record_ids))  # a transaction may not touch one item twice
        claimed: list[str] = []
        for chunk in _chunks(unique, _TRANSACTION_ITEMS):
            claimed.extend(self._claim_chunk(chunk, run_id, now, now + lease_seconds))
        found = self._read_orders(claimed)
        # Keep what the read shows this run holding (the transaction said so; the read is the proof).
        return [found[r] for r in claimed if r in found and found[r].claim_run_id == run_id]

    def complete_order(
        self, record_id: str, run_id: str, status: OrderStatus, outcome: dict[str, Any]
    ) -> None:
        """Record the outcome with one conditional update on the claim.

        The outcome is stored with ``run_id`` (added when missing): a retry whose first attempt
        committed is recognised by it and by the status, and succeeds without writing again.
        """
        stored_outcome = settled_outcome(run_id, status, outcome)
        try:
            self._call(
                self._client.update_item,
                TableName=self._table,
                Key={ORDERS_KEY: {"S": record_id}},
                UpdateExpression="SET #status = :status, outcome = :outcome "
                f"REMOVE {PENDING_SHARD_ATTRIBUTE}, claim_run_id, claim_expires_at",
                ConditionExpression="#status = :pending AND claim_run_id = :run",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":status": {"S": status.value},
                    ":outcome": _serializer.serialize(stored_outcome),
                    ":pending": {"S": OrderStatus.PENDING.value},
                    ":run": {"S": run_id},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise
            item: Any = err.response.get("Item")  # the order as it was (ReturnValuesOnConditionCheckFailure)
            current = item_to_order(item) if item else None
            if current is None or not current.completed_by(run_id, status):
                raise ClaimLost(f"run {run_id!r} does not hold order {record_id!r}") from None

    def release_order(self, record_id: str, run_id: str) -> None:
        """Remove the claim with an update conditional on it; a failed condition: nothing to give back."""
        try:
            self._call(
                self._client.update_item,
                TableName=self._table,
                Key={ORDERS_KEY: {"S": record_id}},
                UpdateExpression="REMOVE claim_run_id, claim_expires_at",
                ConditionExpression="claim_run_id = :run AND #status = :pending",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":run": {"S": run_id},
                    ":pending": {"S": OrderStatus.PENDING.value},
                },
            )
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise

    def _call(self, operation: Callable[..., _T], **kwargs: Any) -> _T:
        """``operation(**kwargs)``, retried with backoff on transient errors, then ``StorageUnavailable``.

        Only for requests that are safe to repeat (reads, and updates whose condition makes a
        repeat harmless).
        """
        for attempt in range(self._backoff.max_attempts):
            try:
                return operation(**kwargs)
            except ClientError as err:
                if _error_code(err) not in TRANSIENT_CODES:
                    raise
            except (BotoConnectionError, HTTPClientError):
                pass
            if attempt + 1 < self._backoff.max_attempts:
                self._backoff.pause(attempt)
        raise StorageUnavailable()

    def _claim_chunk(self, record_ids: Sequence[str], run_id: str, now: int, until: int) -> list[str]:
        """Claim up to 100 orders in one transaction; returns those claimed (all but failed conditions).

        A transaction is all or nothing, so when some conditions fail DynamoDB cancels it and names
        them (``ConditionalCheckFailed``); the others (reason ``None``) are retried at once without
        them. Transient cancellations (conflicts, throttling) and errors are retried with backoff.
        """
        values = {
            ":run": {"S": run_id},
            ":until": {"N": str(until)},
            ":now": {"N": str(now)},
            ":pending": {"S": OrderStatus.PENDING.value},
        }
        remaining = list(record_ids)
        failures = 0
        while remaining:
            actions: Any = [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {ORDERS_KEY: {"S": record_id}},
                        "UpdateExpression": "SET claim_run_id = :run, claim_expires_at = :until",
                        "ConditionExpression": _CLAIMABLE,
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": values,
                    }
                }
                for record_id in remaining
            ]
            try:
                # No ClientRequestToken: repeating a committed claim is harmless (claim_run_id = :run).
                self._client.transact_write_items(TransactItems=actions)
                return remaining
            except ClientError as err:
                code = _error_code(err)
                if code == "TransactionCanceledException":
                    reasons = [r.get("Code", "None") for r in err.response.get("CancellationReasons", [])]
                    lost = {
                        r
                        for r, why in zip(remaining, reasons, strict=False)
                        if why == "ConditionalCheckFailed"
                    }
                    if not set(reasons) - {"ConditionalCheckFailed"} <= _TRANSIENT_CANCELLATIONS:
                        raise
                    remaining = [r for r in remaining if r not in lost]
                    if lost and set(reasons) <= {"ConditionalCheckFailed", "None"}:
                        continue  # nothing transient went wrong: retry the rest at once
                elif code not in TRANSIENT_CODES:
                    raise
            except (BotoConnectionError, HTTPClientError):
                pass  # did it commit? The retry's conditions accept this run's own claims either way
            failures += 1
            if failures >= self._backoff.max_attempts:
                raise StorageUnavailable()
            self._backoff.pause(failures - 1)
        return []

    def _read_orders(self, record_ids: Sequence[str]) -> dict[str, Order]:
        """The stored orders with these record_ids (strongly consistent), 100 keys per BatchGetItem.

        BatchGetItem may answer only part of a request (``UnprocessedKeys``, under throttling or the
        16 MB response limit); those keys are asked again after a backoff pause.
        """
        found: dict[str, Order] = {}
        for chunk in _chunks(record_ids, _TRANSACTION_ITEMS):
            request: Any = {
                self._table: {"Keys": [{ORDERS_KEY: {"S": r}} for r in chunk], "ConsistentRead": True}
            }
            partial = 0
            while request:
                response = self._call(self._client.batch_get_item, RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    order = item_to_order(item)
                    found[order.record_id] = order
                request = response.get("UnprocessedKeys") or None
                if request:
                    partial += 1
                    if partial >= self._backoff.max_attempts:
                        raise StorageUnavailable()
                    self._backoff.pause(partial - 1)
        return found


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


def secrets_manager_secret(secret_id: str, max_age_seconds: int, region: str | None = None) -> str:
    """The secret's string value through Powertools Parameters (cached for ``max_age_seconds``).

    ``region`` reads from that region with a provider of its own (the CLI's ``--region``);
    otherwise Powertools' shared provider uses the process's AWS configuration.
    """
    from aws_lambda_powertools.utilities import parameters

    if region:
        from botocore.config import Config

        provider = parameters.SecretsProvider(boto_config=Config(region_name=region))
        value: object = provider.get(secret_id, max_age=max_age_seconds)
    else:
        value = parameters.get_secret(secret_id, max_age=max_age_seconds)
    if not isinstance(value, str):
        raise TypeError("the secret must be a string secret")
    return value
