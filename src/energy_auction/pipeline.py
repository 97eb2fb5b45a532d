"""The auction pipeline's use cases, run by the state machine's tasks. No AWS here.

- :func:`fetch_results` (Lambda A) asks the market whether results are ready and, when they are,
  streams the keys of the pending orders, in batches, where the Distributed Map reads them; it
  claims nothing.
- :func:`claim_batch` (Lambda A, the first task of each batch) claims the batch's orders for this
  run, with the market's decision for each stored in the same write, and answers their results.
- :func:`process_order` (Lambda B) settles one order result: an accepted one is written to the
  results store and marked accepted; a rejected one is marked rejected, with its notice owed, and
  raises :class:`~energy_auction.errors.OrderRejected`, which the state machine turns into a notice.
- :func:`release_order` gives an order back when processing kept failing.
- :func:`tally_batch` records how a batch's orders ended, and :func:`summarise_run` answers the run
  summary notice.
- :func:`redeliver_notices` publishes again the rejection notices that are owed and overdue (their
  run died, timed out or could not publish); the notifier (``energy_auction.digest``) delivers each
  rejection once.

Exactly once per order: a run only processes orders one of its batches claimed (a conditional
write, so two overlapping runs never share an order, and a cancel and a claim never both win),
completion is conditional on the claim, and a retried task finds its own completed work and repeats
it idempotently (same object key, same bytes). The market is asked once per order: its decision is
stored with the first claim, and a run that takes over the order of a run that died settles it with
that decision, so the result object the dead run may have written always agrees with the order's
final status. A rejection and its owed notice are one write (an outbox); the notifier records the
delivery on the order, so every rejection is notified once, whichever run, retry or redelivery
brings it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from energy_auction import codec
from energy_auction.errors import ClaimLost, OrderRejected
from energy_auction.market import OrderResult
from energy_auction.notifications import REJECTION_SUBJECT, NoticeKind
from energy_auction.orders import BatchTally, Order, OrderStatus, order_key, settled_outcome

if TYPE_CHECKING:
    from energy_auction.ports import (
        AuctionMarket,
        NoticePublisher,
        OrderStore,
        ResultStore,
        WorkStore,
    )

MAX_REDELIVERY_WAIT_SECONDS = 6 * 3600
"""The longest wait between two redeliveries of one owed notice (each wait doubles until then)."""
REDELIVERIES_PER_RUN = 100
"""Owed notices one run publishes again at most (Slack takes about one message a second); the
next run takes the rest."""
BATCH_PAYLOAD_BYTES = 200 * 1024
"""The most JSON a batch's claim answers with: Step Functions passes at most 256 KB between
states, and the child's state around the results needs some of it."""
CLAIM_MARGIN_SECONDS = 10
"""ProcessOrder settles an order only while its run's claim has at least this long left (the
function's own timeout): a run whose claim is about to lapse leaves the order to the run that
will take it over, rather than race it."""


