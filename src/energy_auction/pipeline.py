"""The auction pipeline's use cases, run by the state machine's tasks. No AWS here.

- :func:`fetch_results` (Lambda A) asks the market whether results are ready and, when they are,
  claims the pending orders for this run and writes their results where the Distributed Map reads
  them.
- :func:`process_order` (Lambda B) settles one order result: an accepted one is written to the
  results store and marked accepted; a rejected one is marked rejected and raises
  :class:`~energy_auction.errors.OrderRejected`, which the state machine turns into a notice.
- :func:`release_order` gives an order back when processing kept failing, and :func:`release_run`
  gives back all of a run's orders when FetchResults kept failing.

Exactly once per order: a run only processes orders it claimed (a conditional write, so two
overlapping runs never share an order), completion is conditional on the claim, and a retried
task finds its own completed work and repeats it idempotently (same object key, same bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from energy_auction.errors import ClaimLost, OrderRejected
from energy_auction.orders import OrderStatus

if TYPE_CHECKING:
    from energy_auction.ports import AuctionMarket, OrderStore, ResultStore, WorkStore


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
    claimed = store.claim_orders([o.record_id for o in pending], run_id, at, lease_seconds) if pending else []
    if not claimed:
        return {"results": True, **answer, "count": 0}
    results = market.decide(claimed, run_id, now)
    accepted = sum(1 for r in results if r.status == "accepted")
    return {
        "results": True,
        **answer,
        "count": len(results),
        "accepted": accepted,
        "rejected": len(results) - accepted,
        "items": work.write_items(run_id, [r.as_item() for r in results]),
    }


def result_key(auction_date: str, record_id: str) -> str:
    """Where an accepted result lives in the results bucket (and under <home>/results/ locally)."""
    return f"orders/{auction_date}/{record_id}.json"


def process_order(
    result: Mapping[str, Any], run_id: str, *, store: OrderStore, results: ResultStore
) -> dict[str, str]:
    """Lambda B for one order result (an item of the run's results).

    Raises
    ------
    OrderRejected
        The order was rejected (after it was marked rejected).
    ClaimLost
        This run does not hold the order (it expired, was replaced, or another run holds it).
    """
    record_id = str(result["record_id"])
    status = OrderStatus(result["status"])
    order = store.get_order(record_id)
    if order is None:
        raise ClaimLost(f"order {record_id} no longer exists")
    already_done = order.completed_by(run_id, status)
    if not already_done and order.claim_run_id != run_id:
        raise ClaimLost(f"run {run_id} does not hold order {record_id}")

    # processed_at is the market's decision time, not "now", so a retry rewrites identical bytes.
    outcome: dict[str, Any] = {
        "status": status.value,
        # A decimal string from FetchResults (exact); str() also takes a float's shortest form.
        "power": Decimal(str(result.get("power", 0))),
        "run_id": run_id,
        "auction_date": str(result["auction_date"]),
        "processed_at": str(result["decided_at"]),
    }
    if result.get("reason"):
        outcome["reason"] = str(result["reason"])

    if status is OrderStatus.ACCEPTED:
        key = result_key(outcome["auction_date"], record_id)
        outcome["result_key"] = key
        document = {
            "order": {
                "record_id": order.record_id,
                "parameter_1": order.parameter_1,
                "parameter_2": order.parameter_2,
                "submitted_at": order.submitted_at,
                "expires_at": order.expires_at,
            },
            "outcome": {
                k: v for k, v in outcome.items() if k not in {"run_id", "processed_at", "result_key"}
            },
            "run_id": run_id,
            "processed_at": outcome["processed_at"],
        }
        results.put_result(key, document)
        if not already_done:
            store.complete_order(record_id, run_id, status, outcome)
        return {"record_id": record_id, "status": status.value, "result_key": key}

    if status is OrderStatus.REJECTED:
        if not already_done:
            store.complete_order(record_id, run_id, status, outcome)
        raise OrderRejected(record_id)
    raise ValueError(f"an order result has status {status.value!r}; expected accepted or rejected")


def release_run(run_id: str, *, store: OrderStore, now: float) -> dict[str, Any]:
    """Give back every order ``run_id`` holds, after its FetchResults failed for good."""
    held = [o for o in store.pending_orders(int(now), run_id) if o.claim_run_id == run_id]
    for order in held:
        store.release_order(order.record_id, run_id)
    return {"run_id": run_id, "released": len(held)}


def release_order(result: Mapping[str, Any], run_id: str, *, store: OrderStore) -> dict[str, str]:
    """Give the order back to the pending pool after its processing kept failing."""
    record_id = str(result["record_id"])
    store.release_order(record_id, run_id)
    return {"record_id": record_id, "status": "released"}
