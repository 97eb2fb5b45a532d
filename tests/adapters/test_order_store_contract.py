"""One contract for the OrderStore port, run against both adapters.

The SQLite store (local stack) and the DynamoDB store (deployed, here on moto) must be
interchangeable: every test in the first part runs once per adapter. The later parts cover what only
one adapter has: DynamoDB's retries under injected faults and its item shape, SQLite's durability and
sharing of one file.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from energy_auction.adapters.aws import DynamoDbOrderStore
from energy_auction.adapters.local import SqliteOrderStore
from energy_auction.backoff import Backoff
from energy_auction.errors import OrdersAlreadyProcessed, StorageUnavailable
from energy_auction.orders import (
    ORDER_TTL_SECONDS,
    Limits,
    Order,
    OrderStatus,
    iso_utc,
    new_orders,
    parse_orders,
    trader_key,
)
from tests.adapters.stores import MAX_ATTEMPTS, NOW, TABLE, StoreUnderTest, pending, processed
from tests.builders import TRADER, key
from tests.fakes import FaultyClient, dynamodb_client

# --- the contract, for both adapters -----------------------------------------------------------


@pytest.mark.parametrize(
    "parameter_2",
    [
        Decimal("2.1000000000000000000001"),
        Decimal("-0.000000000000000000000000000000000001"),
        12345678901234567890123456789012345678,
        -(10**37),
        Decimal("1E+125"),
        Decimal("1E-130"),
        0,
    ],
    ids=["22-decimals", "tiny-negative", "38-digit-int", "big-negative-int", "1e125", "1e-130", "zero"],
)
def test_a_stored_order_reads_back_equal_with_its_number_exact(
    subject: StoreUnderTest, parameter_2: Decimal | int
) -> None:
    # Given an order whose parameter_2 is a number floats cannot hold
    order = pending("ord-1", parameter_2=parameter_2)

    # When it is stored and read back
    subject.store.put_orders([order], now=NOW)
    found = subject.store.get_order(key("ord-1"))

    # Then it is the same order, digit for digit
    assert found == order
    assert found is not None
    assert str(found.parameter_2) == str(Decimal(parameter_2))
    assert type(found.expires_at) is int


@pytest.mark.parametrize(
    "number_text",
    [
        "0e200",
        "0E-200",
        "1.2345678901234567890123456789012345678e-127",
        "9.9999999999999999999999999999999999999e125",
    ],
    ids=["zero-with-large-exponent", "zero-with-small-exponent", "38-digits-near-the-bottom", "largest"],
)
def test_every_parameter_2_the_validator_accepts_can_be_stored(
    subject: StoreUnderTest, number_text: str
) -> None:
    # Given an order the intake validation accepts (a finite number, <= 38 digits, >= 1e-130)
    body = f'[{{"record_id": "edge-1", "parameter_1": "lot-A", "parameter_2": {number_text}}}]'
    orders = new_orders(parse_orders(body, Limits()), NOW, TRADER)

    # When it is stored
    subject.store.put_orders(orders, now=NOW)

    # Then it reads back equal (no adapter may turn a valid request into a server error)
    found = subject.store.get_order(key("edge-1"))
    assert found is not None
    assert found.parameter_2 == orders[0].parameter_2


def test_a_processed_order_reads_back_with_its_status_and_outcome(subject: StoreUnderTest) -> None:
    # Given an order the auction has accepted
    order = processed("ord-1")

    # When it is stored and read back
    subject.store.put_orders([order], now=NOW)

    # Then status and outcome (with its exact price) are kept
    found = subject.store.get_order(key("ord-1"))
    assert found == order
    assert found is not None
    assert found.status is OrderStatus.ACCEPTED
    assert found.outcome == {"cleared": True, "price": Decimal("41.25"), "run": "run-1"}


def test_an_unknown_record_id_reads_as_none(subject: StoreUnderTest) -> None:
    subject.store.put_orders([pending("ord-1")], now=NOW)

    assert subject.store.get_order(key("ord-2")) is None


def test_a_pending_order_is_replaced_with_a_new_expiry(subject: StoreUnderTest) -> None:
    # Given a pending order submitted an hour ago
    subject.store.put_orders([pending("ord-1", parameter_2=Decimal("10"), submitted=NOW - 3600)], now=NOW)

    # When the same record_id is submitted again now, changed
    again = pending("ord-1", parameter_1="lot-B", parameter_2=Decimal("11.75"), submitted=NOW)
    subject.store.put_orders([again], now=NOW)

    # Then the new version replaced the old one, and its 24 hours start now
    found = subject.store.get_order(key("ord-1"))
    assert found == again
    assert found is not None
    assert found.expires_at == NOW + ORDER_TTL_SECONDS
    assert subject.stored_ids() == {"ord-1"}


def test_storing_the_same_orders_twice_leaves_one_copy(subject: StoreUnderTest) -> None:
    # Given a batch that was stored
    batch = [pending("ord-1"), pending("ord-2", parameter_2=7)]
    subject.store.put_orders(batch, now=NOW)

    # When the client retries the very same batch
    subject.store.put_orders(batch, now=NOW)

    # Then it succeeds and there is still one copy of each order
    assert subject.stored_ids() == {"ord-1", "ord-2"}
    assert [subject.store.get_order(key(o.record_id)) for o in batch] == batch


def test_a_batch_touching_processed_live_orders_is_refused_whole(subject: StoreUnderTest) -> None:
    # Given a pending order and two live orders the auction has processed
    old_pending = pending("ord-pending", parameter_2=Decimal("1"))
    accepted = processed("ord-accepted", status=OrderStatus.ACCEPTED)
    rejected = processed("ord-rejected", status=OrderStatus.REJECTED)
    subject.store.put_orders([old_pending, accepted, rejected], now=NOW)

    # When a later batch mixes new orders, the pending one and both processed ones
    later = NOW + 60
    batch = [
        pending("ord-new-1", submitted=later),
        pending("ord-rejected", submitted=later),
        pending("ord-pending", parameter_2=Decimal("2"), submitted=later),
        pending("ord-accepted", submitted=later),
        pending("ord-new-2", submitted=later),
    ]
    with pytest.raises(OrdersAlreadyProcessed) as refused:
        subject.store.put_orders(batch, now=later)

    # Then the error names exactly the processed orders, and nothing of the batch was stored
    assert refused.value.record_ids == ["ord-accepted", "ord-rejected"]
    assert refused.value.details() == {"record_ids": ["ord-accepted", "ord-rejected"]}
    assert subject.stored_ids() == {"ord-pending", "ord-accepted", "ord-rejected"}
    assert subject.store.get_order(key("ord-pending")) == old_pending
    assert subject.store.get_order(key("ord-accepted")) == accepted
    assert subject.store.get_order(key("ord-rejected")) == rejected


@pytest.mark.parametrize(
    ("expires_in", "replaceable"),
    [(-3600, True), (0, True), (1, False)],
    ids=["expired-an-hour-ago", "expires-exactly-now", "expires-in-one-second"],
)
def test_a_processed_order_can_be_replaced_once_expired(
    subject: StoreUnderTest, expires_in: int, replaceable: bool
) -> None:
    # Given a processed order whose expiry is around now (DynamoDB's TTL may not have deleted it yet)
    old = processed("ord-1", expires_at=NOW + expires_in)
    subject.store.put_orders([old], now=NOW - ORDER_TTL_SECONDS)

    # When the record_id is submitted again now
    fresh = pending("ord-1", parameter_1="lot-B", submitted=NOW)
    if replaceable:
        subject.store.put_orders([fresh], now=NOW)
        # Then the expired order is gone and the new one is live (expires_at <= now means expired)
        assert subject.store.get_order(key("ord-1")) == fresh
    else:
        with pytest.raises(OrdersAlreadyProcessed) as refused:
            subject.store.put_orders([fresh], now=NOW)
        # Then a processed order that is still live, even for one second, is kept
        assert refused.value.record_ids == ["ord-1"]
        assert subject.store.get_order(key("ord-1")) == old


def test_a_hundred_orders_are_stored_in_one_put(subject: StoreUnderTest) -> None:
    # Given the largest batch a request may carry
    batch = [pending(f"ord-{i:03}", parameter_2=Decimal(i) / 8) for i in range(100)]

    # When it is stored
    subject.store.put_orders(batch, now=NOW)

    # Then every order is there, as sent
    assert subject.stored_ids() == {o.record_id for o in batch}
    assert subject.store.get_order(key("ord-099")) == batch[99]
    assert subject.store.get_order(key("ord-000")) == batch[0]


def test_an_empty_put_changes_nothing(subject: StoreUnderTest) -> None:
    subject.store.put_orders([pending("ord-1")], now=NOW)

    subject.store.put_orders([], now=NOW)

    assert subject.stored_ids() == {"ord-1"}
    assert subject.store.get_order(key("ord-1")) == pending("ord-1")


# --- DynamoDB only: one transaction, retries under injected faults ------------------------------


def _scan_ids(faulty: FaultyClient) -> set[str]:
    return {item["record_id"]["S"] for item in faulty.real.scan(TableName=TABLE)["Items"]}


def test_dynamodb_stores_a_hundred_orders_in_exactly_one_transaction(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    batch = [pending(f"ord-{i:03}") for i in range(100)]

    dynamo.put_orders(batch, now=NOW)

    assert faulty.calls["transact_write_items"] == 1
    assert len(_scan_ids(faulty)) == 100


def test_dynamodb_empty_put_makes_no_call(dynamo: DynamoDbOrderStore, faulty: FaultyClient) -> None:
    dynamo.put_orders([], now=NOW)

    assert faulty.calls["transact_write_items"] == 0


def test_dynamodb_retries_throttling_then_stores(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, sleeps: list[float]
) -> None:
    # Given DynamoDB throttles the first two attempts
    faulty.fail("transact_write_items", error_code="ThrottlingException", times=2)

    # When orders are stored
    dynamo.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)

    # Then the third attempt stored them, after one pause per failed attempt
    assert faulty.calls["transact_write_items"] == 3
    assert _scan_ids(faulty) == {"ord-1", "ord-2"}
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "error_code",
    ["ProvisionedThroughputExceededException", "RequestLimitExceeded", "InternalServerError"],
)
def test_dynamodb_retries_other_transient_errors(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, error_code: str
) -> None:
    faulty.fail("transact_write_items", error_code=error_code)

    dynamo.put_orders([pending("ord-1")], now=NOW)

    assert faulty.calls["transact_write_items"] == 2
    assert dynamo.get_order(key("ord-1")) == pending("ord-1")


def test_dynamodb_retries_a_transaction_conflict_then_stores(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given the first attempt is cancelled because another transaction held the first item
    faulty.fail(
        "transact_write_items",
        error_code="TransactionCanceledException",
        cancellation_reasons=["TransactionConflict", "None"],
    )

    # When orders are stored
    dynamo.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)

    # Then the retry stored them both
    assert faulty.calls["transact_write_items"] == 2
    assert _scan_ids(faulty) == {"ord-1", "ord-2"}


def test_dynamodb_reads_processed_orders_from_injected_cancellation_reasons(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given the transaction is cancelled: a conflict on the first item, a failed condition on the second
    faulty.fail(
        "transact_write_items",
        error_code="TransactionCanceledException",
        cancellation_reasons=["TransactionConflict", "ConditionalCheckFailed", "None"],
    )

    # When orders are stored
    with pytest.raises(OrdersAlreadyProcessed) as refused:
        dynamo.put_orders([pending("ord-1"), pending("ord-2"), pending("ord-3")], now=NOW)

    # Then the failed condition wins over the retryable conflict: not retried, the second order named
    assert refused.value.record_ids == ["ord-2"]
    assert faulty.calls["transact_write_items"] == 1


def test_dynamodb_persistent_throttling_gives_storage_unavailable(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, sleeps: list[float]
) -> None:
    # Given DynamoDB throttles every attempt
    faulty.fail("transact_write_items", error_code="ThrottlingException", times=10)

    # When orders are stored
    with pytest.raises(StorageUnavailable):
        dynamo.put_orders([pending("ord-1")], now=NOW)

    # Then the store gave up after exactly max_attempts, with no pause after the last, storing nothing
    assert faulty.calls["transact_write_items"] == MAX_ATTEMPTS
    assert len(sleeps) == MAX_ATTEMPTS - 1
    assert _scan_ids(faulty) == set()


def test_dynamodb_does_not_retry_a_validation_error(dynamo: DynamoDbOrderStore, faulty: FaultyClient) -> None:
    faulty.fail("transact_write_items", error_code="ValidationException")

    with pytest.raises(ClientError) as failed:
        dynamo.put_orders([pending("ord-1")], now=NOW)

    assert failed.value.response["Error"]["Code"] == "ValidationException"
    assert faulty.calls["transact_write_items"] == 1
    assert _scan_ids(faulty) == set()


def test_dynamodb_does_not_retry_a_cancellation_for_invalid_items(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    faulty.fail(
        "transact_write_items",
        error_code="TransactionCanceledException",
        cancellation_reasons=["None", "ValidationError"],
    )

    with pytest.raises(ClientError) as failed:
        dynamo.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)

    assert failed.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert faulty.calls["transact_write_items"] == 1


def test_dynamodb_retries_after_a_connection_error(dynamo: DynamoDbOrderStore, faulty: FaultyClient) -> None:
    faulty.fail("transact_write_items", exception=EndpointConnectionError(endpoint_url="http://x"))

    dynamo.put_orders([pending("ord-1")], now=NOW)

    assert faulty.calls["transact_write_items"] == 2
    assert dynamo.get_order(key("ord-1")) == pending("ord-1")


def test_dynamodb_backoff_pauses_stay_within_their_exponential_bounds(faulty: FaultyClient) -> None:
    # Given a store with a real (jittered) backoff, whose pauses are recorded instead of slept
    pauses: list[float] = []
    store = DynamoDbOrderStore(
        dynamodb_client(faulty),
        TABLE,
        Backoff(max_attempts=6, base_delay=0.1, max_delay=0.5, sleep=pauses.append),
    )
    bounds = [min(0.5, 0.1 * 2**attempt) for attempt in range(5)]

    for _ in range(20):
        # When every attempt is throttled
        pauses.clear()
        faulty.fail("transact_write_items", error_code="ThrottlingException", times=6)
        with pytest.raises(StorageUnavailable):
            store.put_orders([pending("ord-1")], now=NOW)

        # Then each pause is within [0, min(max_delay, base * 2**attempt)]
        assert len(pauses) == 5
        assert all(0 <= pause <= bound for pause, bound in zip(pauses, bounds, strict=True))


def test_dynamodb_backoff_grows_exponentially_up_to_the_cap(faulty: FaultyClient) -> None:
    # Given a backoff without jitter (its waits are the top of the jittered ranges)
    pauses: list[float] = []
    store = DynamoDbOrderStore(
        dynamodb_client(faulty),
        TABLE,
        Backoff(max_attempts=6, base_delay=0.1, max_delay=0.5, sleep=pauses.append, jitter=False),
    )
    faulty.fail("transact_write_items", error_code="ThrottlingException", times=6)

    # When every attempt is throttled
    with pytest.raises(StorageUnavailable):
        store.put_orders([pending("ord-1")], now=NOW)

    # Then the pauses double each time and stop growing at max_delay
    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


@pytest.mark.parametrize(
    "fault",
    [
        {"error_code": "ThrottlingException"},
        {"error_code": "ProvisionedThroughputExceededException"},
        {"exception": EndpointConnectionError(endpoint_url="http://x")},
    ],
    ids=["throttled", "throughput-exceeded", "no-connection"],
)
def test_dynamodb_read_that_keeps_failing_gives_storage_unavailable(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, fault: dict[str, Any]
) -> None:
    # Given an order is stored, and reads fail (after botocore's own retries, here injected directly)
    dynamo.put_orders([pending("ord-1")], now=NOW)
    faulty.fail("get_item", **fault)

    # When it is read
    with pytest.raises(StorageUnavailable):
        dynamo.get_order(key("ord-1"))

    # Then once the fault has passed it reads fine
    assert dynamo.get_order(key("ord-1")) == pending("ord-1")


def test_dynamodb_read_with_a_non_transient_error_is_not_masked(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    faulty.fail("get_item", error_code="ResourceNotFoundException")

    with pytest.raises(ClientError) as failed:
        dynamo.get_order(key("ord-1"))

    assert failed.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_dynamodb_item_shape(dynamo: DynamoDbOrderStore, faulty: FaultyClient) -> None:
    # Given an order with an exact decimal
    order = pending("ord-1", parameter_2=Decimal("2.1000000000000000000001"))

    # When it is stored
    dynamo.put_orders([order], now=NOW)

    # Then the raw item has typed attributes: expires_at a Number, and purge_at (the table's TTL
    # attribute) the same time, since a pending undecided order does not outlive its expiry
    item = faulty.real.get_item(TableName=TABLE, Key={"order_key": {"S": key("ord-1")}}, ConsistentRead=True)[
        "Item"
    ]
    trader = trader_key(TRADER)
    listed_at = f"{iso_utc(NOW)}|{trader}/ord-1"
    shard = str(zlib.crc32(f"{trader}/ord-1".encode()) % 8)
    assert item == {
        # keyed by trader and record_id; the trader as the token named it, and as its key
        "order_key": {"S": f"{trader}/ord-1"},
        "record_id": {"S": "ord-1"},
        "trader": {"S": TRADER},
        "trader_key": {"S": trader},
        # where it stands in the listings (newest first), by trader and over all traders' shards
        "listed_at": {"S": listed_at},
        "list_shard": {"S": shard},
        "parameter_1": {"S": "lot-A"},
        "parameter_2": {"N": "2.1000000000000000000001"},
        "status": {"S": "pending"},
        "submitted_at": {"S": iso_utc(NOW)},
        "expires_at": {"N": str(NOW + ORDER_TTL_SECONDS)},
        "purge_at": {"N": str(NOW + ORDER_TTL_SECONDS)},
        # A pending order is in the sparse pending-orders index, in one of its 8 shards
        "pending_shard": {"S": shard},
    }
    ttl = faulty.real.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "purge_at"


def test_dynamodb_processed_item_keeps_its_outcome_as_a_map(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    dynamo.put_orders([processed("ord-1", status=OrderStatus.REJECTED)], now=NOW)

    item = faulty.real.get_item(TableName=TABLE, Key={"order_key": {"S": key("ord-1")}})["Item"]
    assert item["status"] == {"S": "rejected"}
    assert item["outcome"] == {
        "M": {"cleared": {"BOOL": False}, "price": {"N": "41.25"}, "run": {"S": "run-1"}}
    }


# --- SQLite only: durability and sharing one file ----------------------------------------------


def test_sqlite_orders_survive_a_restart(sqlite_path: Path) -> None:
    # Given orders stored by a store that is then closed (the local stack stops)
    first = SqliteOrderStore(sqlite_path)
    batch = [pending("ord-1", parameter_2=Decimal("2.1000000000000000000001")), processed("ord-2")]
    first.put_orders(batch, now=NOW)
    first.close()

    # When a new store opens the same file (the local stack starts again)
    second = SqliteOrderStore(sqlite_path)
    try:
        # Then the orders are there, and the processed one is still protected
        assert [second.get_order(key("ord-1")), second.get_order(key("ord-2"))] == batch
        with pytest.raises(OrdersAlreadyProcessed):
            second.put_orders([pending("ord-2")], now=NOW)
    finally:
        second.close()


def test_sqlite_file_uses_write_ahead_logging(sqlite_store: StoreUnderTest, sqlite_path: Path) -> None:
    sqlite_store.store.put_orders([pending("ord-1")], now=NOW)

    with sqlite3.connect(sqlite_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_two_stores_on_one_file_see_each_others_writes(sqlite_path: Path) -> None:
    # Given two stores on one file, like the local stack and the run-pipeline process
    api = SqliteOrderStore(sqlite_path)
    pipeline = SqliteOrderStore(sqlite_path)
    try:
        # When one stores an order, the other reads it
        api.put_orders([pending("ord-1")], now=NOW)
        assert pipeline.get_order(key("ord-1")) == pending("ord-1")

        # And when the other marks it processed, the first refuses to replace it
        pipeline.put_orders([processed("ord-2")], now=NOW)
        assert api.get_order(key("ord-2")) == processed("ord-2")
        with pytest.raises(OrdersAlreadyProcessed):
            api.put_orders([pending("ord-2")], now=NOW)
    finally:
        api.close()
        pipeline.close()


def test_sqlite_purge_deletes_only_expired_orders(sqlite_store: StoreUnderTest) -> None:
    # Given orders that expired an hour ago, expire exactly now, and expire in a second
    store: SqliteOrderStore = sqlite_store.store
    store.put_orders([pending("gone-1", submitted=NOW - ORDER_TTL_SECONDS - 3600)], now=NOW)
    store.put_orders([processed("gone-2", expires_at=NOW)], now=NOW - 1)
    store.put_orders([pending("kept", submitted=NOW + 1 - ORDER_TTL_SECONDS)], now=NOW)

    # When expired orders are purged
    purged = store.purge_expired(NOW)

    # Then the two expired ones are deleted and counted; the live one stays
    assert purged == 2
    assert sqlite_store.stored_ids() == {"kept"}
    assert store.purge_expired(NOW) == 0


def test_sqlite_concurrent_puts_from_eight_threads_all_land(sqlite_store: StoreUnderTest) -> None:
    # Given eight request threads sharing one store, each with its own batch
    store: SqliteOrderStore = sqlite_store.store
    batches = [[pending(f"t{t}-ord-{i:02}") for i in range(25)] for t in range(8)]
    start = threading.Barrier(len(batches))

    def submit(batch: list[Order]) -> None:
        start.wait()
        store.put_orders(batch, now=NOW)

    # When they all store at once
    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        for result in [pool.submit(submit, batch) for batch in batches]:
            result.result()  # re-raises any failure

    # Then every order of every batch is there
    expected = {o.record_id for batch in batches for o in batch}
    assert sqlite_store.stored_ids() == expected
    assert store.get_order(key("t7-ord-24")) == batches[7][24]


def test_dynamodb_write_retries_stop_at_the_time_budget(faulty: FaultyClient) -> None:
    # Given a store whose writes keep being throttled, with a 1-second retry budget on a fake clock
    now = [0.0]
    faulty.fail("transact_write_items", error_code="ThrottlingException", times=100)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    # (no jitter, so the waits are known: 0.4 s each)
    backoff = Backoff(
        max_attempts=100,
        base_delay=0.4,
        max_delay=0.4,
        sleep=sleep,
        jitter=False,
        budget_seconds=1.0,
        clock=lambda: now[0],
    )
    store = DynamoDbOrderStore(faulty, TABLE, backoff)  # type: ignore[arg-type]

    # When a write is attempted
    with pytest.raises(StorageUnavailable):
        store.put_orders([pending("budget-1")], now=NOW)

    # Then it gave up within the budget, long before max_attempts: a third wait would overrun it
    assert now[0] == pytest.approx(0.8)
    assert faulty.calls["transact_write_items"] == 3
