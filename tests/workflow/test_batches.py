"""Runs in batches: each batch (a Distributed Map child) claims its own orders when it starts, so
traders may cancel or resubmit orders a run has staged but not reached, a batch whose orders partly
fail settles the rest, and a run past its limit leaves the other orders claimable at once."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from energy_auction import codec
from energy_auction.adapters.local import FolderResultStore
from energy_auction.bootstrap import Container
from energy_auction.handlers import fetch_results
from energy_auction.orders import Limits, OrderStatus, new_orders, parse_orders
from tests.builders import TRADER, key, record_ids, store_orders

from .conftest import ScriptedMarket, alerts, claimable, notifications, run_summaries, settings_for


def _container(
    home: Path, market: Any, components: dict[str, Any] | None = None, **overrides: Any
) -> Container:
    return Container(settings_for(home, **overrides), market=market, **(components or {}))


def _status(container: Container, record_id: str) -> OrderStatus:
    order = container.order_store.get_order(key(record_id))
    assert order is not None
    return order.status


def _result_files(home: Path) -> dict[str, dict[str, Any]]:
    root = home / "results"
    return {p.stem: json.loads(p.read_text()) for p in root.rglob("*.json")} if root.exists() else {}


def test_orders_cancelled_or_resubmitted_after_staging_are_settled_as_the_trader_left_them(
    home: Path, engine_for: Any
) -> None:
    # Given six pending orders in batches of two, and traders who, once the run has staged them
    # and before any batch claims them, cancel o1 and resubmit o4 with another volume
    container = _container(home, ScriptedMarket(reject={"o4"}), pipeline_batch_size=2)
    store_orders(container, 6)

    def staging_then_traders_act(event: dict[str, Any], context: Any) -> Any:
        answer = fetch_results.handler(event, context)
        if "action" not in event and answer.get("results"):
            now = container.clock()
            container.order_store.cancel_order(key("o1"), int(now))
            body = codec.dumps([{"record_id": "o4", "parameter_1": "lot", "parameter_2": Decimal("99.5")}])
            container.order_store.put_orders(new_orders(parse_orders(body, Limits()), now, TRADER), int(now))
        return answer

    engine = engine_for(container, fetch_results=staging_then_traders_act)

    # When the run executes
    summary = engine.run()

    # Then the cancelled order is never processed, written or notified, and stays cancelled
    assert summary.status == "SUCCEEDED"
    assert _status(container, "o1") is OrderStatus.CANCELLED
    assert "o1" not in _result_files(home)
    rejected = [n["fields"]["record_id"] for n in notifications(home) if n["kind"] == "order_rejected"]
    assert rejected == ["o4"]
    # And the resubmitted order was settled as resubmitted: its new submission was claimed
    resubmitted = container.order_store.get_order(key("o4"))
    assert resubmitted is not None
    assert resubmitted.status is OrderStatus.REJECTED
    assert str(resubmitted.parameter_2) == "99.5"
    # And the others as staged
    assert {r: _status(container, r) for r in ("o0", "o2", "o3", "o5")} == dict.fromkeys(
        ("o0", "o2", "o3", "o5"), OrderStatus.ACCEPTED
    )
    assert (summary.accepted, summary.rejected, summary.orders) == (4, 1, 5)
    record = container.order_store.run_record(summary.run_id)
    assert (record.staged, record.settled.orders) == (6, 5)


class _FailingFor:
    """A result store that fails for good for some orders (say, a key the bucket policy denies)."""

    def __init__(self, inner: Any, failing: set[str]) -> None:
        self.inner, self.failing = inner, failing

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        if document["order"]["record_id"] in self.failing:
            raise RuntimeError("the results bucket refused the write")
        return str(self.inner.put_result(key, document))


def test_a_batch_whose_orders_partly_fail_settles_the_rest(home: Path, engine_for: Any) -> None:
    # Given one batch of five orders, two of which cannot be written to the results bucket
    results = _FailingFor(FolderResultStore(home / "results"), {"o1", "o3"})
    container = _container(home, ScriptedMarket(), {"result_store": results}, pipeline_batch_size=5)
    ids = record_ids(store_orders(container, 5))
    engine = engine_for(container)

    # When the run executes
    summary = engine.run()

    # Then the others are accepted, the two are pending again with an alert each
    assert summary.status == "SUCCEEDED"
    assert (summary.accepted, summary.failed) == (3, 2)
    assert {r: _status(container, r).value for r in ids} == {
        "o0": "accepted",
        "o1": "pending",
        "o2": "accepted",
        "o3": "pending",
        "o4": "accepted",
    }
    failed = sorted(n["fields"]["record_id"] for n in alerts(home) if n["kind"] == "order_processing_failed")
    assert failed == ["o1", "o3"]
    assert claimable(container) == ["o1", "o3"]
    # And the batch's tally counts them as failed
    settled = container.order_store.run_record(summary.run_id).settled
    assert (settled.accepted, settled.rejected, settled.failed, settled.batches) == (3, 0, 2, 1)


def test_a_run_past_its_limit_leaves_the_rest_claimable_at_once(home: Path, engine_for: Any) -> None:
    # Given twelve pending orders and runs that take at most five
    container = _container(home, ScriptedMarket(), pipeline_max_orders=5, pipeline_batch_size=2)
    ids = record_ids(store_orders(container, 12))
    engine = engine_for(container)

    # When a run executes
    first = engine.run()

    # Then it settles five (the oldest first), and the seven others were never claimed: a new run
    # may take them at once, with no lease to wait for
    assert (first.status, first.orders, first.accepted) == ("SUCCEEDED", 5, 5)
    record = container.order_store.run_record(first.run_id)
    assert (record.staged, record.left) == (5, 7)
    assert len(claimable(container)) == 7
    (summary_notice,) = run_summaries(home)
    assert summary_notice["fields"]["run_id"] == first.run_id

    # And the next runs settle the rest
    second, third = engine.run(), engine.run()
    assert (second.orders, third.orders) == (5, 2)
    assert claimable(container) == []
    assert {_status(container, r) for r in ids} == {OrderStatus.ACCEPTED}