def fetch_results(
    run_id: str,
    attempt: int,
    *,
    store: OrderStore,
    market: AuctionMarket,
    work: WorkStore,
    now: float,
    batch_size: int,
    max_orders: int,
) -> dict[str, Any]:
    """Lambda A: ``{"results": false, ...}`` while not ready, else ``{"results": true, "count",
    "batches", "left", "items"}``.

    When the market is ready, the keys of up to ``max_orders`` claimable orders, oldest expiry
    first, are streamed page by page into the run's batches file (``items``: a JSON array of
    ``{"batch": n, "keys": [...]}`` with ``batch_size`` keys each), which the Distributed Map
    reads. Nothing is claimed here: each batch claims its own orders when it starts
    (:func:`claim_batch`), so a run that fails, times out or is stopped leaves every order it did
    not reach claimable at once. ``left`` counts the claimable orders beyond ``max_orders``, which
    wait for the next run.
    """
    answer: dict[str, Any] = {"run_id": run_id, "attempt": attempt}
    if not market.is_ready(run_id, attempt):
        return {"results": False, **answer}
    at = int(now)
    keys = store.pending_keys(at, run_id)
    first = next(keys, None)
    if first is None:
        store.begin_run(run_id, 0, 0, at)
        return {"results": True, **answer, "count": 0, "batches": 0, "left": 0}
    staged = 0

    def batches() -> Iterator[dict[str, Any]]:
        nonlocal staged
        taken = itertools.chain([first], itertools.islice(keys, max_orders - 1))
        for number in itertools.count():
            chunk = list(itertools.islice(taken, batch_size))
            if not chunk:
                return
            staged += len(chunk)
            yield {"batch": number, "keys": chunk}

    items = work.write_batches(run_id, batches())
    left = sum(1 for _ in keys)  # the rest of the same read: claimable, and not this run's
    store.begin_run(run_id, staged, left, at)
    return {
        "results": True,
        **answer,
        "count": staged,
        "batches": -(-staged // batch_size),
        "left": left,
        "items": items,
    }


def claim_batch(
    keys: Sequence[str],
    batch: int,
    run_id: str,
    *,
    store: OrderStore,
    market: AuctionMarket,
    now: float,
    lease_seconds: int,
    payload_bytes: int = BATCH_PAYLOAD_BYTES,
) -> dict[str, Any]:
    """Lambda A for one batch: claim its orders for ``run_id`` and answer their results.

    The orders are read (an eventually consistent batch read: a pre-filter); those without a
    decision are put to the market, and the claim, one conditional write per order, stores each
    decision in that write, on the submission it was made for, and answers the order as it left
    it. An order a dead run claimed keeps the answer it got then, and the results are the claimed
    orders' stored decisions. Orders another run
    holds, or that were cancelled, settled, replaced or expired since they were staged, are left
    out: the claim's conditions decide, so a cancel and a claim never both win. An order read
    pending, expired and undecided (never claimable again) is retired (``retire_orders``), so no
    run stages it again. Results beyond
    ``payload_bytes`` of JSON (Step Functions passes at most 256 KB between states; only subjects
    of extraordinary length come near) are not claimed and wait for the next run.
    """
    at = int(now)
    # A pre-filter only (the claim's conditions decide, and the claim answers the orders as it left
    # them), so eventually consistent: a stale order is at worst left for the next run, or asked of
    # the market again, and then the decision stored first is kept (if_not_exists).
    read = store.get_orders(keys, consistent=False)
    found = [o for o in read if o.is_claimable(run_id, at)]
    # Pending, expired and undecided: never claimable again. Out of the pending orders, so no run
    # stages it again (the conditional write decides; a stale read at worst asks for nothing).
    retired = [o.key for o in read if o.is_retirable(at)]
    if retired:
        store.retire_orders(retired, at)
    answers = {r.key: r for r in market.decide([o for o in found if o.decision is None], run_id, now)}
    fitting, size = [], 0
    for order in found:
        result = answers[order.key] if order.decision is None else OrderResult.of(order)
        size += len(codec.dumps(result.as_item())) + 1
        if size > payload_bytes:
            break
        fitting.append(order.key)
    # Every claim names the submission it read (a decided order's own decision, which the claim
    # keeps): an order replaced since the read, however stale it was, is not claimed.
    decisions = {o.key: answers[o.key].decision(o.submitted_at) for o in found if o.key in answers}
    decisions.update({o.key: o.decision for o in found if o.decision is not None})
    claimed = store.claim_orders(fitting, run_id, at, lease_seconds, decisions)
    return {"run_id": run_id, "batch": batch, "results": [OrderResult.of(o).as_item() for o in claimed]}


def tally_batch(
    outcomes: Sequence[Mapping[str, Any]], batch: int, run_id: str, *, store: OrderStore
) -> dict[str, Any]:
    """Record how a batch's orders ended (each ``{"status": "accepted" | "rejected" | "failed"}``)
    in the run's record, once per batch."""
    tally = BatchTally.of([str(o.get("status")) for o in outcomes])
    store.record_batch(run_id, batch, tally)
    return {
        "run_id": run_id,
        "batch": batch,
        "accepted": tally.accepted,
        "rejected": tally.rejected,
        "failed": tally.failed,
    }


def summarise_run(run_id: str, started_at: str, *, store: OrderStore, now: float) -> dict[str, Any]:
    """The run summary notice's message: what the run took, how its orders ended, how long it took."""
    record = store.run_record(run_id)
    started = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    return {
        "run_id": run_id,
        "staged": record.staged,
        "orders": record.settled.orders,
        "accepted": record.settled.accepted,
        "rejected": record.settled.rejected,
        "failed": record.settled.failed,
        "left": record.left,
        "started_at": started.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "duration_seconds": round(max(0.0, now - started.timestamp()), 1),
    }


def result_key(auction_date: str, key: str) -> str:
    """Where the accepted result of the order ``key`` lives in the results bucket (and under
    <home>/results/ locally): ``orders/<auction date>/<trader key>/<record_id>.json``."""
    return f"orders/{auction_date}/{key}.json"


def _key_of(result: Mapping[str, Any]) -> tuple[str, str]:
    """``(record_id, store key)`` of the order an item of a run's results is about."""
    record_id = str(result["record_id"])
    trader = result.get("trader")
    if not isinstance(trader, str):
        # An item staged by a version before orders had traders: its order is not in this store.
        raise ClaimLost(f"order result {record_id} names no trader (staged by an earlier version)")
    return record_id, order_key(trader, record_id)


def process_order(
    result: Mapping[str, Any],
    run_id: str,
    *,
    store: OrderStore,
    results: ResultStore,
    now: float,
    notice_delay_seconds: int,
    claim_margin_seconds: float = CLAIM_MARGIN_SECONDS,
) -> dict[str, str]:
    """Lambda B for one order result (an item of the run's results).

    The outcome is the decision stored with the order (the item was made from it). An accepted
    order's result object is written before the order is marked: should the run die in between,
    the run that takes the order over writes the same result again. A rejected order's notice is
    owed from the moment it is marked rejected; ``notice_delay_seconds`` later, a run that finds it
    still undelivered publishes it again.

    Raises
    ------
    OrderRejected
        The order was rejected (after it was marked rejected).
    ClaimLost
        This run does not hold the order (it expired, was replaced, or another run holds it), or
        its claim lapses in less than ``claim_margin_seconds``.
    """
    record_id, key = _key_of(result)
    order = store.get_order(key)
    if order is None:
        raise ClaimLost(f"order {record_id} no longer exists")
    # An order claimed before decisions were stored (an earlier version) is settled from its item.
    decided = OrderResult.of(order) if order.decision is not None else None
    status = OrderStatus(decided.status if decided else result["status"])
    already_done = order.completed_by(run_id, status)
    if not already_done and order.claim_run_id != run_id:
        raise ClaimLost(f"run {run_id} does not hold order {record_id}")
    if not already_done and (order.claim_expires_at or 0) - now < claim_margin_seconds:
        raise ClaimLost(f"the claim of run {run_id} on order {record_id} lapses too soon to settle it")
    outcome = _outcome(decided.as_item() if decided else result, run_id, status)

    if status is OrderStatus.ACCEPTED:
        location = result_key(outcome["auction_date"], key)
        outcome["result_key"] = location
        results.put_result(location, _result_document(order, outcome))
        if not already_done:
            store.complete_order(key, run_id, status, outcome)
        return {"record_id": record_id, "status": status.value, "result_key": location}

    if status is OrderStatus.REJECTED:
        if not already_done:
            store.complete_order(key, run_id, status, outcome, notice_due_at=int(now) + notice_delay_seconds)
        raise OrderRejected(record_id)
    raise ValueError(f"an order result has status {status.value!r}; expected accepted or rejected")


def _outcome(item: Mapping[str, Any], run_id: str, status: OrderStatus) -> dict[str, Any]:
    # processed_at is the market's decision time, not "now", so a retry rewrites identical bytes.
    outcome: dict[str, Any] = {
        "status": status.value,
        # A decimal string (exact); str() also takes a float's shortest form.
        "power": Decimal(str(item.get("power", 0))),
        "run_id": run_id,
        "auction_date": str(item["auction_date"]),
        "processed_at": str(item["decided_at"]),
    }
    if item.get("reason"):
        outcome["reason"] = str(item["reason"])
    return settled_outcome(run_id, status, outcome)


def _result_document(order: Order, outcome: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "order": {
            **order.request_fields(),
            "trader": order.trader,
            "submitted_at": order.submitted_at,
            "expires_at": order.expires_at,
        },
        "outcome": {k: v for k, v in outcome.items() if k not in {"run_id", "processed_at", "result_key"}},
        "run_id": outcome["run_id"],
        "processed_at": outcome["processed_at"],
    }


def release_order(result: Mapping[str, Any], run_id: str, *, store: OrderStore) -> dict[str, str]:
    """Give the order back to the pending pool after its processing kept failing."""
    record_id, key = _key_of(result)
    store.release_order(key, run_id)
    return {"record_id": record_id, "status": "released"}


def redeliver_notices(
    run_id: str,
    *,
    store: OrderStore,
    publisher: NoticePublisher,
    now: float,
    redelivery_seconds: int,
    limit: int = REDELIVERIES_PER_RUN,
) -> dict[str, Any]:
    """Publish again each owed rejection notice that is overdue, as the state machine would have.

    A notice is owed from the moment its order is marked rejected until the notifier records it
    delivered; it is overdue ``redelivery_seconds`` after that (then twice as long after each
    redelivery). Publishing one that is in fact on its way is harmless: the notifier delivers a
    notice once (``OrderStore.claim_notices``).
    """
    at = int(now)
    overdue = store.overdue_notices(at, limit)
    for order in overdue:
        rejected_by = str((order.outcome or {}).get("run_id"))
        publisher.publish(REJECTION_SUBJECT, rejection_message(order), NoticeKind.ORDER_REJECTED.value)
        wait = redelivery_seconds * 2 ** ((order.notice_redeliveries or 0) + 1)
        store.postpone_notice(order.key, rejected_by, at + min(max(wait, 1), MAX_REDELIVERY_WAIT_SECONDS))
    return {"run_id": run_id, "redelivered": len(overdue)}


def rejection_message(order: Order) -> str:
    """The topic message for a rejected order's notice, in the shape the state machine publishes
    (``States.JsonToString`` of the child's state: the order result and the run id)."""
    outcome = order.outcome or {}
    if order.decision is not None:
        result = OrderResult.of(order)
    else:  # claimed by an earlier version, which stored no decision: the outcome says the same
        result = OrderResult(
            record_id=order.record_id,
            trader=order.trader,
            status="rejected",
            power=Decimal(0),
            auction_date=str(outcome.get("auction_date")),
            decided_at=str(outcome.get("processed_at")),
            reason=outcome.get("reason"),
            order_fields={k: v for k, v in order.request_fields().items() if k != "record_id"},
        )
    return codec.dumps({"result": result.as_item(), "run_id": outcome.get("run_id"), "redelivered": True})
