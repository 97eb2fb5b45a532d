"""Exactly once, whatever dies: the ASL file on moto with the real handlers, on SQLite and DynamoDB.

A run is killed between ProcessOrder's write and what must follow it (the order's marking, the
rejection notice): the killed invocation never returns, the parent execution is stopped (on AWS a
stopped or timed-out parent stops its children the same way), and the next run takes over after
the claim lease. Whatever the market would answer the second time, every order ends settled once,
every rejection is notified once, and no result object contradicts its order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from energy_auction import codec
from energy_auction.adapters.aws import DynamoDbOrderStore
from energy_auction.adapters.local import FolderResultStore, SqliteOrderStore
from energy_auction.bootstrap import Container
from energy_auction.market import OrderResult, SimulatedMarket
from energy_auction.orders import Order, OrderStatus
from tests.adapters.stores import TABLE, create_orders_table, fast_moto_transactions
from tests.builders import key, record_ids, store_orders
from tests.conftest import FakeClock
from tests.fake_slack import FakeSlack, Reply, rejections_counted, rejections_listed

from .conftest import notifications, settings_for

LEASE = 4500
REDELIVERY = 900


class LambdaDied(Exception):
    """What a ProcessOrder invocation that crashed or timed out looks like to the state machine."""


@dataclass
class Tripwire:
    """Stops the run (StopExecution) at one point of one invocation: the state machine then runs
    nothing more of that child. ``die`` also ends the invocation there, as a crash would."""

    die: bool
    engine: Any = None
    fired: threading.Event = field(default_factory=threading.Event)

    def trip(self, run_id: str) -> None:
        if self.fired.is_set():
            return
        self.fired.set()
        self.engine.stop_run(run_id)
        if self.die:
            raise LambdaDied("Runtime exited without providing a reason")


class StoppedAfterResultWrite:
    """The results folder; the run stops, and ProcessOrder dies, right after ``target``'s object is
    written: before the order is marked accepted."""

    def __init__(self, inner: FolderResultStore, target: str, tripwire: Tripwire) -> None:
        self.inner, self.target, self.tripwire = inner, target, tripwire

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        location = self.inner.put_result(key, document)
        if key.endswith(f"/{self.target}.json"):
            self.tripwire.trip(document["run_id"])
        return location


class StoppedAfterRejection:
    """An order store; the run stops right after ``target`` is marked rejected: before its notice."""

    def __init__(self, inner: Any, target: str, tripwire: Tripwire) -> None:
        self.inner, self.target, self.tripwire = inner, target, tripwire

    def complete_order(self, order: str, run_id: str, status: OrderStatus, *args: Any, **kw: Any) -> None:
        self.inner.complete_order(order, run_id, status, *args, **kw)
        if order == key(self.target) and status is OrderStatus.REJECTED:
            self.tripwire.trip(run_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class ChangingMarket:
    """Always ready; decides every order of the first run that asks one way, any later run the other
    way: what a market whose answer is not stable would do to an order asked twice."""

    first: str = "accepted"
    asked: list[str] = field(default_factory=list)
    inner: SimulatedMarket = field(default_factory=lambda: SimulatedMarket(1.0, 1.0, seed=5))

    def is_ready(self, run_id: str, attempt: int) -> bool:
        return True

    def decide(self, orders: Sequence[Order], run_id: str, now: float) -> list[OrderResult]:
        if run_id not in self.asked:
            self.asked.append(run_id)
        status = (
            self.first
            if self.asked.index(run_id) == 0
            else {"accepted": "rejected"}.get(self.first, "accepted")
        )
        return [
            OrderResult(
                **{
                    **r.__dict__,
                    "status": status,
                    "power": r.order_fields["parameter_2"] if status == "accepted" else Decimal(0),
                    "reason": None if status == "accepted" else "changed its mind",
                }
            )
            for r in self.inner.decide(orders, run_id, now)
        ]


@pytest.fixture(params=["sqlite", "dynamodb"])
def order_store(request: pytest.FixtureRequest, home: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        store = SqliteOrderStore(home / "orders.sqlite3")
        yield store
        store.close()
        return
    with mock_aws(), fast_moto_transactions():  # the engine's own mock nests inside this one
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_orders_table(client, TABLE)
        yield DynamoDbOrderStore(client, TABLE)


def _settled(container: Container, ids: list[str]) -> dict[str, Order]:
    orders = {}
    for record_id in ids:
        order = container.order_store.get_order(key(record_id))
        assert order is not None
        orders[record_id] = order
    return orders


def _result_objects(home: Path) -> dict[str, dict[str, Any]]:
    root = home / "results"
    # results/orders/<date>/<trader key>/<record_id>.json: these tests' orders are all one trader's
    return {p.stem: codec.loads(p.read_text()) for p in root.rglob("*.json")} if root.exists() else {}


def assert_exactly_once(
    home: Path, container: Container, ids: list[str], slack: FakeSlack
) -> dict[str, Order]:
    """Every order settled once; one notice per rejection in the file, and in Slack (listed in a
    digest or counted in its "more"); result objects only for accepted orders, each agreeing with
    its order's outcome."""
    orders = _settled(container, ids)
    assert {o.status for o in orders.values()} <= {OrderStatus.ACCEPTED, OrderStatus.REJECTED}
    assert all(o.claim_run_id is None for o in orders.values())
    accepted = {r for r, o in orders.items() if o.status is OrderStatus.ACCEPTED}
    rejected = {r for r, o in orders.items() if o.status is OrderStatus.REJECTED}
    objects = _result_objects(home)
    assert set(objects) == accepted
    for record_id in accepted:
        outcome = orders[record_id].outcome or {}
        assert objects[record_id]["outcome"]["status"] == "accepted"
        assert objects[record_id]["run_id"] == outcome["run_id"]
    notices = [n for n in notifications(home) if n["kind"] == "order_rejected"]
    assert sorted(n["fields"]["record_id"] for n in notices) == sorted(rejected)
    for notice in notices:
        assert notice["fields"]["run_id"] == (orders[notice["fields"]["record_id"]].outcome or {})["run_id"]
    assert all(orders[r].notice_due_at is None for r in rejected)  # every rejection's notice delivered
    listed = [r for post in slack.posted() for r in rejections_listed(post)]
    counted = sum(rejections_counted(post) for post in slack.posted())
    assert sorted(listed) == sorted(set(listed))
    assert set(listed) <= rejected
    assert len(listed) + counted == len(rejected)
    return orders


