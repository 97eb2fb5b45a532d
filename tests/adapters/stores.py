"""Shared by the OrderStore tests (and reusable by workflow tests): orders to store, the moto orders
table as production creates it, and a view of what an adapter really wrote.

The pytest fixtures built from these live in ``tests/adapters/conftest.py``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from unittest import mock

from moto.dynamodb import models as moto_dynamodb
from moto.dynamodb.models.table import Table

from energy_auction.adapters.aws import (
    EXPIRES_ATTRIBUTE,
    LIST_SHARD_ATTRIBUTE,
    LISTED_AT_ATTRIBUTE,
    NOTICE_DUE_ATTRIBUTE,
    NOTICE_SHARD_ATTRIBUTE,
    NOTICES_INDEX,
    ORDERS_KEY,
    PENDING_INDEX,
    PENDING_SHARD_ATTRIBUTE,
    TIME_INDEX,
    TRADER_INDEX,
    TRADER_KEY_ATTRIBUTE,
    TTL_ATTRIBUTE,
)
from energy_auction.orders import ORDER_TTL_SECONDS, Decision, Order, OrderStatus, iso_utc
from tests.builders import TRADER

NOW = 1_800_000_000
TABLE = "energy-auction-orders"
MAX_ATTEMPTS = 4


def create_orders_table(client: Any, name: str) -> None:
    """Create the orders table as the CDK stack does: on demand, key order_key, TTL on purge_at, the
    sparse pending-orders index (partition pending_shard (S), sort expires_at (N), keys only),
    the sparse owed-notices index (partition notice_shard (S), sort notice_due_at (N), keys only)
    and the two listing indexes (partition trader_key or list_shard (S), sort listed_at (S), keys
    only).
    """
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": ORDERS_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": ORDERS_KEY, "AttributeType": "S"},
            {"AttributeName": PENDING_SHARD_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": EXPIRES_ATTRIBUTE, "AttributeType": "N"},
            {"AttributeName": NOTICE_SHARD_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": NOTICE_DUE_ATTRIBUTE, "AttributeType": "N"},
            {"AttributeName": TRADER_KEY_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": LIST_SHARD_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": LISTED_AT_ATTRIBUTE, "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": PENDING_INDEX,
                "KeySchema": [
                    {"AttributeName": PENDING_SHARD_ATTRIBUTE, "KeyType": "HASH"},
                    {"AttributeName": EXPIRES_ATTRIBUTE, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
            {
                "IndexName": NOTICES_INDEX,
                "KeySchema": [
                    {"AttributeName": NOTICE_SHARD_ATTRIBUTE, "KeyType": "HASH"},
                    {"AttributeName": NOTICE_DUE_ATTRIBUTE, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
            *(
                {
                    "IndexName": index,
                    "KeySchema": [
                        {"AttributeName": partition, "KeyType": "HASH"},
                        {"AttributeName": LISTED_AT_ATTRIBUTE, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
                for index, partition in (
                    (TRADER_INDEX, TRADER_KEY_ATTRIBUTE),
                    (TIME_INDEX, LIST_SHARD_ATTRIBUTE),
                )
            ),
        ],
    )
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )


class _CopyEachTableOnce:
    """Stands in for the ``copy`` module in ``moto.dynamodb.models`` during TransactWriteItems calls.

    moto 5.2.5 snapshots a table (for rollback) once per action of a transaction, inside its loop
    over the actions, so a 100-action transaction on a 1,000-item table copies 100,000 items and
    takes seconds. The table cannot change while the loop snapshots it, so the first copy serves.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        copies: dict[int, Any] | None = getattr(self._local, "copies", None)
        if copies is None or not isinstance(value, Table):
            return copy.deepcopy(value, memo)
        if id(value) not in copies:
            copies[id(value)] = copy.deepcopy(value, memo)
        return copies[id(value)]

    def around(self, transact: Callable[..., Any]) -> Callable[..., Any]:
        def transact_write_items(backend: Any, transact_items: Any) -> Any:
            self._local.copies = {}
            try:
                return transact(backend, transact_items)
            finally:
                self._local.copies = None

        return transact_write_items


@contextmanager
def fast_moto_transactions() -> Iterator[None]:
    """Make moto's TransactWriteItems copy each table once per call instead of once per action.

    Only moto's speed changes: what a transaction writes, and its rollback, stay the same.
    """
    shim = _CopyEachTableOnce()
    backend = moto_dynamodb.DynamoDBBackend
    with (
        mock.patch.object(moto_dynamodb, "copy", shim),
        mock.patch.object(backend, "transact_write_items", shim.around(backend.transact_write_items)),
    ):
        yield


def pending(
    record_id: str,
    *,
    parameter_1: str = "lot-A",
    parameter_2: Decimal | int = Decimal("12.5"),
    submitted: int = NOW,
    trader: str = TRADER,
) -> Order:
    return Order(
        record_id=record_id,
        trader=trader,
        parameter_1=parameter_1,
        parameter_2=Decimal(parameter_2),
        submitted_at=iso_utc(submitted),
        expires_at=submitted + ORDER_TTL_SECONDS,
    )


def processed(
    record_id: str,
    *,
    status: OrderStatus = OrderStatus.ACCEPTED,
    expires_at: int = NOW + ORDER_TTL_SECONDS,
    trader: str = TRADER,
) -> Order:
    return Order(
        record_id=record_id,
        trader=trader,
        parameter_1="lot-A",
        parameter_2=Decimal("12.5"),
        status=status,
        submitted_at=iso_utc(expires_at - ORDER_TTL_SECONDS),
        expires_at=expires_at,
        outcome={"cleared": status is OrderStatus.ACCEPTED, "price": Decimal("41.25"), "run": "run-1"},
    )


@dataclass
class StoreUnderTest:
    """An adapter plus a raw look at its storage, so tests see what was really written."""

    kind: str
    store: Any
    stored_ids: Callable[[], set[str]]


def rejected(submitted: int) -> Decision:
    """The market's rejection of the submission made at ``submitted``."""
    return Decision(
        status="rejected",
        power=Decimal(0),
        auction_date=iso_utc(submitted)[:10],
        decided_at=iso_utc(submitted + 1),
        submitted_at=iso_utc(submitted),
        reason="insufficient transmission capacity",
    )


def accepted(submitted: int) -> Decision:
    """The market's acceptance of the submission made at ``submitted``."""
    return Decision(
        status="accepted",
        power=Decimal("12.5"),
        auction_date=iso_utc(submitted)[:10],
        decided_at=iso_utc(submitted + 1),
        submitted_at=iso_utc(submitted),
    )
