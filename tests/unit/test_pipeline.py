"""The pipeline's use cases (FetchResults, ProcessOrder, ReleaseOrder) on the real local adapters.

Orders live in SQLite and accepted results in a folder (the local container); a run's work items
go to a small in-memory WorkStore defined here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from energy_auction import codec, workflow
from energy_auction.adapters.local import SqliteOrderStore
from energy_auction.bootstrap import Container
from energy_auction.errors import ClaimLost, OrderRejected
from energy_auction.market import REJECTION_REASONS, OrderResult, SimulatedMarket
from energy_auction.notifications import REJECTION_SUBJECT, notice_from_message
from energy_auction.orders import (
    ORDER_TTL_SECONDS,
    RETENTION_SECONDS,
    NoticeClaim,
    Order,
    OrderStatus,
    iso_utc,
    trader_key,
)
from energy_auction.pipeline import fetch_results, process_order, redeliver_notices, release_order, result_key
from tests.builders import TRADER, key, keys

from ..builders import store_orders
from ..conftest import START, FakeClock

LEASE = 4500
NOTICE_DELAY = 900
RUN = "run-20270115T080000Z-aaaa"
OTHER_RUN = "run-20270115T080500Z-bbbb"


class MemoryWorkStore:
    """Keeps each run's items in memory; ``failures`` makes the next writes raise."""

    def __init__(self, failures: Sequence[BaseException] = ()) -> None:
        self.written: dict[str, list[dict[str, Any]]] = {}
        self.failures = list(failures)

    def write_items(self, run_id: str, items: Sequence[dict[str, Any]]) -> dict[str, str]:
        if self.failures:
            raise self.failures.pop(0)
        self.written[run_id] = list(items)
        return {"bucket": "work-bucket", "key": f"work/runs/{run_id}/results.json"}


def fetch(container: Container, market: Any, work: MemoryWorkStore, run_id: str = RUN) -> dict[str, Any]:
    return fetch_results(
        run_id,
        1,
        store=container.order_store,
        market=market,
        work=work,
        now=container.clock(),
        lease_seconds=LEASE,
    )


def as_event(item: dict[str, Any]) -> dict[str, Any]:
    """The item as ProcessOrder receives it: JSON through Step Functions, numbers parsed as floats."""
    event: dict[str, Any] = json.loads(codec.dumps(item))
    return event


def claimed_result(
    container: Container, record_id: str, status: str, run_id: str = RUN, parameter_2: str = "2.1"
) -> dict[str, Any]:
    """Store an order, claim it for ``run_id``, and return its result item with this status."""
    now = container.clock()
    stored = Order(
        record_id=record_id,
        trader=TRADER,
        parameter_1="abc",
        parameter_2=Decimal(parameter_2),
        submitted_at=iso_utc(now),
        expires_at=int(now) + ORDER_TTL_SECONDS,
    )
    container.order_store.put_orders([stored], int(now))
    accepted = status == "accepted"
    result = OrderResult(
        record_id=record_id,
        trader=TRADER,
        status="accepted" if accepted else "rejected",
        power=Decimal(parameter_2) if accepted else Decimal(0),
        auction_date=iso_utc(now)[:10],
        decided_at=iso_utc(now + 1.5),
        reason=None if accepted else REJECTION_REASONS[1],
        order_fields={"parameter_1": "abc", "parameter_2": Decimal(parameter_2)},
    )
    # FetchResults stores the market's decision with the claim
    decisions = {key(record_id): result.decision(stored.submitted_at)}
    assert container.order_store.claim_orders(keys([record_id]), run_id, int(now), LEASE, decisions)
    return as_event(result.as_item())


def settle(container: Container, item: dict[str, Any], run_id: str = RUN) -> dict[str, str]:
    """ProcessOrder on the container's stores, as its handler calls it."""
    return process_order(
        item,
        run_id,
        store=container.order_store,
        results=container.result_store,
        now=container.clock(),
        notice_delay_seconds=NOTICE_DELAY,
    )


def result_file(container: Container, key: str) -> Path:
    return container.settings.results_dir / key


def get(container: Container, record_id: str) -> Order:
    found = container.order_store.get_order(key(record_id))
    assert found is not None
    return found


# --- FetchResults


