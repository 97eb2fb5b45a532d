"""Ports: what the domain needs from the outside world. Adapters live in ``energy_auction.adapters``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from energy_auction.orders import Order


class OrderStore(Protocol):
    """Durable storage of orders, keyed by record_id."""

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        """Store all of ``orders`` or none of them, durably, before returning.

        A stored order is replaced when it is pending or expired (``expires_at <= now``).

        Raises
        ------
        OrdersAlreadyProcessed
            Some record_ids belong to live orders the auction has processed; nothing was stored.
        StorageUnavailable
            Storage kept failing after bounded retries; nothing was stored.
        """
        ...

    def get_order(self, record_id: str) -> Order | None:
        """The stored order, expired or not (callers filter on ``expires_at``), or None."""
        ...
