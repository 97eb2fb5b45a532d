"""AWS adapters. Each takes its boto3 client in the constructor, so moto or a real endpoint just works."""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from energy_auction import codec
from energy_auction.adapters.transient import TRANSIENT_CODES
from energy_auction.backoff import Backoff
from energy_auction.errors import ClaimLost, OrderNotFound, OrdersAlreadyProcessed, StorageUnavailable
from energy_auction.observability import logger
from energy_auction.orders import (
    LIST_EXAMINED_MAX,
    RETENTION_SECONDS,
    BatchTally,
    Decision,
    NoticeClaim,
    NoticeHold,
    Order,
    OrderPage,
    OrderQuery,
    OrderStatus,
    RunRecord,
    iso_utc,
    trader_key,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient

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
ORDERS_KEY = "order_key"
"""The table's partition key: ``Order.key``, ``<trader key>/<record_id>`` (see ``orders.order_key``)."""
EXPIRES_ATTRIBUTE = "expires_at"
"""The order's expiry (epoch seconds): the sort key of the pending-orders index."""
TTL_ATTRIBUTE = "purge_at"
"""The table's TTL attribute: ``Order.purge_at``, the expiry, or later while the order still
matters to the pipeline (decided and not settled, or rejected)."""
PENDING_INDEX = "pending-keys"
"""Sparse GSI over pending orders: partition key ``pending_shard`` (S), sort key ``expires_at`` (N),
keys only. Only pending orders carry ``pending_shard``, so the index holds nothing else; and as it
projects no other attribute, a claim (which sets only unprojected attributes) writes no entry."""
LEGACY_PENDING_INDEX = "pending-orders"
"""The pending-orders index before ``PENDING_INDEX`` (same keys, projection ALL). A stage upgraded
from it keeps it for one deploy (context ``legacy_pending_index``; README, "Upgrading to the
keys-only pending index"); nothing queries it."""
PENDING_SHARD_ATTRIBUTE = "pending_shard"
PENDING_SHARDS = 8
"""Pending orders spread over this many index partitions (by a hash of the order's key)."""
NOTICES_INDEX = "owed-notices"
"""Sparse GSI over rejected orders whose notice is owed (the outbox): partition key ``notice_shard``
(S), sort key ``notice_due_at`` (N), keys only. Only an owed notice carries ``notice_shard``."""
NOTICE_SHARD_ATTRIBUTE = "notice_shard"
NOTICE_DUE_ATTRIBUTE = "notice_due_at"
TRADER_INDEX = "orders-by-trader"
"""GSI of every order by its trader, for a trader's listing: partition key ``trader_key`` (S), sort
key ``listed_at`` (S), keys only. Its keys never change after a submission, so the pipeline's
updates never write to it."""
TRADER_KEY_ATTRIBUTE = "trader_key"
LISTED_AT_ATTRIBUTE = "listed_at"
TIME_INDEX = "orders-by-time"
"""GSI of every order over ``LIST_SHARDS`` partitions, for an operator's listing of all traders:
partition key ``list_shard`` (S), sort key ``listed_at`` (S), keys only; a page merges the shards."""
LIST_SHARD_ATTRIBUTE = "list_shard"
LIST_SHARDS = 8
_STORAGE_ATTRIBUTES = (
    ORDERS_KEY,
    PENDING_SHARD_ATTRIBUTE,
    NOTICE_SHARD_ATTRIBUTE,
    TTL_ATTRIBUTE,
    TRADER_KEY_ATTRIBUTE,
    LISTED_AT_ATTRIBUTE,
    LIST_SHARD_ATTRIBUTE,
)
"""Attributes that only place an item in an index or schedule its deletion; not part of the order."""

RUN_KEY_PREFIX = "run#"
"""Key prefix of a run's totals in the orders table (``record_batch``)."""


def run_key(run_id: str) -> str:
    return f"{RUN_KEY_PREFIX}{run_id}"


POST_SLOT_KEY_PREFIX = "post#"
"""Key prefix of a notice channel's post slot in the orders table (``take_post_slot``): like a
run's item, a key no order can have, with no index attribute."""


_T = TypeVar("_T")
_A = TypeVar("_A")
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def order_to_item(order: Order) -> dict[str, Any]:
    """The DynamoDB item of an order. Pending orders carry ``pending_shard``, which puts them in the
    sparse pending-orders index; an item without it (a processed order) is not in the index. An
    owed rejection notice carries ``notice_shard`` likewise (the owed-notices index)."""
    plain = order.model_dump(mode="python", exclude_none=True)
    plain["status"] = order.status.value
    plain[ORDERS_KEY] = order.key
    plain[TTL_ATTRIBUTE] = order.purge_at()
    plain[TRADER_KEY_ATTRIBUTE] = trader_key(order.trader)
    plain[LISTED_AT_ATTRIBUTE] = order.listed_at
    plain[LIST_SHARD_ATTRIBUTE] = index_shard(order.key, LIST_SHARDS)
    if order.status is OrderStatus.PENDING:
        plain[PENDING_SHARD_ATTRIBUTE] = index_shard(order.key)
    if order.notice_due_at is not None:
        plain[NOTICE_SHARD_ATTRIBUTE] = index_shard(order.key)
    return {key: _serializer.serialize(value) for key, value in plain.items()}


def item_to_order(item: dict[str, Any]) -> Order:
    plain = {key: _deserializer.deserialize(value) for key, value in item.items()}
    for attribute in _STORAGE_ATTRIBUTES:  # storage details, not part of the order
        plain.pop(attribute, None)
    return Order.model_validate(plain)


def index_shard(key: str, shards: int = PENDING_SHARDS) -> str:
    """The index partition of an order (pending-orders and owed-notices over ``PENDING_SHARDS``,
    orders-by-time over ``LIST_SHARDS``) from its key: a stable hash, so it survives restarts."""
    return str(zlib.crc32(key.encode()) % shards)


def _error_code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _order_before(err: ClientError) -> Order | None:
    """The order as it was when a conditional update's condition failed (asked for with
    ``ReturnValuesOnConditionCheckFailure``), None if there was none; any other error is raised."""
    if _error_code(err) != "ConditionalCheckFailedException":
        raise err
    item: Any = err.response.get("Item")
    return item_to_order(item) if item else None


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


WORK_PART_BYTES = 8 * 1024 * 1024
"""Bytes per part of a run's batches file (S3's smallest part, but the last, is 5 MiB)."""

_TRANSACTION_ITEMS = 100
"""The most actions one TransactWriteItems call takes, and the most keys one BatchGetItem call reads."""
CLAIM_WORKERS = 16
"""Conditional claim updates (a batch's orders, a notifier's notices) in flight at once: threads
sharing the client, which is thread-safe; its connection pool is as large (see ``bootstrap``)."""


def _each(call: Callable[[_A], _T], items: Sequence[_A]) -> list[_T]:
    """``call`` on each item, ``CLAIM_WORKERS`` at a time; the answers in the items' order. On a
    failure the calls not started yet are dropped, the running ones finish, and the error is raised."""
    if len(items) <= 1:
        return [call(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(CLAIM_WORKERS, len(items)))
    try:
        return list(pool.map(call, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _each_notice(call: Callable[[NoticeHold], _T], holds: Sequence[NoticeHold], what: str) -> list[_T | None]:
    """``call`` on each hold, ``CLAIM_WORKERS`` at a time, each failure its own: a hold whose call
    fails is None, logged with its order key and the error's type. Once ``CLAIM_WORKERS`` calls in
    a row have run out of retries (``StorageUnavailable``: the table is failing, not one notice),
    the holds not started yet are not tried and are None too, so an outage costs about one round
    of retries, not one a notice."""
    lock = threading.Lock()
    failures_in_a_row = 0
    untried = 0

    def one(hold: NoticeHold) -> _T | None:
        nonlocal failures_in_a_row, untried
        with lock:
            if failures_in_a_row >= CLAIM_WORKERS:
                untried += 1
                return None
        try:
            answer = call(hold)
        except Exception as err:
            with lock:
                failures_in_a_row = failures_in_a_row + 1 if isinstance(err, StorageUnavailable) else 0
            logger.warning(
                f"a notice could not be {what}", extra={"order_key": hold.key, "error": type(err).__name__}
            )
            return None
        with lock:
            failures_in_a_row = 0
        return answer

    answers = _each(one, holds)
    if untried:
        logger.warning(f"notices not {what}: the order table is failing", extra={"notices": untried})
    return answers


# An order a run may claim (Order.is_claimable): pending, live or decided, and free (never claimed,
# claim lapsed, or already this run's).
_CLAIMABLE = (
    "#status = :pending AND (expires_at > :now OR attribute_exists(decision)) "
    "AND (attribute_not_exists(claim_run_id) OR claim_expires_at <= :now OR claim_run_id = :run)"
)
# A stored order a submission may replace (Order.is_replaceable).
_REPLACEABLE = (
    f"attribute_not_exists({ORDERS_KEY}) OR (#status = :cancelled AND expires_at > :now) "
    "OR (expires_at <= :now AND NOT (#status = :pending AND attribute_exists(decision)) "
    f"AND attribute_not_exists({NOTICE_DUE_ATTRIBUTE})) "
    "OR (#status = :pending AND attribute_not_exists(decision) "
    "AND (attribute_not_exists(claim_run_id) OR claim_expires_at <= :now))"
)
# An order its trader may cancel (Order.is_cancellable).
_CANCELLABLE = (
    "#status = :pending AND expires_at > :now AND attribute_not_exists(decision) "
    "AND (attribute_not_exists(claim_run_id) OR claim_expires_at <= :now)"
)
# An order no run can claim again but which is still in the pending-orders index (retire_orders).
_RETIRABLE = "#status = :pending AND attribute_not_exists(decision) AND expires_at <= :now"
# The order's rejection by :run is settled and its notice still owed.
_OWES_NOTICE = f"#status = :rejected AND #outcome.run_id = :run AND attribute_exists({NOTICE_DUE_ATTRIBUTE})"
_NOTICE_NAMES = {"#status": "status", "#outcome": "outcome"}


class DynamoDbOrderStore:
    """Orders in a DynamoDB table keyed by ``Order.key``, TTL on ``purge_at``.

    A submission is one ``TransactWriteItems`` call (at most 100 orders), so it is stored whole or
    not at all, and each Put is conditional: an order the auction has processed, or a pipeline run
    has claimed, cannot be replaced until it expires (or the claim lapses).

    The pipeline finds pending orders with a query on the sparse, keys-only ``PENDING_INDEX`` (one
    per shard, never a scan), claims each with a conditional update (a batch's updates run a few at a time),
    and completes or releases each with a conditional update on its claim, so two runs never
    process the same order.

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
                    "ConditionExpression": _REPLACEABLE,
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": {
                        ":pending": {"S": OrderStatus.PENDING.value},
                        ":cancelled": {"S": OrderStatus.CANCELLED.value},
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

    def get_order(self, key: str) -> Order | None:
        try:
            response = self._client.get_item(
                TableName=self._table, Key={ORDERS_KEY: {"S": key}}, ConsistentRead=True
            )
        except (ClientError, BotoConnectionError, HTTPClientError) as err:
            if isinstance(err, ClientError) and _error_code(err) not in TRANSIENT_CODES:
                raise
            raise StorageUnavailable() from None
        item = response.get("Item")
        return item_to_order(item) if item else None

    def pending_keys(self, now: int, run_id: str) -> Iterator[str]:
        """The pending orders' keys, oldest expiry first, page by page: every order in the
        pending-orders index, which may be more than the claimable ones.

        Two queries per index shard (the live orders, and the expired ones), each sorted by
        expiry, merged as they are read: memory holds one page per query, whatever the number of
        orders. The index projects keys only, so nothing is filtered here (``run_id`` is not
        needed): a live order another live run holds, and an expired one without a decision, are
        staged too; ClaimBatch's read leaves them out, and takes the expired undecided ones out of
        the index (``retire_orders``), so each is staged by one run at most."""
        del run_id
        streams = [
            (
                (int(item[EXPIRES_ATTRIBUTE]["N"]), item[ORDERS_KEY]["S"])
                for item in self._query(
                    IndexName=PENDING_INDEX,
                    KeyConditionExpression=f"{PENDING_SHARD_ATTRIBUTE} = :shard AND {key_condition}",
                    ProjectionExpression=f"{ORDERS_KEY}, {EXPIRES_ATTRIBUTE}",
                    ExpressionAttributeValues={":shard": {"S": str(shard)}, ":now": {"N": str(now)}},
                )
            )
            for shard in range(PENDING_SHARDS)
            for key_condition in ("expires_at <= :now", "expires_at > :now")
        ]
        for _, key in heapq.merge(*streams):
            yield key

    def retire_orders(self, keys: Sequence[str], now: int) -> None:
        """Take each order that is pending, undecided and expired at ``now`` out of the
        pending-orders index: one conditional ``UpdateItem`` per order (``REMOVE pending_shard``).
        A failed condition (the order was decided, settled, replaced or is live again) leaves the
        order as it is. A new submission of the same record_id puts it back in the index."""
        for key in dict.fromkeys(keys):
            try:
                self._call(
                    self._client.update_item,
                    TableName=self._table,
                    Key={ORDERS_KEY: {"S": key}},
                    UpdateExpression=f"REMOVE {PENDING_SHARD_ATTRIBUTE}",
                    ConditionExpression=_RETIRABLE,
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={
                        ":pending": {"S": OrderStatus.PENDING.value},
                        ":now": {"N": str(now)},
                    },
                )
            except ClientError as err:
                if _error_code(err) != "ConditionalCheckFailedException":
                    raise

    def get_orders(self, keys: Sequence[str], *, consistent: bool = True) -> list[Order]:
        """BatchGetItem, 100 keys a call: strongly consistent, or eventually consistent (half the
        read units) when not ``consistent``."""
        found = self._read_orders(list(dict.fromkeys(keys)), consistent=consistent)
        return [found[k] for k in dict.fromkeys(keys) if k in found]

    def begin_run(self, run_id: str, staged: int, left: int, now: int) -> None:
        """The run's item, ``run#<run_id>`` in the orders table: a key no order can have (a trader
        key has no ``#``), with no index attribute, so no index or listing ever holds it."""
        self._call(
            self._client.put_item,
            TableName=self._table,
            Item={
                ORDERS_KEY: {"S": run_key(run_id)},
                "staged": {"N": str(staged)},
                "left": {"N": str(left)},
                TTL_ATTRIBUTE: {"N": str(now + RETENTION_SECONDS)},
            },
        )

    def record_batch(self, run_id: str, batch: int, tally: BatchTally) -> None:
        """One ``ADD`` to the run's item, in a transaction with a ``ClientRequestToken`` made of the
        run and the batch: DynamoDB applies a repeat within 10 minutes once, so a retried task (an
        EXPRESS child lasts at most 5) does not count its batch twice."""
        token = hashlib.sha256(f"{run_id}\n{batch}".encode()).hexdigest()[:36]
        update: Any = {
            "TableName": self._table,
            "Key": {ORDERS_KEY: {"S": run_key(run_id)}},
            "UpdateExpression": "ADD accepted :a, rejected :r, failed :f, batches :one",
            "ExpressionAttributeValues": {
                ":a": {"N": str(tally.accepted)},
                ":r": {"N": str(tally.rejected)},
                ":f": {"N": str(tally.failed)},
                ":one": {"N": "1"},
            },
        }
        # Every batch of a run adds to this one item, so transactions on it conflict: a cancellation
        # whose reasons are all transient (a conflict, throttling) is retried, with the same token.
        for attempt in range(self._backoff.max_attempts):
            try:
                self._client.transact_write_items(
                    TransactItems=[{"Update": update}], ClientRequestToken=token
                )
                return
            except ClientError as err:
                code = _error_code(err)
                if code == "TransactionCanceledException":
                    reasons = {r.get("Code", "None") for r in err.response.get("CancellationReasons", [])}
                    if not reasons <= _TRANSIENT_CANCELLATIONS:
                        raise
                elif code not in TRANSIENT_CODES:
                    raise
            except (BotoConnectionError, HTTPClientError):
                pass  # retried with the same token: applied once
            if attempt + 1 < self._backoff.max_attempts:
                self._backoff.pause(attempt)
        raise StorageUnavailable()

    def take_post_slot(self, channel: str, now: float, interval: float) -> float:
        """One conditional update of the channel's item: it takes the slot only if the slot's
        time has come, so two notifiers never both take it."""
        try:
            self._call(
                self._client.update_item,
                TableName=self._table,
                Key={ORDERS_KEY: {"S": f"{POST_SLOT_KEY_PREFIX}{channel}"}},
                UpdateExpression="SET free_at = :free",
                ConditionExpression="attribute_not_exists(free_at) OR free_at <= :now",
                ExpressionAttributeValues={
                    ":free": {"N": f"{now + interval:.3f}"},
                    ":now": {"N": f"{now:.3f}"},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise
            item: Any = err.response.get("Item") or {}
            held = item.get("free_at", {}).get("N")
            return max(0.001, float(held) - now) if held is not None else interval
        return 0.0

    def run_record(self, run_id: str) -> RunRecord:
        response = self._call(
            self._client.get_item,
            TableName=self._table,
            Key={ORDERS_KEY: {"S": run_key(run_id)}},
            ConsistentRead=True,
        )
        item = response.get("Item") or {}

        def count(name: str) -> int:
            return int(item[name]["N"]) if name in item else 0

        settled = BatchTally(count("accepted"), count("rejected"), count("failed"), count("batches"))
        return RunRecord(count("staged"), count("left"), settled)

    def list_orders(self, query: OrderQuery) -> OrderPage:
        """Keys from the trader's index (or every shard of the time index, merged) newest first,
        then the orders themselves (BatchGetItem, eventually consistent like the index), a batch at
        a time until the page is full. Expired orders are outside the key range and never read.

        An index entry the order has moved on from (it was replaced since, so its ``listed_at`` is
        newer) is skipped: the order is listed once, at its entry for the current submission.
        """
        lowest = query.lowest_listed_at()
        if query.before is not None and query.before <= lowest:
            # The cursor's order has expired since (or since is past it): nothing is left, and
            # DynamoDB refuses a BETWEEN whose upper bound is below its lower one.
            return OrderPage([], None)
        wanted = query.limit + 1  # one more than the page: whether anything is left
        if query.trader is not None:
            partitions = [(TRADER_INDEX, TRADER_KEY_ATTRIBUTE, trader_key(query.trader))]
        else:
            partitions = [(TIME_INDEX, LIST_SHARD_ATTRIBUTE, str(s)) for s in range(LIST_SHARDS)]
        listed = heapq.merge(
            *(self._listed(partition, lowest, query.before, wanted) for partition in partitions), reverse=True
        )
        orders: list[Order] = []
        examined = 0
        last = None
        while len(orders) < wanted and examined < LIST_EXAMINED_MAX:
            batch = list(
                itertools.islice(
                    listed, min(_TRANSACTION_ITEMS, wanted - len(orders), LIST_EXAMINED_MAX - examined)
                )
            )
            if not batch:
                return OrderPage(orders, None)
            examined += len(batch)
            found = self._read_orders([key for _, key in batch], consistent=False)
            for listed_at, key in batch:
                last = listed_at
                order = found.get(key)
                if order is not None and order.listed_at == listed_at and query.wants(order):
                    orders.append(order)
        if len(orders) > query.limit:
            return OrderPage(orders[: query.limit], orders[query.limit - 1].listed_at)
        return OrderPage(orders, last)  # looked at LIST_EXAMINED_MAX orders: go on from the last

    def _listed(
        self, partition: tuple[str, str, str], lowest: str, before: str | None, page: int
    ) -> Iterator[tuple[str, str]]:
        """``(listed_at, key)`` of one listing index partition (index, key name, key value), newest
        first, in [lowest, before)."""
        index, name, value = partition
        condition = f"{name} = :value AND {LISTED_AT_ATTRIBUTE} >= :lowest"
        values = {":value": {"S": value}, ":lowest": {"S": lowest}}
        if before is not None:
            condition = f"{name} = :value AND {LISTED_AT_ATTRIBUTE} BETWEEN :lowest AND :before"
            values[":before"] = {"S": before}
        for item in self._query(
            IndexName=index,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
            # One more than the page: the merge reads one key ahead of what it gives.
            Limit=min(page + 1, _TRANSACTION_ITEMS),
        ):
            listed_at = item[LISTED_AT_ATTRIBUTE]["S"]
            if before is None or listed_at < before:  # BETWEEN includes its upper end
                yield listed_at, item[ORDERS_KEY]["S"]

    def cancel_order(self, key: str, now: int) -> Order:
        """One update conditional on the order being cancellable; when the condition fails, the
        order as it was says why."""
        try:
            response = self._call(
                self._client.update_item,
                TableName=self._table,
                Key={ORDERS_KEY: {"S": key}},
                # Out of the pending-orders index at once: no run finds it again.
                UpdateExpression=f"SET #status = :cancelled, cancelled_at = :at "
                f"REMOVE {PENDING_SHARD_ATTRIBUTE}",
                ConditionExpression=_CANCELLABLE,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":pending": {"S": OrderStatus.PENDING.value},
                    ":cancelled": {"S": OrderStatus.CANCELLED.value},
                    ":now": {"N": str(now)},
                    ":at": {"S": iso_utc(now)},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            current = _order_before(err)
            if current is None or not current.is_live(now):
                raise OrderNotFound(key.partition("/")[2]) from None
            if current.status is OrderStatus.CANCELLED:
                return current
            raise current.cancel_refused(now) from None
        return item_to_order(response["Attributes"])

    def _query(self, **request: Any) -> Iterator[dict[str, Any]]:
        """Every item a query on the table (or one of its indexes) finds, page by page."""
        request = {"TableName": self._table, **request}
        while True:
            page = self._call(self._client.query, **request)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def claim_orders(
        self,
        keys: Sequence[str],
        run_id: str,
        now: int,
        lease_seconds: int,
        decisions: Mapping[str, Decision] | None = None,
    ) -> list[Order]:
        """Claim each order with one conditional ``UpdateItem`` (``ReturnValues`` ALL_NEW: the
        claimed order comes back from the write itself, no read after it), ``CLAIM_WORKERS`` at a
        time.

        An update that carries a decision stores it unless the order has one
        (``if_not_exists``), on the condition that the order is decided or is the submission the
        decision was made for. A failed condition (``ConditionalCheckFailedException``) means the
        order is not claimed; transient errors are retried with backoff. Each order is its own
        write (one write unit, not a transaction's two), so claiming n orders takes n updates, about
        n / ``CLAIM_WORKERS`` round trips. Returns the claimed orders in the order of ``keys``. When
        it raises ``StorageUnavailable`` some orders may be claimed already (the updates not yet
        started are dropped); the same run claiming again gets them back.
        """
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        unique = list(dict.fromkeys(keys))
        values = {
            ":run": {"S": run_id},
            ":until": {"N": str(now + lease_seconds)},
            ":now": {"N": str(now)},
            ":pending": {"S": OrderStatus.PENDING.value},
        }
        chosen = decisions or {}

        def claim(key: str) -> Order | None:
            try:
                # Repeating a committed claim is harmless: the condition accepts claim_run_id = :run.
                response = self._call(
                    self._client.update_item,
                    **self._claim_update(key, values, chosen.get(key)),
                    ReturnValues="ALL_NEW",
                )
            except ClientError as err:
                if _error_code(err) != "ConditionalCheckFailedException":
                    raise
                return None
            return item_to_order(response["Attributes"])

        return [order for order in _each(claim, unique) if order is not None]

    def complete_order(
        self,
        key: str,
        run_id: str,
        status: OrderStatus,
        outcome: dict[str, Any],
        *,
        notice_due_at: int | None = None,
    ) -> None:
        """Record the outcome (and for a rejection its owed notice) with one conditional update on
        the claim: the outcome and the outbox entry are written together or not at all.

        A retry whose first attempt committed is recognised by the outcome's ``run_id`` and the
        status, and succeeds without writing again.
        """
        values: dict[str, Any] = {
            ":status": {"S": status.value},
            ":outcome": _serializer.serialize(outcome),
            ":pending": {"S": OrderStatus.PENDING.value},
            ":run": {"S": run_id},
        }
        removed = [PENDING_SHARD_ATTRIBUTE, "claim_run_id", "claim_expires_at", "notice_lease_until"]
        removed += ["notice_redeliveries", "notice_delivery"]
        # Order.purge_at: a rejected order is kept past its expiry, an accepted one is not.
        retained = RETENTION_SECONDS if status is OrderStatus.REJECTED else 0
        update = (
            f"SET #status = :status, outcome = :outcome, {TTL_ATTRIBUTE} = {EXPIRES_ATTRIBUTE} + :retained"
        )
        values[":retained"] = {"N": str(retained)}
        if status is OrderStatus.REJECTED and notice_due_at is not None:
            update += f", {NOTICE_DUE_ATTRIBUTE} = :due, {NOTICE_SHARD_ATTRIBUTE} = :notice_shard"
            values[":due"] = {"N": str(notice_due_at)}
            values[":notice_shard"] = {"S": index_shard(key)}
        else:
            removed += [NOTICE_DUE_ATTRIBUTE, NOTICE_SHARD_ATTRIBUTE]
        try:
            self._call(
                self._client.update_item,
                TableName=self._table,
                Key={ORDERS_KEY: {"S": key}},
                UpdateExpression=f"{update} REMOVE {', '.join(removed)}",
                ConditionExpression="#status = :pending AND claim_run_id = :run",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            current = _order_before(err)
            if current is None or not current.completed_by(run_id, status):
                raise ClaimLost(f"run {run_id!r} does not hold order {key!r}") from None

    def release_order(self, key: str, run_id: str) -> None:
        """Remove the claim with an update conditional on it; a failed condition: nothing to give back."""
        try:
            self._call(
                self._client.update_item,
                TableName=self._table,
                Key={ORDERS_KEY: {"S": key}},
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

    def claim_notices(
        self, holds: Sequence[NoticeHold], now: int, lease_seconds: int
    ) -> list[NoticeClaim | None]:
        """One conditional update per notice takes its delivery, ``CLAIM_WORKERS`` at a time; when
        a condition fails, the order as it was says why (delivered, busy, or no such notice). A
        notice whose update fails otherwise is None (``_each_notice``); the others go on."""

        def take(hold: NoticeHold) -> NoticeClaim:
            try:
                self._call(
                    self._client.update_item,
                    TableName=self._table,
                    Key={ORDERS_KEY: {"S": hold.key}},
                    UpdateExpression="SET notice_lease_until = :until, notice_delivery = :delivery",
                    ConditionExpression=f"{_OWES_NOTICE} AND (attribute_not_exists(notice_lease_until) "
                    "OR notice_lease_until <= :now OR notice_delivery = :delivery)",
                    ExpressionAttributeNames=_NOTICE_NAMES,
                    ExpressionAttributeValues={
                        ":rejected": {"S": OrderStatus.REJECTED.value},
                        ":run": {"S": hold.run_id},
                        ":now": {"N": str(now)},
                        ":until": {"N": str(now + lease_seconds)},
                        ":delivery": {"S": hold.delivery},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as err:
                current = _order_before(err)
                if current is None or not current.completed_by(hold.run_id, OrderStatus.REJECTED):
                    return NoticeClaim.UNKNOWN
                return NoticeClaim.DELIVERED if current.notice_due_at is None else NoticeClaim.BUSY
            return NoticeClaim.CLAIMED

        return _each_notice(take, holds, "taken")

    def finish_notices(self, holds: Sequence[NoticeHold], *, delivered: bool) -> None:
        """One conditional update per notice, ``CLAIM_WORKERS`` at a time, each failure its own
        (``_each_notice``)."""
        removed = ["notice_lease_until", "notice_delivery"]
        if delivered:
            removed += [NOTICE_DUE_ATTRIBUTE, NOTICE_SHARD_ATTRIBUTE, "notice_redeliveries"]

        def finish(hold: NoticeHold) -> bool:
            self._update_owed_notice(
                hold.key,
                hold.run_id,
                f"REMOVE {', '.join(removed)}",
                {":delivery": {"S": hold.delivery}},
                condition="notice_delivery = :delivery",
            )
            return True

        failed = _each_notice(finish, holds, "finished").count(None)
        if failed:
            raise StorageUnavailable(f"{failed} of {len(holds)} notices could not be finished")

    def overdue_notices(self, now: int, limit: int) -> list[Order]:
        """Query each shard of the owed-notices index (keys only) for what is due, then read those
        orders (strongly consistent) and keep the ones no delivery holds."""
        due: list[tuple[int, str]] = []
        for shard in range(PENDING_SHARDS):
            # The index is sorted by due time: a shard's first ``limit`` keys are its most overdue.
            for count, item in enumerate(
                self._query(
                    IndexName=NOTICES_INDEX,
                    KeyConditionExpression=f"{NOTICE_SHARD_ATTRIBUTE} = :shard AND "
                    f"{NOTICE_DUE_ATTRIBUTE} <= :now",
                    ExpressionAttributeValues={":shard": {"S": str(shard)}, ":now": {"N": str(now)}},
                    Limit=limit,
                ),
                start=1,
            ):
                due.append((int(item[NOTICE_DUE_ATTRIBUTE]["N"]), item[ORDERS_KEY]["S"]))
                if count >= limit:
                    break
        # Read only the most overdue ones (with room for those a delivery holds right now).
        keys = [key for _, key in sorted(due)[: 2 * limit]]
        found = self._read_orders(keys)
        ready = [
            o
            for o in found.values()
            if o.notice_due_at is not None
            and o.notice_due_at <= now
            and (o.notice_lease_until or 0) <= now
            and o.status is OrderStatus.REJECTED
        ]
        return sorted(ready, key=lambda o: (o.notice_due_at or 0, o.key))[:limit]

    def postpone_notice(self, key: str, run_id: str, due_at: int) -> None:
        self._update_owed_notice(
            key,
            run_id,
            f"SET {NOTICE_DUE_ATTRIBUTE} = :due, "
            "notice_redeliveries = if_not_exists(notice_redeliveries, :zero) + :one",
            {":due": {"N": str(due_at)}, ":zero": {"N": "0"}, ":one": {"N": "1"}},
        )

    def _update_owed_notice(
        self, key: str, run_id: str, update: str, values: dict[str, Any], condition: str | None = None
    ) -> None:
        """Apply ``update`` if the order still owes its rejection notice by ``run_id`` (and
        ``condition`` holds); else nothing."""
        try:
            self._call(
                self._client.update_item,
                TableName=self._table,
                Key={ORDERS_KEY: {"S": key}},
                UpdateExpression=update,
                ConditionExpression=f"{_OWES_NOTICE} AND {condition}" if condition else _OWES_NOTICE,
                ExpressionAttributeNames=_NOTICE_NAMES,
                ExpressionAttributeValues={
                    ":rejected": {"S": OrderStatus.REJECTED.value},
                    ":run": {"S": run_id},
                    **values,
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

    def _claim_update(self, key: str, values: dict[str, Any], decision: Decision | None) -> dict[str, Any]:
        """The conditional ``UpdateItem`` request that claims the order ``key`` (with ``decision``)."""
        update = "SET claim_run_id = :run, claim_expires_at = :until"
        condition = _CLAIMABLE
        if decision is not None:
            # Order.purge_at: a decided order is kept past its expiry until it is settled.
            update += ", decision = if_not_exists(decision, :decision)"
            update += f", {TTL_ATTRIBUTE} = {EXPIRES_ATTRIBUTE} + :retained"
            condition += " AND (attribute_exists(decision) OR submitted_at = :submitted)"
            values = {
                **values,
                ":decision": _serializer.serialize(decision.model_dump(mode="python", exclude_none=True)),
                ":submitted": {"S": decision.submitted_at},
                ":retained": {"N": str(RETENTION_SECONDS)},
            }
        return {
            "TableName": self._table,
            "Key": {ORDERS_KEY: {"S": key}},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": values,
        }

    def _read_orders(self, keys: Sequence[str], *, consistent: bool = True) -> dict[str, Order]:
        """The stored orders with these keys by key (strongly consistent unless told), 100 keys per
        BatchGetItem.

        BatchGetItem may answer only part of a request (``UnprocessedKeys``, under throttling or the
        16 MB response limit); those keys are asked again after a backoff pause.
        """
        found: dict[str, Order] = {}
        for chunk in _chunks(keys, _TRANSACTION_ITEMS):
            request: Any = {
                self._table: {"Keys": [{ORDERS_KEY: {"S": k}} for k in chunk], "ConsistentRead": consistent}
            }
            partial = 0
            while request:
                response = self._call(self._client.batch_get_item, RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    order = item_to_order(item)
                    found[order.key] = order
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
    """A run's batches as one JSON array in S3, where the Distributed Map's ItemReader reads them.

    Written as they come: a multipart upload of parts of :data:`WORK_PART_BYTES`, or one PutObject
    when everything fits in one part, so memory holds at most one part whatever the run's size."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "work/") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    def write_batches(self, run_id: str, batches: Iterable[dict[str, Any]]) -> dict[str, str]:
        key = f"{self._prefix}runs/{run_id}/batches.json"
        buffer = bytearray(b"[")
        parts: list[Any] = []
        upload: str | None = None
        try:
            for number, batch in enumerate(batches):
                buffer += (b"," if number else b"") + codec.dumps(batch).encode()
                if len(buffer) >= WORK_PART_BYTES:
                    if upload is None:
                        upload = self._client.create_multipart_upload(
                            Bucket=self._bucket, Key=key, ContentType="application/json"
                        )["UploadId"]
                    parts.append(self._part(key, upload, len(parts) + 1, bytes(buffer)))
                    buffer.clear()
            buffer += b"]"
            if upload is None:
                self._client.put_object(
                    Bucket=self._bucket, Key=key, Body=bytes(buffer), ContentType="application/json"
                )
            else:
                parts.append(self._part(key, upload, len(parts) + 1, bytes(buffer)))
                self._client.complete_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload is not None:
                with contextlib.suppress(ClientError, BotoConnectionError, HTTPClientError):
                    self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload)
            raise
        return {"bucket": self._bucket, "key": key}

    def _part(self, key: str, upload: str, number: int, body: bytes) -> Any:
        etag = self._client.upload_part(
            Bucket=self._bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
        )["ETag"]
        return {"ETag": etag, "PartNumber": number}


class SnsNoticePublisher:
    """Publishes notices to the notification topic, as the state machine's ``sns:publish`` states do
    (same subject, same ``kind`` message attribute)."""

    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        self._client = client
        self._topic_arn = topic_arn

    def publish(self, subject: str, message: str, kind: str) -> None:
        self._client.publish(
            TopicArn=self._topic_arn,
            Subject=subject,
            Message=message,
            MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}},
        )


class SecretsManagerSecrets:
    """String secrets from Secrets Manager through Powertools Parameters, cached per secret.

    Each instance has a provider (and client) of its own, built on first use, rather than
    Powertools' process-wide default: a container owns its secrets source like any other adapter.
    """

    def __init__(self, region: str | None = None) -> None:
        self._region = region
        self._provider: Any = None

    def secret(self, secret_id: str, max_age_seconds: int) -> str:
        if self._provider is None:
            from aws_lambda_powertools.utilities import parameters
            from botocore.config import Config

            config = Config(region_name=self._region) if self._region else None
            self._provider = parameters.SecretsProvider(boto_config=config)
        value: object = self._provider.get(secret_id, max_age=max_age_seconds)
        if not isinstance(value, str):
            raise TypeError("the secret must be a string secret")
        return value
