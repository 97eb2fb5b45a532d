"""Ports: what the domain needs from the outside world. Adapters live in ``energy_auction.adapters``.

This module imports only the model modules (orders, market, notifications); none of them imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from energy_auction.market import OrderResult
from energy_auction.notifications import Notice
from energy_auction.orders import (
    BatchTally,
    Decision,
    NoticeClaim,
    NoticeHold,
    Order,
    OrderPage,
    OrderQuery,
    OrderStatus,
    RunRecord,
)


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
    """Transient run data: the batches of order keys a run's Distributed Map reads (S3 on AWS and
    locally)."""

    def write_batches(self, run_id: str, batches: Iterable[dict[str, Any]]) -> dict[str, str]:
        """Write the batches, as they come, as one JSON array (streamed: memory does not grow with
        their number); returns ``{"bucket": ..., "key": ...}`` for the ItemReader."""
        ...


class NoticePublisher(Protocol):
    """Publishes a message to the notification topic (SNS on AWS, the local topic locally)."""

    def publish(self, subject: str, message: str, kind: str) -> None:
        """Publish durably: when this returns, the topic will deliver the message to the notifier."""
        ...


class SecretSource(Protocol):
    """Where deployed secrets are read (Secrets Manager on AWS)."""

    def secret(self, secret_id: str, max_age_seconds: int) -> str:
        """The secret's string value, cached for ``max_age_seconds``."""
        ...


class Notifier(Protocol):
    """Delivers a notice to people (Slack, a log, a file)."""

    def notify(self, notice: Notice) -> None:
        """Deliver ``notice``; raises when it could not be delivered (so the caller can retry)."""
        ...


