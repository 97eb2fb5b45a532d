"""Ports: what the domain needs from the outside world. Adapters live in ``energy_auction.adapters``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from energy_auction.orders import Order, OrderStatus

if TYPE_CHECKING:
    from energy_auction.market import OrderResult
    from energy_auction.notifications import Notice


class AuctionMarket(Protocol):
    """The market that decides the auction outcome of orders (simulated by default)."""

    def is_ready(self, run_id: str, attempt: int) -> bool:
        """Whether the auction results can be collected now (the challenge's {"results": false})."""
        ...

    def decide(self, orders: Sequence[Order], run_id: str, now: float) -> list[OrderResult]:
        """The outcome of each order: accepted or rejected, with its cleared power."""
        ...


class ResultStore(Protocol):
    """Where accepted order results are kept (S3 results bucket; a folder locally)."""

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        """Write ``document`` as JSON at ``key`` (a retry rewrites the same bytes); returns its location."""
        ...


class WorkStore(Protocol):
    """Transient run data: the order results a run's Distributed Map reads (S3 on AWS and locally)."""

    def write_items(self, run_id: str, items: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Write the items as one JSON array; returns ``{"bucket": ..., "key": ...}`` for the ItemReader."""
        ...


class Notifier(Protocol):
    """Delivers a notice to people (Slack, a log, a file)."""

    def notify(self, notice: Notice) -> None:
        """Deliver ``notice``; raises when it could not be delivered (so the caller can retry)."""
        ...


class OrderStore(Protocol):
    """Durable storage of orders, keyed by record_id."""

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        """Store all of ``orders`` or none of them, durably, before returning.

        A stored order is replaced when it is expired (``expires_at <= now``), or pending and not
        claimed by a pipeline run (no claim, or ``claim_expires_at <= now``). A replaced order has no
        claim and no outcome.

        Raises
        ------
        OrdersAlreadyProcessed
            Some record_ids belong to live orders the auction has processed or a run has claimed;
            nothing was stored.
        StorageUnavailable
            Storage kept failing after bounded retries; nothing was stored.
        """
        ...

    def get_order(self, record_id: str) -> Order | None:
        """The stored order, expired or not (callers filter on ``expires_at``), or None."""
        ...

    def pending_orders(self, now: int, run_id: str | None = None) -> list[Order]:
        """Live (``expires_at > now``) pending orders that no run holds (no claim, or a lapsed one),
        plus those ``run_id`` itself holds (so a retried FetchResults gets its orders back).

        On DynamoDB this is a query on the pending-orders index, never a scan.
        """
        ...

    def claim_orders(
        self, record_ids: Sequence[str], run_id: str, now: int, lease_seconds: int
    ) -> list[Order]:
        """Claim these orders for ``run_id`` until ``now + lease_seconds``; returns the claimed orders.

        An order is claimed when it is live and pending and is unclaimed, its claim has lapsed, or
        ``run_id`` already holds it (so a retried FetchResults claims the same orders again). Orders
        that fail these conditions (another run holds them, they were processed, replaced or
        expired) are left out silently. Safe against concurrent runs: each order goes to one run.
        """
        ...

    def complete_order(
        self, record_id: str, run_id: str, status: OrderStatus, outcome: dict[str, Any]
    ) -> None:
        """Record the auction outcome (status accepted or rejected) of an order ``run_id`` holds.

        Clears the claim, and takes the order out of ``pending_orders``. Idempotent: completing an
        order that this same run already completed with this status is a no-op.

        Raises
        ------
        ClaimLost
            ``run_id`` does not hold the order (and did not already complete it).
        StorageUnavailable
            Storage kept failing after bounded retries.
        """
        ...

    def release_order(self, record_id: str, run_id: str) -> None:
        """Give back the claim ``run_id`` holds on a still-pending order; a no-op otherwise."""
        ...