def test_not_ready_answers_results_false_and_claims_nothing(local_container: Container) -> None:
    # Given pending orders and a market that is not ready
    store_orders(local_container, 5)
    work = MemoryWorkStore()

    # When FetchResults runs
    answer = fetch_results(
        RUN,
        3,
        store=local_container.order_store,
        market=SimulatedMarket(ready_probability=0.0, seed=1),
        work=work,
        now=local_container.clock(),
        lease_seconds=LEASE,
    )

    # Then it says so, with the run and attempt, and nothing is claimed or written
    assert answer == {"results": False, "run_id": RUN, "attempt": 3}
    pending = local_container.order_store.pending_orders(int(local_container.clock()))
    assert len(pending) == 5
    assert all(o.claim_run_id is None for o in pending)
    assert work.written == {}


def test_ready_claims_the_pending_orders_and_writes_the_markets_results(
    local_container: Container,
) -> None:
    # Given 30 pending orders and a seeded market that is ready
    stored = store_orders(local_container, 30)
    market = SimulatedMarket(ready_probability=1.0, accept_probability=0.5, seed=11)
    work = MemoryWorkStore()

    # When FetchResults runs
    answer = fetch(local_container, market, work)

    # Then it answers with the counts and where the items are
    items = work.written[RUN]
    accepted = sum(1 for item in items if item["status"] == "accepted")
    assert answer == {
        "results": True,
        "run_id": RUN,
        "attempt": 1,
        "count": 30,
        "accepted": accepted,
        "rejected": 30 - accepted,
        "items": {"bucket": "work-bucket", "key": f"work/runs/{RUN}/results.json"},
    }
    assert 0 < accepted < 30

    # And the items written are the market's results for those orders (same seed, same run)
    expected = [r.as_item() for r in market.decide(stored, RUN, local_container.clock())]
    by_id = {item["record_id"]: item for item in items}
    assert len(by_id) == len(items) == 30
    assert by_id == {item["record_id"]: item for item in expected}

    # And their numbers are exact decimal strings (JSON numbers would be parsed as floats downstream)
    assert codec.loads(codec.dumps(items)) == items
    assert by_id["o7"]["parameter_2"] == "7.25"

    # And every order is now held by this run
    assert {get(local_container, o.record_id).claim_run_id for o in stored} == {RUN}
    assert local_container.order_store.pending_orders(int(local_container.clock())) == []


def test_ready_with_no_pending_orders_answers_count_zero_and_writes_nothing(
    local_container: Container,
) -> None:
    work = MemoryWorkStore()
    answer = fetch(local_container, SimulatedMarket(1.0, 1.0, seed=1), work)
    assert answer == {"results": True, "run_id": RUN, "attempt": 1, "count": 0}
    assert work.written == {}


def test_a_second_run_right_after_finds_the_orders_claimed(
    local_container: Container, clock: FakeClock
) -> None:
    # Given a run that claimed every pending order
    store_orders(local_container, 4)
    market = SimulatedMarket(1.0, 1.0, seed=1)
    assert fetch(local_container, market, MemoryWorkStore())["count"] == 4

    # When another run starts a minute later
    clock.advance(60)
    work = MemoryWorkStore()
    answer = fetch(local_container, market, work, run_id=OTHER_RUN)

    # Then it finds nothing to do and writes nothing
    assert answer == {"results": True, "run_id": OTHER_RUN, "attempt": 1, "count": 0}
    assert work.written == {}
    assert get(local_container, "o0").claim_run_id == RUN


def test_expired_orders_are_not_fetched(local_container: Container, clock: FakeClock) -> None:
    # Given orders submitted a day ago (now expired)
    store_orders(local_container, 3)
    clock.advance(ORDER_TTL_SECONDS)
    work = MemoryWorkStore()

    # When a ready run fetches
    answer = fetch(local_container, SimulatedMarket(1.0, 1.0, seed=1), work)

    # Then there is nothing to do
    assert answer["count"] == 0
    assert work.written == {}


def test_a_retried_fetch_results_gets_back_the_orders_it_already_claimed(
    local_container: Container, clock: FakeClock
) -> None:
    # Given FetchResults claimed the orders, then failed to write the items (the task is retried)
    store_orders(local_container, 3)
    market = SimulatedMarket(1.0, 1.0, seed=1)
    response: dict[str, Any] = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
    slow_down = ClientError(response, "PutObject")  # type: ignore[arg-type]
    work = MemoryWorkStore(failures=[slow_down])
    with pytest.raises(ClientError):
        fetch(local_container, market, work)

    # When the state machine retries the same task a few seconds later
    clock.advance(4)
    answer = fetch(local_container, market, work)

    # Then the retry processes the orders this run holds, instead of reporting none pending
    # (claim_orders re-claims a run's own orders, but FetchResults only offers it pending_orders(),
    # which hides every order with a live claim, so the orders stay stuck until the lease lapses)
    assert answer["count"] == 3
    assert {item["record_id"] for item in work.written[RUN]} == {"o0", "o1", "o2"}