def _stop_first_run(engine: Any, tripwire: Tripwire) -> str:
    tripwire.engine = engine
    summary = engine.run(timeout=60)
    assert tripwire.fired.is_set(), "the run never reached the point where it is stopped"
    assert summary.status == "ABORTED"
    return str(summary.run_id)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def test_a_run_stopped_after_writing_an_accepted_result_never_contradicts_it(
    home: Path, engine_for: Any, order_store: Any, slack: FakeSlack
) -> None:
    # Given three orders, a market that accepts them in the first run and would reject them in any
    # later one, and a first run stopped right after it writes o1's result object, its ProcessOrder
    # dying before it marks the order
    tripwire = Tripwire(die=True)
    clock = FakeClock()
    settings = settings_for(
        home,
        pipeline_max_concurrency=1,
        pipeline_batch_concurrency=1,
        claim_lease_seconds=LEASE,
        slack_webhook_url=slack.url,
    )
    container = Container(
        settings,
        clock,
        order_store=order_store,
        market=ChangingMarket(first="accepted"),
        result_store=StoppedAfterResultWrite(FolderResultStore(settings.results_dir), "o1", tripwire),
    )
    ids = record_ids(store_orders(container, 3))
    engine = engine_for(container)
    _stop_first_run(engine, tripwire)
    assert "o1" in _result_objects(home)  # the dead run's object says accepted
    o1 = container.order_store.get_order(key("o1"))
    assert o1 is not None
    assert o1.status is OrderStatus.PENDING

    # When the next run takes over once the claim lease has lapsed
    clock.advance(LEASE + 1)
    second = engine.run()

    # Then o1 is settled as first decided (accepted), by the second run, and its object agrees
    assert second.status == "SUCCEEDED"
    orders = assert_exactly_once(home, container, ids, slack)
    assert orders["o1"].status is OrderStatus.ACCEPTED
    assert (orders["o1"].outcome or {})["run_id"] == second.run_id


