"""The auction pipeline's use cases, run by the state machine's tasks. No AWS here.

- :func:`fetch_results` (Lambda A) asks the market whether results are ready and, when they are,
  claims the pending orders for this run, with the market's decision for each stored in the same
  write, and writes their results where the Distributed Map reads them.
- :func:`process_order` (Lambda B) settles one order result: an accepted one is written to the
  results store and marked accepted; a rejected one is marked rejected, with its notice owed, and
  raises :class:`~energy_auction.errors.OrderRejected`, which the state machine turns into a notice.
- :func:`release_order` gives an order back when processing kept failing, and :func:`release_run`
  gives back all of a run's orders when FetchResults kept failing.
- :func:`redeliver_notices` publishes again the rejection notices that are owed and overdue (their
  run died, timed out or could not publish), and :func:`deliver_notice` (the notifier) delivers a
  notice, a rejection once.

Exactly once per order: a run only processes orders it claimed (a conditional write, so two
overlapping runs never share an order), completion is conditional on the claim, and a retried
task finds its own completed work and repeats it idempotently (same object key, same bytes). The
market is asked once per order: its decision is stored with the first claim, and a run that takes
over the order of a run that died settles it with that decision, so the result object the dead run
may have written always agrees with the order's final status. A rejection and its owed notice are
one write (an outbox); the notifier records the delivery on the order, so every rejection is
notified once, whichever run, retry or redelivery brings it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from energy_auction import codec
from energy_auction.errors import ClaimLost, OrderRejected
from energy_auction.market import OrderResult
from energy_auction.notifications import REJECTION_SUBJECT, NoticeKind
from energy_auction.orders import Order, OrderStatus, order_key, settled_outcome

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
    lease_seconds: int,
) -> dict[str, Any]:
    """Lambda A: ``{"results": false, ...}`` while not ready, else ``{"results": true, "count", "items"}``."""
    answer: dict[str, Any] = {"run_id": run_id, "attempt": attempt}
    if not market.is_ready(run_id, attempt):
        return {"results": False, **answer}
    at = int(now)
    pending = store.pending_orders(at, run_id)  # with this run's own claims, should this be a retry
    if not pending:
        return {"results": True, **answer, "count": 0}
    submitted = {o.key: o.submitted_at for o in pending}
    # Only orders without a decision are put to the market: an order a dead run claimed keeps the
    # answer it got then (stored with that claim), whatever the market would say now.
    decisions = {
        r.key: r.decision(submitted[r.key])
        for r in market.decide([o for o in pending if o.decision is None], run_id, now)
    }
    claimed = store.claim_orders([o.key for o in pending], run_id, at, lease_seconds, decisions)
    if not claimed:
        return {"results": True, **answer, "count": 0}
    results = [OrderResult.of(order) for order in claimed]
    accepted = sum(1 for r in results if r.status == "accepted")
    return {
        "results": True,
        **answer,
        "count": len(results),
        "accepted": accepted,
        "rejected": len(results) - accepted,
        "items": work.write_items(run_id, [r.as_item() for r in results]),
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


def release_run(run_id: str, *, store: OrderStore, now: float) -> dict[str, Any]:
    """Give back every order ``run_id`` holds, after its FetchResults failed for good."""
    held = [o for o in store.pending_orders(int(now), run_id) if o.claim_run_id == run_id]
    for order in held:
        store.release_order(order.key, run_id)
    return {"run_id": run_id, "released": len(held)}


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
    notice once (``OrderStore.claim_notice``).
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