# --- ProcessOrder: accepted


def test_an_accepted_result_is_written_and_the_order_marked_accepted(local_container: Container) -> None:
    # Given an order this run claimed, and its accepted result as the Lambda event carries it
    item = claimed_result(local_container, "unique_id_1", "accepted")
    location = result_key(item["auction_date"], key("unique_id_1"))

    # When ProcessOrder settles it
    answer = settle(local_container, item)

    # Then it answers with where the result is: under the trader's key, then the record_id
    assert location == f"orders/{item['auction_date']}/{trader_key(TRADER)}/unique_id_1.json"
    assert answer == {"record_id": "unique_id_1", "status": "accepted", "result_key": location}

    # And the result file holds the order (with its trader), its outcome, the run and processed_at
    document = codec.loads(result_file(local_container, location).read_text())
    assert set(document) == {"order", "outcome", "run_id", "processed_at"}
    assert document["run_id"] == RUN
    assert document["processed_at"] == item["decided_at"]
    assert document["order"]["record_id"] == "unique_id_1"
    assert document["order"]["trader"] == TRADER
    assert document["order"]["parameter_1"] == "abc"
    assert document["order"]["parameter_2"] == Decimal("2.1")
    assert document["outcome"]["status"] == "accepted"
    assert document["outcome"]["power"] == Decimal("2.1")
    assert document["outcome"]["auction_date"] == item["auction_date"]

    # And the order is accepted, its claim cleared, with the result's key in its outcome
    order = get(local_container, "unique_id_1")
    assert order.status is OrderStatus.ACCEPTED
    assert order.claim_run_id is None
    assert order.outcome is not None
    assert order.outcome["result_key"] == location
    assert order.outcome["run_id"] == RUN
    assert order.outcome["processed_at"] == item["decided_at"]
    assert "reason" not in order.outcome


def test_a_retried_accepted_result_rewrites_identical_bytes(
    local_container: Container, clock: FakeClock
) -> None:
    # Given an accepted result ProcessOrder already settled
    item = claimed_result(local_container, "unique_id_1", "accepted")
    answer = settle(local_container, item)
    path = result_file(local_container, answer["result_key"])
    first_bytes = path.read_bytes()
    first_order = get(local_container, "unique_id_1")

    # When the task is retried with the same input a little later
    clock.advance(30)
    again = settle(local_container, item)

    # Then it succeeds the same way, rewriting the very same bytes, and the order is unchanged
    assert again == answer
    assert path.read_bytes() == first_bytes
    assert get(local_container, "unique_id_1") == first_order


def test_power_that_arrives_as_a_float_is_stored_as_its_decimal(local_container: Container) -> None:
    # Given an event whose power is a float, as Lambda's runtime parses JSON numbers
    item = claimed_result(local_container, "unique_id_2", "accepted", parameter_2="2.1")
    item["power"] = 2.1
    assert isinstance(item["power"], float)

    # When ProcessOrder settles it
    settle(local_container, item)

    # Then the stored power is the Decimal of the float's shortest text, not its binary expansion
    outcome = get(local_container, "unique_id_2").outcome
    assert outcome is not None
    assert isinstance(outcome["power"], Decimal)
    assert outcome["power"] == Decimal(str(2.1)) == Decimal("2.1")
    assert outcome["power"] != Decimal.from_float(2.1)  # the binary expansion


# --- ProcessOrder: rejected


def test_a_rejected_result_marks_the_order_rejected_and_raises(local_container: Container) -> None:
    # Given a rejected result for an order this run holds
    item = claimed_result(local_container, "unique_id_3", "rejected")

    # When ProcessOrder settles it
    with pytest.raises(OrderRejected) as raised:
        settle(local_container, item)

    # Then it raises the challenge's message
    assert str(raised.value) == "Order status is rejected! record_id=unique_id_3"
    assert raised.value.record_id == "unique_id_3"

    # And the order is rejected with the market's reason and zero power, and no file is written
    order = get(local_container, "unique_id_3")
    assert order.status is OrderStatus.REJECTED
    assert order.claim_run_id is None
    assert order.outcome is not None
    assert order.outcome["reason"] == REJECTION_REASONS[1]
    assert order.outcome["power"] == 0
    assert order.outcome["run_id"] == RUN
    assert "result_key" not in order.outcome
    assert not local_container.settings.results_dir.exists() or not any(
        local_container.settings.results_dir.rglob("*.json")
    )