class OrderStore(Protocol):
    """Durable storage of orders, keyed by ``Order.key`` (the trader's key and the record_id)."""

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        """Store all of ``orders`` or none of them, durably, before returning.

        A stored order is replaced when ``Order.is_replaceable``: it is expired (``expires_at <=
        now``) and not decided-but-unsettled, or it is pending, undecided and not claimed by a
        pipeline run (no claim, or ``claim_expires_at <= now``). A replaced order is a new order: no
        claim, no decision, no outcome.

        Raises
        ------
        OrdersAlreadyProcessed
            Some record_ids belong to orders the auction has processed, decided or a run has claimed;
            nothing was stored.
        StorageUnavailable
            Storage kept failing after bounded retries; nothing was stored.
        """
        ...

    def get_order(self, key: str) -> Order | None:
        """The stored order with this ``Order.key``, expired or not (callers filter on
        ``expires_at``), or None."""
        ...

    def list_orders(self, query: OrderQuery) -> OrderPage:
        """The orders ``query`` wants (``OrderQuery.wants``), newest first (``Order.listed_at``
        descending), at most ``query.limit``; ``next_before`` is where the next page starts, None
        when nothing is left. A page may hold fewer than ``limit`` orders and still go on: it
        looks at no more than ``LIST_EXAMINED_MAX`` stored orders.

        On DynamoDB this is a query on a listing index (the trader's, or all traders' over its
        shards), never a scan, and expired orders are not read at all.
        """
        ...

    def cancel_order(self, key: str, now: int) -> Order:
        """Cancel the pending order with this key (``Order.is_cancellable``): status ``cancelled``,
        ``cancelled_at`` now; it leaves the pending orders at once. Cancelling a cancelled order
        returns it unchanged. Decided by one conditional write, so a run's claim and a cancel never
        both win.

        Raises
        ------
        OrderNotFound
            No live order with this key.
        OrderLocked
            A run holds the order, or the market decided it and a run will settle it.
        OrdersAlreadyProcessed
            The order is accepted or rejected.
        StorageUnavailable
            Storage kept failing after bounded retries; nothing changed.
        """
        ...

    def pending_keys(self, now: int, run_id: str) -> Iterator[str]:
        """The keys of the pending orders a run may stage, oldest expiry first, read page by page
        as they are taken: every order a run may claim (``Order.is_claimable``: pending orders that
        no run holds, no claim or a lapsed one, or that ``run_id`` itself holds, live ones and, even
        past their expiry, decided ones), and on some adapters more.

        On DynamoDB this is a query on the keys-only pending-orders index, never a scan, and
        filters nothing: it also yields live orders another run holds, and expired undecided ones
        until ``retire_orders`` takes them out. SQLite yields the claimable orders only. A run
        claims only what ``claim_orders`` grants, so an extra key costs a read, never an order.
        """
        ...

    def retire_orders(self, keys: Sequence[str], now: int) -> None:
        """Stop ``pending_keys`` yielding the orders with these keys that are pending, undecided and
        expired at ``now`` (never claimable again); the others are left as they are. Nothing
        about the order changes otherwise, and a new submission of its record_id is pending
        again. On DynamoDB: out of the pending-orders index; on SQLite, whose ``pending_keys``
        never yields them, nothing to do.
        """
        ...

    def get_orders(self, keys: Sequence[str], *, consistent: bool = True) -> list[Order]:
        """The stored orders with these keys, in the order of ``keys``; keys of no order are left
        out. Strongly consistent (the latest writes), unless not ``consistent``: then an adapter
        may answer from an eventually consistent read, which can miss writes of the last moments
        (on DynamoDB: half the read units). Only for a read that decides nothing itself."""
        ...

    def claim_orders(
        self,
        keys: Sequence[str],
        run_id: str,
        now: int,
        lease_seconds: int,
        decisions: Mapping[str, Decision] | None = None,
    ) -> list[Order]:
        """Claim the orders with these keys for ``run_id`` until ``now + lease_seconds``; returns
        the claimed orders.

        An order is claimed when it is pending, live or decided (``Order.is_claimable``), and is
        unclaimed, its claim has lapsed, or ``run_id`` already holds it (so a retried claim of a
        batch claims the same orders again). Orders that fail these conditions (another run holds them,
        they were processed, replaced or expired) are left out silently. Safe against concurrent
        runs: each order goes to one run. Returns each claimed order as the claim left it
        (its decision the stored one), in the order of ``keys``. When it raises
        ``StorageUnavailable`` some orders may be claimed already; the same run claiming again gets
        them back.

        ``decisions`` (by key) holds the market's answer for orders that had none: it is stored with the
        claim, in the same write, and only on the submission it was made for
        (``Decision.submitted_at``); an order decided before keeps its first decision. An order
        with a decision in ``decisions`` that was replaced since is not claimed.
        """
        ...

    def complete_order(
        self,
        key: str,
        run_id: str,
        status: OrderStatus,
        outcome: dict[str, Any],
        *,
        notice_due_at: int | None = None,
    ) -> None:
        """Record the auction outcome (status accepted or rejected) of an order ``run_id`` holds.

        ``outcome`` is stored as given (it names ``run_id``). Clears the claim, and takes the order
        out of ``pending_orders``. A rejected order is completed with ``notice_due_at``: in the same
        atomic write its rejection notice becomes owed (an outbox), until ``finish_notices`` records
        it delivered. Idempotent: completing an order that this same run already completed with
        this status is a no-op.

        Raises
        ------
        ClaimLost
            ``run_id`` does not hold the order (and did not already complete it).
        StorageUnavailable
            Storage kept failing after bounded retries.
        """
        ...

    def release_order(self, key: str, run_id: str) -> None:
        """Give back the claim ``run_id`` holds on a still-pending order; a no-op otherwise.

        The order keeps its decision: the next run settles it the same way."""
        ...

    def claim_notices(
        self, holds: Sequence[NoticeHold], now: int, lease_seconds: int
    ) -> list[NoticeClaim | None]:
        """Take the owed rejection notice of each hold's order for its delivery (a token of its
        own), until ``now + lease_seconds``: one answer per hold, in order, saying what the
        notifier should do (see ``NoticeClaim``). Taking a notice again with the same token (a
        retried call whose first attempt committed) answers CLAIMED. None for a notice the store
        failed on, or did not try once it was failing as a whole: it may be taken, and
        ``finish_notices`` gives it back. May raise instead when the store fails as a whole (a
        store that works in one transaction); some of the notices may be taken then."""
        ...

    def finish_notices(self, holds: Sequence[NoticeHold], *, delivered: bool) -> None:
        """End the deliveries of ``holds`` (taken with ``claim_notices``): delivered, the notices
        are no longer owed; not delivered, they are given back for the next attempt. A hold that
        another delivery has replaced (this one outlived its lease) changes nothing. One hold's
        failure does not stop the others (unless the store is failing as a whole); raises
        ``StorageUnavailable`` afterwards when some could not be finished."""
        ...

    def overdue_notices(self, now: int, limit: int) -> list[Order]:
        """Rejected orders whose notice is owed, due (``notice_due_at <= now``) and not being
        delivered: at most ``limit``, the longest overdue first. Never a scan on DynamoDB."""
        ...

    def postpone_notice(self, key: str, run_id: str, due_at: int) -> None:
        """After an owed notice was published again: wait until ``due_at`` before the next time,
        and count the redelivery. A no-op when the notice is no longer owed."""
        ...

    def begin_run(self, run_id: str, staged: int, left: int, now: int) -> None:
        """Record that ``run_id`` took ``staged`` orders and left ``left`` for the next run, with
        nothing settled yet; kept 14 days."""
        ...

    def record_batch(self, run_id: str, batch: int, tally: BatchTally) -> None:
        """Add a settled batch's counts to its run's record, once: recording batch ``batch`` of
        ``run_id`` again (a retried task) changes nothing."""
        ...

    def run_record(self, run_id: str) -> RunRecord:
        """What ``run_id`` took and settled so far (all zeros for an unknown run)."""
        ...


class PostSlots(Protocol):
    """One post at a time per channel, across every notifier (on AWS, several run at once)."""

    def take_post_slot(self, channel: str, now: float, interval: float) -> float:
        """Take ``channel``'s post slot at ``now`` (epoch seconds) if it is free, holding it for
        ``interval`` seconds: 0.0 when taken (post now), else the seconds until it is free."""
        ...
