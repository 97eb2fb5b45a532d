"""Fixtures of the OrderStore tests: each adapter on fresh storage, and ``subject`` to run a test on both."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from energy_auction.adapters.aws import DynamoDbOrderStore
from energy_auction.adapters.local import SqliteOrderStore
from energy_auction.backoff import Backoff
from tests.adapters.stores import (
    MAX_ATTEMPTS,
    TABLE,
    StoreUnderTest,
    create_orders_table,
    fast_moto_transactions,
)
from tests.fakes import FaultyClient, dynamodb_client


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    """A moto DynamoDB with the orders table as production creates it (see ``create_orders_table``)."""
    with mock_aws(), fast_moto_transactions():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_orders_table(client, TABLE)
        yield client


@pytest.fixture
def faulty(dynamodb: Any) -> FaultyClient:
    # Serialized: DynamoDB applies each request atomically, moto does not (threads could interleave
    # inside one of its transactions), and the concurrency tests need DynamoDB's behaviour.
    return FaultyClient(dynamodb, serialize_calls=True)


@pytest.fixture
def sleeps() -> list[float]:
    """The backoff pauses the DynamoDB store asked for (recorded, never slept)."""
    return []


@pytest.fixture
def dynamodb_store(faulty: FaultyClient, sleeps: list[float]) -> StoreUnderTest:
    store = DynamoDbOrderStore(
        dynamodb_client(faulty), TABLE, Backoff(max_attempts=MAX_ATTEMPTS, base_delay=0, sleep=sleeps.append)
    )

    def stored_ids() -> set[str]:
        items = faulty.real.scan(TableName=TABLE, ConsistentRead=True)["Items"]
        # A run's record (``begin_run``) shares the table, and is no order: it has no record_id.
        return {item["record_id"]["S"] for item in items if "record_id" in item}

    return StoreUnderTest("dynamodb", store, stored_ids)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "orders.sqlite3"


@pytest.fixture
def sqlite_store(sqlite_path: Path) -> Iterator[StoreUnderTest]:
    store = SqliteOrderStore(sqlite_path)

    def stored_ids() -> set[str]:
        with sqlite3.connect(sqlite_path) as raw:
            return {row[0] for row in raw.execute("SELECT record_id FROM orders")}

    yield StoreUnderTest("sqlite", store, stored_ids)
    store.close()


@pytest.fixture(params=["sqlite", "dynamodb"])
def subject(request: pytest.FixtureRequest) -> StoreUnderTest:
    store: StoreUnderTest = request.getfixturevalue(f"{request.param}_store")
    return store


@pytest.fixture
def dynamo(dynamodb_store: StoreUnderTest) -> DynamoDbOrderStore:
    store: DynamoDbOrderStore = dynamodb_store.store
    return store
