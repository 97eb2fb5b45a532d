"""Test data built the way the service builds it (orders through the intake rules), and the store's
pending orders as a run finds them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from energy_auction import codec
from energy_auction.orders import Limits, Order, new_orders, order_key, parse_orders
from energy_auction.ports import OrderStore

TRADER = "trader-1"
"""The trader test orders belong to unless a test says otherwise (the subject of tests.events' tokens)."""
NEW_RUN = "run-that-holds-nothing"
"""A run that claimed no order: what it may claim is what no live claim holds."""


def key(record_id: str, trader: str = TRADER) -> str:
    """The store's key of ``trader``'s order ``record_id``."""
    return order_key(trader, record_id)


def keys(record_ids: Sequence[str], trader: str = TRADER) -> list[str]:
    return [key(r, trader) for r in record_ids]


def store_orders(
    container: Any,
    count: int,
    *,
    prefix: str = "o",
    now: float | None = None,
    trader: str = TRADER,
    volume: Callable[[int], Decimal] = lambda i: Decimal(i) + Decimal("0.25"),
) -> list[Order]:
    """Store ``count`` pending orders of ``trader``, ``<prefix>0``, ``<prefix>1`` ... in the
    container's order store, submitted ``now`` (default: the container's clock), 100 a request,
    through the intake rules; ``parameter_1`` is "lot" and ``parameter_2`` is ``volume(i)``, kept
    exact."""
    at = container.clock() if now is None else now
    stored: list[Order] = []
    for start in range(0, count, 100):
        body = codec.dumps(
            [
                {"record_id": f"{prefix}{i}", "parameter_1": "lot", "parameter_2": volume(i)}
                for i in range(start, min(count, start + 100))
            ]
        )
        orders = new_orders(parse_orders(body, Limits()), at, trader)
        container.order_store.put_orders(orders, int(at))
        stored += orders
    return stored


def record_ids(orders: Sequence[Order]) -> list[str]:
    return [o.record_id for o in orders]


def pending_orders(store: OrderStore, now: int, run_id: str = NEW_RUN) -> list[Order]:
    """The orders ``run_id`` (by default a run that holds none) may claim at ``now``, oldest expiry
    first: the keys FetchResults stages (``pending_keys``), read and kept as a batch reads and
    keeps them (``get_orders``, ``Order.is_claimable``: DynamoDB stages more than the claimable
    orders)."""
    return [o for o in store.get_orders(list(store.pending_keys(now, run_id))) if o.is_claimable(run_id, now)]