def test_a_run_stopped_after_marking_a_rejection_still_notifies_it_once(
    home: Path, engine_for: Any, order_store: Any, slack: FakeSlack
) -> None:
    # Given three orders the market rejects, and a first run stopped right after it marks o0
    # rejected, before the state machine could publish the notice
    tripwire = Tripwire(die=False)
    clock = FakeClock()
    settings = settings_for(
        home,
        pipeline_max_concurrency=1,
        pipeline_batch_concurrency=1,
        claim_lease_seconds=LEASE,
        notice_redelivery_seconds=REDELIVERY,
        slack_webhook_url=slack.url,
    )
    container = Container(
        settings,
        clock,
        order_store=StoppedAfterRejection(order_store, "o0", tripwire),
        market=ChangingMarket(first="rejected"),
    )
    ids = record_ids(store_orders(container, 3))
    engine = engine_for(container)
    first = _stop_first_run(engine, tripwire)
    o0 = container.order_store.get_order(key("o0"))
    assert o0 is not None
    assert (o0.status, (o0.outcome or {})["run_id"]) == (OrderStatus.REJECTED, first)
    assert [n for n in notifications(home) if n["kind"] == "order_rejected"] == []

    # When the next run starts after the lease, and after the notice is overdue
    clock.advance(max(LEASE, REDELIVERY) + 1)
    second = engine.run()

    # Then the owed notice went out once (naming the run that rejected it), with the others
    assert second.status == "SUCCEEDED"
    orders = assert_exactly_once(home, container, ids, slack)
    assert {o.status for o in orders.values()} == {OrderStatus.REJECTED}
    o0_notices = [n for n in notifications(home) if n["fields"].get("record_id") == "o0"]
    assert [(n["kind"], n["fields"]["run_id"]) for n in o0_notices] == [("order_rejected", first)]

    # And a third run later finds nothing owed and sends nothing again
    clock.advance(24 * 3600)
    before, posted = notifications(home), len(slack.posted())
    assert engine.run().orders == 0
    assert (notifications(home), len(slack.posted())) == (before, posted)


def test_a_slack_outage_across_runs_posts_each_rejection_once(
    home: Path, engine_for: Any, order_store: Any, slack: FakeSlack
) -> None:
    # Given three rejected orders, settled while Slack answers every post with 503: their notices
    # stay queued (retried) and owed
    slack.otherwise = Reply(503, "down", {"Retry-After": "0"})
    clock = FakeClock()
    settings = settings_for(home, notice_redelivery_seconds=REDELIVERY, slack_webhook_url=slack.url)
    container = Container(settings, clock, order_store=order_store, market=ChangingMarket(first="rejected"))
    ids = record_ids(store_orders(container, 3))
    engine = engine_for(container, delivery_grace_seconds=0.5)
    first = engine.run()
    # (and the run summary)
    assert (first.status, first.rejected, first.notices_undelivered) == ("SUCCEEDED", 3, 4)
    assert slack.posted() == []

    # When Slack is back and the next run, with the notices overdue, publishes them again: each
    # rejection now has two copies on their way (the retried original and the redelivered one)
    slack.otherwise = Reply()
    clock.advance(REDELIVERY + 1)
    second = engine.run()

    # Then Slack got each rejection once, nothing is owed, and once the retried originals have had
    # their turn (they are skipped as delivered) nothing is queued and Slack still has one each
    assert second.status == "SUCCEEDED"
    assert_exactly_once(home, container, ids, slack)
    deadline = time.monotonic() + 60
    while container.topic.undelivered() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert container.topic.undelivered() == []
    assert sorted(r for post in slack.posted() for r in rejections_listed(post)) == sorted(ids)