def test_a_retried_rejected_result_raises_again_and_changes_nothing(
    local_container: Container, clock: FakeClock
) -> None:
    # Given a rejected result ProcessOrder already settled
    item = claimed_result(local_container, "unique_id_3", "rejected")
    with pytest.raises(OrderRejected):
        settle(local_container, item)
    before = get(local_container, "unique_id_3")

    # When the task is retried
    clock.advance(30)
    with pytest.raises(OrderRejected, match=r"^Order status is rejected! record_id=unique_id_3$"):
        settle(local_container, item)

    # Then the order is as it was
    assert get(local_container, "unique_id_3") == before


# --- ProcessOrder: claims


@pytest.mark.parametrize("status", ["accepted", "rejected"])
def test_an_order_another_run_holds_is_a_lost_claim(local_container: Container, status: str) -> None:
    # Given an order held by another run
    item = claimed_result(local_container, "held", status, run_id=OTHER_RUN)

    # When this run tries to settle it
    with pytest.raises(ClaimLost):
        settle(local_container, item)

    # Then the order is untouched and no result is written
    order = get(local_container, "held")
    assert (order.status, order.claim_run_id, order.outcome) == (OrderStatus.PENDING, OTHER_RUN, None)
    assert not result_file(local_container, result_key(item["auction_date"], key("held"))).exists()


def test_an_order_that_was_never_claimed_is_a_lost_claim(local_container: Container) -> None:
    # Given a pending order no run claimed
    store_orders(local_container, 1, prefix="free")
    item = as_event(
        SimulatedMarket(1.0, 1.0, seed=1).decide([get(local_container, "free0")], RUN, START)[0].as_item()
    )

    # When a run tries to settle it
    with pytest.raises(ClaimLost):
        settle(local_container, item)

    # Then it is still pending and unclaimed, with no result file
    order = get(local_container, "free0")
    assert (order.status, order.claim_run_id) == (OrderStatus.PENDING, None)
    assert not result_file(local_container, result_key(item["auction_date"], key("free0"))).exists()


def test_a_result_staged_before_orders_had_traders_is_a_lost_claim_and_changes_nothing(
    local_container: Container,
) -> None:
    # Given a result item without its trader, as a run of an earlier version staged it
    item = claimed_result(local_container, "legacy", "accepted")
    del item["trader"]

    # When the run tries to settle it, or give it back
    with pytest.raises(ClaimLost, match="names no trader"):
        settle(local_container, item)
    with pytest.raises(ClaimLost, match="names no trader"):
        release_order(item, RUN, store=local_container.order_store)

    # Then nothing is written, and the order stays this run's to settle
    assert not result_file(local_container, result_key(item["auction_date"], key("legacy"))).exists()
    assert get(local_container, "legacy").claim_run_id == RUN


def test_an_order_that_no_longer_exists_is_a_lost_claim(local_container: Container) -> None:
    # Given a result for an order that was claimed and has since been purged (expired)
    item = claimed_result(local_container, "gone", "accepted")
    store = local_container.order_store
    assert isinstance(store, SqliteOrderStore)
    assert store.purge_expired(int(START) + ORDER_TTL_SECONDS + RETENTION_SECONDS) == 1

    # When the run tries to settle it
    with pytest.raises(ClaimLost):
        settle(local_container, item)

    # Then nothing is written
    assert not result_file(local_container, result_key(item["auction_date"], key("gone"))).exists()


# --- ReleaseOrder


def test_release_puts_a_claimed_order_back_to_pending(local_container: Container) -> None:
    # Given an order this run claimed
    item = claimed_result(local_container, "stuck", "accepted")
    now = int(local_container.clock())
    assert local_container.order_store.pending_orders(now) == []

    # When processing kept failing and the order is released
    answer = release_order(item, RUN, store=local_container.order_store)

    # Then it is pending and unclaimed again, offered to the next run
    assert answer == {"record_id": "stuck", "status": "released"}
    order = get(local_container, "stuck")
    assert (order.status, order.claim_run_id, order.claim_expires_at) == (OrderStatus.PENDING, None, None)
    assert [o.record_id for o in local_container.order_store.pending_orders(now)] == ["stuck"]


def test_release_by_a_run_that_does_not_hold_the_order_changes_nothing(local_container: Container) -> None:
    item = claimed_result(local_container, "held", "accepted", run_id=OTHER_RUN)
    before = get(local_container, "held")
    assert release_order(item, RUN, store=local_container.order_store)["status"] == "released"
    assert get(local_container, "held") == before


# --- Redelivering owed notices


class RecordingPublisher:
    """The notification topic, as far as redelivery uses it: what was published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, str]] = []

    def publish(self, subject: str, message: str, kind: str) -> None:
        self.published.append((subject, message, kind))


def reject_one(container: Container, record_id: str) -> dict[str, Any]:
    item = claimed_result(container, record_id, "rejected")
    with pytest.raises(OrderRejected):
        settle(container, item)
    return item


def redeliver(container: Container, publisher: RecordingPublisher, limit: int = 500) -> dict[str, Any]:
    return redeliver_notices(
        RUN,
        store=container.order_store,
        publisher=publisher,
        now=container.clock(),
        redelivery_seconds=NOTICE_DELAY,
        limit=limit,
    )


def test_an_owed_notice_is_republished_once_overdue_as_the_state_machine_publishes_it(
    local_container: Container, clock: FakeClock
) -> None:
    # Given a rejected order whose notice never went out (its run died before publishing)
    item = reject_one(local_container, "unique_id_3")
    publisher = RecordingPublisher()

    # When a run starts before the notice is overdue, nothing is published
    clock.advance(NOTICE_DELAY - 1)
    assert redeliver(local_container, publisher) == {"run_id": RUN, "redelivered": 0}

    # When a run starts once it is overdue
    clock.advance(1)
    assert redeliver(local_container, publisher) == {"run_id": RUN, "redelivered": 1}

    # Then it is published with the state machine's subject and kind, and a message the notifier
    # reads as the same rejection notice (same key: it is delivered once, whichever copy comes first)
    ((subject, message, kind),) = publisher.published
    assert (subject, kind) == (REJECTION_SUBJECT, "order_rejected")
    redelivered = notice_from_message(message, kind, subject)
    original = notice_from_message(
        codec.dumps({"result": item, "run_id": RUN, "error": {"Error": "OrderRejected"}}), kind, subject
    )
    assert (redelivered.key, redelivered.order) == (original.key, (key("unique_id_3"), RUN))
    assert redelivered.fields == original.fields
    assert redelivered.title == "Order unique_id_3 of trader-1 rejected"


def test_a_redelivered_notice_waits_twice_as_long_each_time(
    local_container: Container, clock: FakeClock
) -> None:
    # Given an owed notice that stays undelivered (Slack is down), overdue after NOTICE_DELAY
    reject_one(local_container, "unique_id_3")
    publisher = RecordingPublisher()
    clock.advance(NOTICE_DELAY)

    # When each run republishes it as soon as it is overdue again
    waits = []
    for _ in range(8):
        assert redeliver(local_container, publisher)["redelivered"] == 1
        due = get(local_container, "unique_id_3").notice_due_at
        assert due is not None
        waits.append(due - int(clock.now))
        clock.now = due

    # Then the waits double, up to six hours, and each redelivery is counted
    assert waits == [1800, 3600, 7200, 14400, 21600, 21600, 21600, 21600]
    assert get(local_container, "unique_id_3").notice_redeliveries == 8
    assert len(publisher.published) == 8


def test_a_delivered_notice_is_never_republished(local_container: Container, clock: FakeClock) -> None:
    reject_one(local_container, "unique_id_3")
    store = local_container.order_store
    now = int(clock.now)
    assert store.claim_notice(key("unique_id_3"), RUN, now, 60, "delivery-1") is NoticeClaim.CLAIMED
    store.finish_notice(key("unique_id_3"), RUN, "delivery-1", delivered=True)
    publisher = RecordingPublisher()

    clock.advance(30 * 24 * 3600)

    assert redeliver(local_container, publisher)["redelivered"] == 0
    assert publisher.published == []


def test_redelivery_takes_at_most_its_limit_per_run(local_container: Container, clock: FakeClock) -> None:
    for i in range(5):
        reject_one(local_container, f"r{i}")
    clock.advance(NOTICE_DELAY)
    publisher = RecordingPublisher()

    assert redeliver(local_container, publisher, limit=3)["redelivered"] == 3
    assert redeliver(local_container, publisher, limit=3)["redelivered"] == 2
    assert sorted(codec.loads(m)["result"]["record_id"] for _, m, _ in publisher.published) == [
        f"r{i}" for i in range(5)
    ]


def test_the_rejection_subject_is_the_state_machines() -> None:
    definition = workflow.template()
    assert f'"Subject": "{REJECTION_SUBJECT}"' in definition
