"""The OrderStore's pipeline methods: finding pending orders' keys and reading them, claiming them for
a run, completing and releasing them, how claims protect orders from being replaced, and a run's
record of what it took and settled.

The first part runs once per adapter (SQLite and DynamoDB on moto), like the contract suite in
``test_order_store_contract.py``; the later parts cover what only one adapter has: DynamoDB's call
counts, its index and its retries under injected faults, and SQLite's index use.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from energy_auction.adapters.aws import (
    CLAIM_WORKERS,
    NOTICES_INDEX,
    ORDERS_KEY,
    PENDING_INDEX,
    PENDING_SHARDS,
    TIME_INDEX,
    TRADER_INDEX,
    DynamoDbOrderStore,
    index_shard,
    order_to_item,
)
from energy_auction.adapters.local import _PENDING_SQL, SqliteOrderStore
from energy_auction.backoff import Backoff
from energy_auction.errors import ClaimLost, OrdersAlreadyProcessed, StorageUnavailable
from energy_auction.orders import (
    ORDER_TTL_SECONDS,
    RETENTION_SECONDS,
    BatchTally,
    Decision,
    NoticeClaim,
    NoticeHold,
    Order,
    OrderStatus,
    RunRecord,
    iso_utc,
    settled_outcome,
)
from tests.adapters.stores import (
    MAX_ATTEMPTS,
    NOW,
    TABLE,
    StoreUnderTest,
    accepted,
    pending,
    processed,
    rejected,
)
from tests.builders import key, keys, pending_orders
from tests.fakes import FaultyClient, dynamodb_client

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LEASE = 600
ACCEPTED = {"status": "accepted", "power": Decimal("3.75"), "run_id": "run-1", "result_key": "orders/x.json"}


def claimed(order: Order, run_id: str, until: int) -> Order:
    """``order`` as it reads back once ``run_id`` holds it until ``until``."""
    return order.model_copy(update={"claim_run_id": run_id, "claim_expires_at": until})


def ids(orders: list[Order]) -> list[str]:
    return [o.record_id for o in orders]


# --- the contract, for both adapters -----------------------------------------------------------


def test_pending_keys_are_the_live_pending_orders_no_other_run_holds(subject: StoreUnderTest) -> None:
    # Given pending orders (two live, one expired exactly now, one expired long ago), processed orders,
    # an order run-1 holds, and one whose claim (run-0's) lapsed
    store = subject.store
    store.put_orders([pending("live-2", submitted=NOW - 60), pending("live-1", submitted=NOW - 120)], now=NOW)
    store.put_orders([pending("expired-now", submitted=NOW - ORDER_TTL_SECONDS)], now=NOW - 1)
    store.put_orders([pending("expired-old", submitted=NOW - 2 * ORDER_TTL_SECONDS)], now=NOW - 1)
    store.put_orders([processed("accepted"), processed("rejected", status=OrderStatus.REJECTED)], now=NOW)
    store.put_orders([pending("held"), pending("lapsed", submitted=NOW - 30)], now=NOW)
    store.claim_orders(keys(["held"]), "run-1", now=NOW, lease_seconds=LEASE)
    store.claim_orders(keys(["lapsed"]), "run-0", now=NOW - 1000, lease_seconds=LEASE)

    # When run-2 asks for the keys of the orders it may stage
    found = list(store.pending_keys(NOW, "run-2"))

    # Then it gets every live, pending one no other run holds, oldest expiry first: on SQLite exactly
    # those; on DynamoDB (a keys-only index, nothing filtered) also the expired undecided ones and
    # the one run-1 holds, each in its expiry's place
    claimable = keys(["live-1", "live-2", "lapsed"])
    if subject.kind == "sqlite":
        assert found == claimable
    else:
        assert found == keys(["expired-old", "expired-now", "live-1", "live-2", "lapsed", "held"])
    orders = store.get_orders(claimable)
    assert orders[0] == pending("live-1", submitted=NOW - 120)
    assert orders[2].claim_run_id == "run-0"  # the lapsed claim is still on it, and means nothing

    # And once the expired undecided ones are retired, no adapter yields them again; the live
    # orders retire_orders was also given are untouched
    store.retire_orders(keys(["expired-old", "expired-now", "live-1", "held"]), NOW)
    assert list(store.pending_keys(NOW, "run-2")) == (
        claimable if subject.kind == "sqlite" else keys(["live-1", "live-2", "lapsed", "held"])
    )
    assert store.get_orders(keys(["live-1"])) == [pending("live-1", submitted=NOW - 120)]

    # And run-1 gets its own live claim too (a retried batch claims it again), in its expiry's place
    assert list(store.pending_keys(NOW, "run-1")) == keys(["live-1", "live-2", "lapsed", "held"])


def test_no_orders_means_no_pending_keys(subject: StoreUnderTest) -> None:
    assert list(subject.store.pending_keys(NOW, "run-1")) == []


def test_pending_keys_come_oldest_expiry_first_across_every_shard_and_the_expired_decided_ones(
    subject: StoreUnderTest,
) -> None:
    # Given 24 live orders submitted in a shuffled order (so neither key nor write order is expiry
    # order), spread over every shard of DynamoDB's pending index
    store = subject.store
    submitted = list(range(24))
    random.Random(7).shuffle(submitted)
    live = {f"live-{i:02}": NOW - 1000 + 10 * at for i, at in enumerate(submitted)}
    for record_id, at in live.items():
        store.put_orders([pending(record_id, submitted=at)], now=at)
    # and three that expired while a dead run held them with the market's decision (claimable still:
    # a decision is carried out), and one that expired undecided (not claimable)
    expired = {f"decided-{i}": NOW - ORDER_TTL_SECONDS - 100 * (3 - i) for i in range(3)}
    for record_id, at in expired.items():
        store.put_orders([pending(record_id, submitted=at)], now=at)
        store.claim_orders(keys([record_id]), "run-0", at, LEASE, {key(record_id): accepted(at)})
    undecided_at = NOW - ORDER_TTL_SECONDS - 50
    store.put_orders([pending("undecided", submitted=undecided_at)], now=undecided_at)
    assert {index_shard(k) for k in keys(list(live))} == {str(s) for s in range(PENDING_SHARDS)}
    assert len({index_shard(k) for k in keys(list(expired))}) > 1

    # When a run asks for the keys it may claim
    found = list(store.pending_keys(NOW, "run-1"))

    # Then they come oldest expiry first: the expired decided ones, then the live ones, every shard
    # merged (on DynamoDB, whose index is keys only, the expired undecided one too, in its place)
    staged = (
        {**expired, **live} if subject.kind == "sqlite" else {**expired, **live, "undecided": undecided_at}
    )
    by_expiry = sorted(staged.items(), key=lambda item: item[1])
    assert found == keys([record_id for record_id, _ in by_expiry])


def test_get_orders_reads_the_orders_as_stored_now_in_the_order_of_the_keys(subject: StoreUnderTest) -> None:
    # Given 150 pending orders, one of them just claimed and another just replaced
    store = subject.store
    everything = [f"ord-{i:03}" for i in range(150)]
    for start in range(0, len(everything), 100):
        store.put_orders([pending(r) for r in everything[start : start + 100]], now=NOW)
    store.claim_orders(keys(["ord-007"]), "run-1", now=NOW, lease_seconds=LEASE)
    store.put_orders([pending("ord-042", parameter_1="lot-B", submitted=NOW + 5)], now=NOW + 5)

    # When a batch reads them, newest key first, with a key of no order among them
    wanted = [*reversed(everything[:75]), "nowhere", *reversed(everything[75:])]
    got = store.get_orders(keys(wanted))

    # Then it gets every stored one, in the order asked, as written last; the unknown key is left out
    assert ids(got) == [r for r in wanted if r != "nowhere"]
    by_id = {o.record_id: o for o in got}
    assert by_id["ord-007"] == claimed(pending("ord-007"), "run-1", NOW + LEASE)
    assert by_id["ord-042"] == pending("ord-042", parameter_1="lot-B", submitted=NOW + 5)
    assert by_id["ord-100"] == pending("ord-100")
    assert store.get_orders([]) == []


def test_a_claim_returns_the_orders_and_hides_them_until_the_lease_lapses(subject: StoreUnderTest) -> None:
    # Given three pending orders
    store = subject.store
    orders = [pending("ord-1"), pending("ord-2"), pending("ord-3")]
    store.put_orders(orders, now=NOW)

    # When a run claims two of them
    got = store.claim_orders(keys(["ord-2", "ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)

    # Then it gets them, in the order asked, carrying its claim
    assert got == [claimed(orders[1], "run-1", NOW + LEASE), claimed(orders[0], "run-1", NOW + LEASE)]
    # And they are out of another run's pending keys while the lease runs, but still readable
    assert ids(pending_orders(store, NOW)) == ["ord-3"]
    assert ids(pending_orders(store, NOW + LEASE - 1)) == ["ord-3"]
    assert store.get_order(key("ord-1")) == claimed(orders[0], "run-1", NOW + LEASE)
    # And once the lease lapses they are pending again
    assert set(ids(pending_orders(store, NOW + LEASE))) == {"ord-1", "ord-2", "ord-3"}


def test_a_run_cannot_claim_orders_another_run_holds(subject: StoreUnderTest) -> None:
    # Given run-1 holds two of three pending orders
    store = subject.store
    store.put_orders([pending("ord-1"), pending("ord-2"), pending("ord-3")], now=NOW)
    store.claim_orders(keys(["ord-1", "ord-2"]), "run-1", now=NOW, lease_seconds=LEASE)

    # When run-2 claims all three
    got = store.claim_orders(keys(["ord-1", "ord-2", "ord-3"]), "run-2", now=NOW + 5, lease_seconds=LEASE)

    # Then it gets only the free one, and run-1 keeps its claims
    assert ids(got) == ["ord-3"]
    held = store.get_order(key("ord-1"))
    assert (held.claim_run_id, held.claim_expires_at) == ("run-1", NOW + LEASE)

    # And once run-1's lease lapses, run-2 can take its orders
    later = store.claim_orders(keys(["ord-1", "ord-2"]), "run-2", now=NOW + LEASE, lease_seconds=LEASE)
    assert [(o.record_id, o.claim_run_id) for o in later] == [("ord-1", "run-2"), ("ord-2", "run-2")]


def test_the_same_run_claiming_again_gets_its_orders_with_a_renewed_lease(subject: StoreUnderTest) -> None:
    # Given run-1 claimed two orders (and a retried batch claims them again a minute later)
    store = subject.store
    store.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)
    first = store.claim_orders(keys(["ord-1", "ord-2"]), "run-1", now=NOW, lease_seconds=LEASE)

    # When the same run claims them again
    again = store.claim_orders(keys(["ord-1", "ord-2"]), "run-1", now=NOW + 60, lease_seconds=LEASE)

    # Then it gets the same orders, held until a minute later than before
    assert ids(again) == ids(first)
    assert {o.claim_expires_at for o in again} == {NOW + 60 + LEASE}


def test_a_claim_skips_processed_expired_unknown_and_repeated_orders(subject: StoreUnderTest) -> None:
    # Given a pending order, two processed ones and an expired pending one
    store = subject.store
    store.put_orders(
        [pending("ord-1"), processed("accepted"), processed("rejected", status=OrderStatus.REJECTED)], now=NOW
    )
    store.put_orders([pending("expired", submitted=NOW - ORDER_TTL_SECONDS)], now=NOW - 1)

    # When a run claims them all, an unknown one, and ord-1 twice
    got = store.claim_orders(
        keys(["accepted", "ord-1", "expired", "unknown", "rejected", "ord-1"]),
        "run-1",
        now=NOW,
        lease_seconds=LEASE,
    )

    # Then it holds only the live pending order, once; the others are unchanged
    assert got == [claimed(pending("ord-1"), "run-1", NOW + LEASE)]
    assert store.get_order(key("accepted")) == processed("accepted")
    assert store.get_order(key("expired")).claim_run_id is None
    assert store.get_order(key("unknown")) is None


def test_claiming_nothing_claims_nothing(subject: StoreUnderTest) -> None:
    assert subject.store.claim_orders(keys([]), "run-1", now=NOW, lease_seconds=LEASE) == []


def test_runs_claiming_the_same_orders_one_after_another_share_them_out(subject: StoreUnderTest) -> None:
    # Given 30 pending orders, and three runs that each want a different, overlapping slice
    store = subject.store
    store.put_orders([pending(f"ord-{i:02}") for i in range(30)], now=NOW)

    # When they claim one after another
    got = {
        run: ids(store.claim_orders(keys([f"ord-{i:02}" for i in wanted]), run, now=NOW, lease_seconds=LEASE))
        for run, wanted in [("run-a", range(0, 20)), ("run-b", range(10, 30)), ("run-c", range(30))]
    }

    # Then the first run gets its slice, the second what was left of its slice, the third nothing
    assert got == {
        "run-a": [f"ord-{i:02}" for i in range(20)],
        "run-b": [f"ord-{i:02}" for i in range(20, 30)],
        "run-c": [],
    }


def test_eight_runs_claiming_at_once_get_each_order_exactly_once(subject: StoreUnderTest) -> None:
    # Given 150 pending orders, and eight runs that each want all of them, in their own order
    store = subject.store
    everything = [f"ord-{i:03}" for i in range(150)]
    for start in range(0, len(everything), 100):
        store.put_orders([pending(r) for r in everything[start : start + 100]], now=NOW)
    runs = [f"run-{n}" for n in range(8)]
    start_together = threading.Barrier(len(runs))

    def claim(run: str) -> list[Order]:
        wanted = everything.copy()
        random.Random(run).shuffle(wanted)
        start_together.wait()
        result: list[Order] = store.claim_orders(keys(wanted), run, now=NOW, lease_seconds=LEASE)
        return result

    # When they all claim at the same time
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        got = dict(zip(runs, pool.map(claim, runs), strict=True))

    # Then every order went to exactly one run, the one the store records as holding it
    winners = [(o.record_id, run) for run, orders in got.items() for o in orders]
    assert sorted(r for r, _ in winners) == everything
    for record_id, run in winners:
        assert store.get_order(key(record_id)).claim_run_id == run
    assert pending_orders(store, NOW) == []


def test_completing_an_order_records_the_outcome_and_ends_the_claim(subject: StoreUnderTest) -> None:
    # Given run-1 holds two orders
    store = subject.store
    store.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)
    store.claim_orders(keys(["ord-1", "ord-2"]), "run-1", now=NOW, lease_seconds=LEASE)

    # When it completes one as accepted
    store.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, ACCEPTED)

    # Then the order has its status and outcome, exactly, and no claim
    assert store.get_order(key("ord-1")) == pending("ord-1").model_copy(
        update={"status": OrderStatus.ACCEPTED, "outcome": ACCEPTED}
    )
    # And it is not pending any more, not even after the lease would have lapsed
    assert ids(pending_orders(store, NOW + LEASE)) == ["ord-2"]
    # And it cannot be replaced while it lives
    with pytest.raises(OrdersAlreadyProcessed):
        store.put_orders([pending("ord-1", submitted=NOW + LEASE)], now=NOW + LEASE)


def test_completing_again_with_the_same_run_and_status_is_a_no_op(subject: StoreUnderTest) -> None:
    # Given run-1 completed an order as rejected
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)
    store.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)
    outcome = {"status": "rejected", "power": 0, "reason": "price too low", "run_id": "run-1"}
    store.complete_order(key("ord-1"), "run-1", OrderStatus.REJECTED, outcome)
    done = store.get_order(key("ord-1"))

    # When a retried ProcessOrder completes it again, the same way
    store.complete_order(key("ord-1"), "run-1", OrderStatus.REJECTED, outcome)

    # Then nothing changed
    assert store.get_order(key("ord-1")) == done

    # But completing it with another status is refused, and changes nothing either
    with pytest.raises(ClaimLost):
        store.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, outcome)
    assert store.get_order(key("ord-1")) == done


def test_the_stored_outcome_names_the_run_that_completed_the_order(subject: StoreUnderTest) -> None:
    # Given run-1 holds an order
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)
    store.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)

    # When it completes it with the outcome the use case settled (a float became its decimal)
    outcome = settled_outcome("run-1", OrderStatus.ACCEPTED, {"power": 2.5})
    store.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, outcome)

    # Then the stored outcome names the run, with the number kept exactly, and a retry is recognised
    assert store.get_order(key("ord-1")).outcome == {"power": Decimal("2.5"), "run_id": "run-1"}
    store.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, outcome)


def _held_by_another_run(store: Any) -> None:
    store.claim_orders(keys(["ord-1"]), "run-2", now=NOW, lease_seconds=LEASE)


def _never_claimed(store: Any) -> None:
    pass


def _released(store: Any) -> None:
    store.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)
    store.release_order(key("ord-1"), "run-1")


def _replaced_after_the_lease_lapsed(store: Any) -> None:
    store.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)
    store.put_orders([pending("ord-1", submitted=NOW + LEASE)], now=NOW + LEASE)


def _completed_by_another_run(store: Any) -> None:
    store.claim_orders(keys(["ord-1"]), "run-2", now=NOW, lease_seconds=LEASE)
    store.complete_order(key("ord-1"), "run-2", OrderStatus.ACCEPTED, {**ACCEPTED, "run_id": "run-2"})


@pytest.mark.parametrize(
    "situation",
    [
        _held_by_another_run,
        _never_claimed,
        _released,
        _replaced_after_the_lease_lapsed,
        _completed_by_another_run,
    ],
    ids=["held-by-another-run", "never-claimed", "released", "replaced-by-a-put", "completed-by-another-run"],
)
def test_completing_an_order_the_run_does_not_hold_raises_claim_lost(
    subject: StoreUnderTest, situation: Callable[[Any], None]
) -> None:
    # Given an order that run-1 does not hold (for one reason or another)
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)
    situation(store)
    before = store.get_order(key("ord-1"))

    # When run-1 completes it
    with pytest.raises(ClaimLost):
        store.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, ACCEPTED)

    # Then the order is unchanged
    assert store.get_order(key("ord-1")) == before


def test_completing_an_unknown_order_raises_claim_lost(subject: StoreUnderTest) -> None:
    with pytest.raises(ClaimLost):
        subject.store.complete_order(key("nowhere"), "run-1", OrderStatus.ACCEPTED, ACCEPTED)
    assert subject.stored_ids() == set()


def test_releasing_an_order_makes_it_pending_again(subject: StoreUnderTest) -> None:
    # Given run-1 holds two orders
    store = subject.store
    store.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)
    store.claim_orders(keys(["ord-1", "ord-2"]), "run-1", now=NOW, lease_seconds=LEASE)

    # When it gives one back
    store.release_order(key("ord-1"), "run-1")

    # Then that one is pending with no claim, at once, and another run may claim it
    assert ids(pending_orders(store, NOW)) == ["ord-1"]
    assert store.get_order(key("ord-1")) == pending("ord-1")
    assert ids(store.claim_orders(keys(["ord-1"]), "run-2", now=NOW, lease_seconds=LEASE)) == ["ord-1"]


def test_releasing_is_a_no_op_for_a_run_that_does_not_hold_the_order(subject: StoreUnderTest) -> None:
    # Given run-1 holds an order, and another order was completed
    store = subject.store
    store.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)
    store.claim_orders(keys(["ord-1", "ord-2"]), "run-1", now=NOW, lease_seconds=LEASE)
    store.complete_order(key("ord-2"), "run-1", OrderStatus.ACCEPTED, ACCEPTED)
    held, done = store.get_order(key("ord-1")), store.get_order(key("ord-2"))

    # When run-2 releases the held one, run-1 releases the completed one, and anyone an unknown one
    store.release_order(key("ord-1"), "run-2")
    store.release_order(key("ord-2"), "run-1")
    store.release_order(key("unknown"), "run-1")

    # Then nothing changed
    assert store.get_order(key("ord-1")) == held
    assert store.get_order(key("ord-2")) == done
    assert subject.stored_ids() == {"ord-1", "ord-2"}


def test_a_put_refuses_claimed_orders_but_replaces_one_whose_claim_lapsed(subject: StoreUnderTest) -> None:
    # Given run-1 holds an order
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)
    store.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)

    # When a trader resubmits it with a new order, while the claim runs
    with pytest.raises(OrdersAlreadyProcessed) as refused:
        store.put_orders([pending("new"), pending("ord-1", submitted=NOW + 10)], now=NOW + 10)

    # Then the request is refused whole (409), naming the held order
    assert refused.value.record_ids == ["ord-1"]
    assert subject.stored_ids() == {"ord-1"}
    assert store.get_order(key("ord-1")) == claimed(pending("ord-1"), "run-1", NOW + LEASE)

    # When it is resubmitted once the claim has lapsed
    fresh = pending("ord-1", parameter_1="lot-B", submitted=NOW + LEASE)
    store.put_orders([fresh], now=NOW + LEASE)

    # Then it is replaced: a pending order with no claim
    assert store.get_order(key("ord-1")) == fresh
    assert pending_orders(store, NOW + LEASE) == [fresh]


def test_a_put_replaces_a_released_order(subject: StoreUnderTest) -> None:
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)
    store.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)
    store.release_order(key("ord-1"), "run-1")

    fresh = pending("ord-1", parameter_2=7, submitted=NOW + 1)
    store.put_orders([fresh], now=NOW + 1)

    assert store.get_order(key("ord-1")) == fresh


def test_a_runs_record_holds_what_it_took_and_the_sum_of_its_batches(subject: StoreUnderTest) -> None:
    # Given a run that staged 250 orders and left 40 for the next run
    store = subject.store
    assert store.run_record("run-1") == RunRecord()
    store.begin_run("run-1", 250, 40, NOW)
    assert store.run_record("run-1") == RunRecord(staged=250, left=40, settled=BatchTally())

    # When three of its batches are recorded (one of them had nothing left to settle), and another
    # run's one
    store.record_batch("run-1", 0, BatchTally(accepted=3, rejected=1, batches=1))
    store.record_batch("run-1", 1, BatchTally(accepted=2, failed=1, batches=1))
    store.record_batch("run-1", 2, BatchTally(batches=1))
    store.begin_run("run-2", 1, 0, NOW + 60)
    store.record_batch("run-2", 0, BatchTally(rejected=1, batches=1))

    # Then each run's record adds up its own batches
    record = store.run_record("run-1")
    assert record == RunRecord(250, 40, BatchTally(accepted=5, rejected=1, failed=1, batches=3))
    assert record.settled.orders == 7
    assert store.run_record("run-2") == RunRecord(1, 0, BatchTally(rejected=1, batches=1))
    # And a run nobody began is all zeros, and no order was touched
    assert store.run_record("run-3") == RunRecord()
    assert subject.stored_ids() == set()


# --- DynamoDB only: the index, call counts, retries under injected faults -----------------------


def _put_many(store: DynamoDbOrderStore, record_ids: list[str]) -> None:
    for start in range(0, len(record_ids), 100):
        store.put_orders([pending(r) for r in record_ids[start : start + 100]], now=NOW)


def _seed(faulty: FaultyClient, orders: list[Order]) -> None:
    """Write items as the store would, uncounted and unconditioned (much faster on moto)."""
    for start in range(0, len(orders), 25):
        batch = orders[start : start + 25]
        faulty.real.batch_write_item(
            RequestItems={TABLE: [{"PutRequest": {"Item": order_to_item(o)}} for o in batch]}
        )


def _raw_item(faulty: FaultyClient, record_id: str) -> dict[str, Any]:
    item: dict[str, Any] = faulty.real.get_item(
        TableName=TABLE, Key={ORDERS_KEY: {"S": key(record_id)}}, ConsistentRead=True
    )["Item"]
    return item


def _item_size(faulty: FaultyClient, record_id: str) -> int:
    """An order's item size as DynamoDB counts it toward a query page: its names and values (the item
    of a pending order is flat)."""
    item = _raw_item(faulty, record_id)
    return sum(len(name.encode()) + len(str(*value.values()).encode()) for name, value in item.items())


def test_dynamodb_table_has_the_sparse_pending_and_owed_notices_indexes(faulty: FaultyClient) -> None:
    # The table these tests run on is the one tests/infra checks the stack deploys
    table = faulty.real.describe_table(TableName=TABLE)["Table"]

    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {PENDING_INDEX, NOTICES_INDEX, TRADER_INDEX, TIME_INDEX}
    for listing, partition in ((TRADER_INDEX, "trader_key"), (TIME_INDEX, "list_shard")):
        assert indexes[listing]["KeySchema"] == [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": "listed_at", "KeyType": "RANGE"},
        ]
        assert indexes[listing]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert indexes[PENDING_INDEX]["KeySchema"] == [
        {"AttributeName": "pending_shard", "KeyType": "HASH"},
        {"AttributeName": "expires_at", "KeyType": "RANGE"},
    ]
    assert indexes[PENDING_INDEX]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert indexes[NOTICES_INDEX]["KeySchema"] == [
        {"AttributeName": "notice_shard", "KeyType": "HASH"},
        {"AttributeName": "notice_due_at", "KeyType": "RANGE"},
    ]
    assert indexes[NOTICES_INDEX]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert types == {
        "order_key": "S",
        "pending_shard": "S",
        "expires_at": "N",
        "notice_shard": "S",
        "notice_due_at": "N",
        "trader_key": "S",
        "list_shard": "S",
        "listed_at": "S",
    }


def test_dynamodb_pending_keys_query_each_shard_and_never_scan(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given 40 pending orders, spread over the index shards
    _put_many(dynamo, [f"ord-{i:02}" for i in range(40)])
    faulty.calls.clear()

    # When the pipeline reads the pending keys
    found = list(dynamo.pending_keys(NOW, "run-1"))

    # Then it ran two queries per shard on the index (the live orders, and the expired ones), and
    # nothing else
    assert len(found) == 40
    assert faulty.calls == {"query": 16}


def test_dynamodb_pending_keys_read_every_page(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 60 pending orders, and a query page size (1 MB on DynamoDB) that holds about two items
    _put_many(dynamo, [f"ord-{i:02}" for i in range(60)])
    monkeypatch.setattr("moto.dynamodb.models.table.RESULT_SIZE_LIMIT", 800)
    faulty.calls.clear()

    # When the pipeline reads the pending keys
    found = list(dynamo.pending_keys(NOW, "run-1"))

    # Then it followed LastEvaluatedKey through every page of every shard
    assert sorted(found) == keys([f"ord-{i:02}" for i in range(60)])
    assert faulty.calls["query"] > 16
    assert faulty.calls["scan"] == 0


def test_dynamodb_pending_keys_stream_a_page_per_query_as_they_are_taken(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 400 pending orders, submitted a second apart, and query pages (1 MB on DynamoDB) that
    # hold about ten of them: each shard's live orders take several pages
    everything = [f"ord-{i:03}" for i in range(400)]
    _seed(faulty, [pending(r, submitted=NOW - 400 + i) for i, r in enumerate(everything)])
    monkeypatch.setattr("moto.dynamodb.models.table.RESULT_SIZE_LIMIT", 10 * _item_size(faulty, "ord-000"))
    faulty.calls.clear()

    # When FetchResults takes the first five keys
    stream = dynamo.pending_keys(NOW, "run-1")
    first = list(itertools.islice(stream, 5))

    # Then they are the five oldest, for one page of each of the 16 queries and nothing more
    assert first == keys(everything[:5])
    assert faulty.calls == {"query": 16}

    # And taking the rest reads the other pages, each order once, oldest first
    assert [*first, *stream] == keys(everything)
    assert faulty.calls["query"] > 16 + PENDING_SHARDS


def test_dynamodb_claims_a_thousand_orders_with_one_update_each_and_no_read_back(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given 1,000 pending orders, and a note of each update's request
    everything = [f"ord-{i:04}" for i in range(1000)]
    _seed(faulty, [pending(r) for r in everything])
    requests: list[dict[str, Any]] = []

    def seen(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        requests.append(request)
        return response

    faulty.transform("update_item", seen, times=len(everything))

    # When a run claims them all
    got = dynamo.claim_orders(keys(everything), "run-1", now=NOW, lease_seconds=LEASE)

    # Then it has them all, in the order asked, as the updates answered them: one conditional
    # update per order (no transaction), no read after them
    assert got == [claimed(pending(r), "run-1", NOW + LEASE) for r in everything]
    assert faulty.calls == {"update_item": 1000}
    assert {r["ReturnValues"] for r in requests} == {"ALL_NEW"}
    assert sorted(r["Key"][ORDERS_KEY]["S"] for r in requests) == keys(everything)
    assert {r["UpdateExpression"] for r in requests} == {"SET claim_run_id = :run, claim_expires_at = :until"}


class _InFlight:
    """A client that counts the update_item calls in flight at once (each takes a few ms), and
    fails every update of ``failing`` keys with throttling."""

    def __init__(self, client: Any, failing: frozenset[str] = frozenset()) -> None:
        self._client = client
        self._failing = failing
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **request: Any) -> Any:
        with self._lock:
            self.calls += 1
        if request["Key"][ORDERS_KEY]["S"] in self._failing:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem"
            )
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            time.sleep(0.002)
            return self._client.update_item(**request)
        finally:
            with self._lock:
                self._now -= 1


def test_dynamodb_claim_has_a_few_updates_in_flight_at_once(faulty: FaultyClient) -> None:
    # Given 100 pending orders (a batch), and a client that counts the updates in flight
    everything = [f"ord-{i:03}" for i in range(100)]
    _seed(faulty, [pending(r) for r in everything])
    client = _InFlight(faulty)
    store = DynamoDbOrderStore(
        cast("DynamoDBClient", client), TABLE, Backoff(max_attempts=MAX_ATTEMPTS, base_delay=0)
    )

    # When a run claims them
    got = store.claim_orders(keys(everything), "run-1", now=NOW, lease_seconds=LEASE)

    # Then it claimed them all with several updates at once, never more than its workers
    assert ids(got) == everything
    assert 1 < client.most <= CLAIM_WORKERS


def _owed_notices(faulty: FaultyClient, record_ids: list[str]) -> None:
    """Rejected orders of run-1 whose notices are owed."""
    store = DynamoDbOrderStore(
        cast("DynamoDBClient", faulty), TABLE, Backoff(max_attempts=MAX_ATTEMPTS, base_delay=0)
    )
    _seed(faulty, [pending(r) for r in record_ids])
    store.claim_orders(
        keys(record_ids),
        "run-1",
        now=NOW,
        lease_seconds=LEASE,
        decisions={key(r): rejected(NOW) for r in record_ids},
    )
    for record_id in record_ids:
        store.complete_order(
            key(record_id), "run-1", OrderStatus.REJECTED, {"run_id": "run-1"}, notice_due_at=NOW
        )


def test_dynamodb_takes_a_notifier_batch_of_notices_a_few_updates_at_once(faulty: FaultyClient) -> None:
    # Given 100 rejected orders whose notices are owed, and a client that counts updates in flight
    everything = [f"ord-{i:03}" for i in range(100)]
    _owed_notices(faulty, everything)
    client = _InFlight(faulty)
    counted = DynamoDbOrderStore(
        cast("DynamoDBClient", client), TABLE, Backoff(max_attempts=MAX_ATTEMPTS, base_delay=0)
    )
    holds = [NoticeHold(key(r), "run-1", "d-1") for r in everything]

    # When a notifier takes them all, then records them delivered
    claims = counted.claim_notices(holds, NOW, 300)
    counted.finish_notices(holds, delivered=True)

    # Then every one was taken and finished, several updates at once, never more than the workers
    assert claims == [NoticeClaim.CLAIMED] * 100
    assert 1 < client.most <= CLAIM_WORKERS
    assert counted.overdue_notices(NOW + 10**6, 1000) == []


def test_dynamodb_one_notice_the_table_fails_on_leaves_the_others_taken_and_finished(
    faulty: FaultyClient,
) -> None:
    # Given 40 owed notices, and a table that keeps throttling the updates of one of them
    everything = [f"ord-{i:03}" for i in range(40)]
    _owed_notices(faulty, everything)
    client = _InFlight(faulty, failing=frozenset({key("ord-005")}))
    store = DynamoDbOrderStore(
        cast("DynamoDBClient", client), TABLE, Backoff(max_attempts=MAX_ATTEMPTS, base_delay=0)
    )
    holds = [NoticeHold(key(r), "run-1", "d-1") for r in everything]

    # When a notifier takes them: that one has no answer, every other is taken
    claims = store.claim_notices(holds, NOW, 300)
    assert claims[5] is None
    assert claims[:5] + claims[6:] == [NoticeClaim.CLAIMED] * 39

    # When it records them all delivered, every other is recorded, and the failure is raised after
    with pytest.raises(StorageUnavailable, match="1 of 40"):
        store.finish_notices(holds, delivered=True)
    assert [o.record_id for o in store.overdue_notices(NOW + 10**6, 1000)] == ["ord-005"]


def test_dynamodb_a_failing_table_costs_a_notifier_batch_about_one_round_of_retries(
    faulty: FaultyClient,
) -> None:
    # Given 200 owed notices, and a table that throttles every update
    everything = [f"ord-{i:03}" for i in range(200)]
    _owed_notices(faulty, everything)
    client = _InFlight(faulty, failing=frozenset(keys(everything)))
    store = DynamoDbOrderStore(
        cast("DynamoDBClient", client), TABLE, Backoff(max_attempts=MAX_ATTEMPTS, base_delay=0)
    )
    holds = [NoticeHold(key(r), "run-1", "d-1") for r in everything]

    # When a notifier takes them, and gives them back
    claims = store.claim_notices(holds, NOW, 300)
    taking = client.calls
    with pytest.raises(StorageUnavailable, match="200 of 200"):
        store.finish_notices(holds, delivered=False)

    # Then none is taken, and each step stopped trying after the workers' first round had failed
    assert claims == [None] * 200
    assert taking <= 2 * CLAIM_WORKERS * MAX_ATTEMPTS < 200 * MAX_ATTEMPTS
    assert client.calls - taking <= 2 * CLAIM_WORKERS * MAX_ATTEMPTS


def test_dynamodb_claims_the_free_half_of_orders_without_retrying_failed_conditions(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, sleeps: list[float]
) -> None:
    # Given 500 pending orders, every other one held by another run
    everything = [f"ord-{i:03}" for i in range(500)]
    _seed(faulty, [claimed(pending(r), "run-0", NOW + LEASE) for r in everything[::2]])
    _seed(faulty, [pending(r) for r in everything[1::2]])

    # When a run claims them all
    got = dynamo.claim_orders(keys(everything), "run-1", now=NOW, lease_seconds=LEASE)

    # Then it has the free half, one update per order: a failed condition is no claim, not retried
    assert ids(got) == everything[1::2]
    assert faulty.calls == {"update_item": 500}
    assert sleeps == []
    assert {o.claim_run_id for o in dynamo.get_orders(keys(everything[::2]))} == {"run-0"}


def test_dynamodb_claim_retries_throttling_with_backoff(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, sleeps: list[float]
) -> None:
    # Given three pending orders, and two updates throttled
    _seed(faulty, [pending("ord-1"), pending("ord-2"), pending("ord-3")])
    faulty.fail("update_item", error_code="ThrottlingException", times=2)

    # When a run claims them
    got = dynamo.claim_orders(keys(["ord-1", "ord-2", "ord-3"]), "run-1", now=NOW, lease_seconds=LEASE)

    # Then the throttled updates were retried, after a pause each, and it holds all three
    assert ids(got) == ["ord-1", "ord-2", "ord-3"]
    assert faulty.calls["update_item"] == 5
    assert len(sleeps) == 2


def test_dynamodb_claim_that_keeps_being_throttled_gives_storage_unavailable(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    _seed(faulty, [pending("ord-1")])
    faulty.fail("update_item", error_code="ThrottlingException", times=MAX_ATTEMPTS)

    with pytest.raises(StorageUnavailable):
        dynamo.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)

    assert faulty.calls["update_item"] == MAX_ATTEMPTS
    assert dynamo.get_order(key("ord-1")) == pending("ord-1")


def test_dynamodb_claim_that_fails_part_way_is_taken_again_by_the_same_run(faulty: FaultyClient) -> None:
    # Given three pending orders, and storage that keeps refusing the update of the second
    _seed(faulty, [pending("ord-1"), pending("ord-2"), pending("ord-3")])
    backoff = Backoff(max_attempts=MAX_ATTEMPTS, base_delay=0)
    failing = DynamoDbOrderStore(
        cast("DynamoDBClient", _InFlight(faulty, frozenset(keys(["ord-2"])))), TABLE, backoff
    )

    # When a run claims them, it gets StorageUnavailable (the others may be claimed already)
    with pytest.raises(StorageUnavailable):
        failing.claim_orders(keys(["ord-1", "ord-2", "ord-3"]), "run-1", now=NOW, lease_seconds=LEASE)
    assert failing.get_order(key("ord-2")) == pending("ord-2")

    # Then the same run claiming again, once storage answers, gets all three
    store = DynamoDbOrderStore(dynamodb_client(faulty), TABLE, backoff)
    again = store.claim_orders(keys(["ord-1", "ord-2", "ord-3"]), "run-1", now=NOW + 1, lease_seconds=LEASE)
    assert ids(again) == ["ord-1", "ord-2", "ord-3"]


def test_dynamodb_claim_whose_answer_was_lost_is_claimed_on_retry(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, sleeps: list[float]
) -> None:
    # Given a pending order, and a claim update that commits but whose answer is lost
    _seed(faulty, [pending("ord-1")])

    def lost(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        raise EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")

    faulty.transform("update_item", lost)
    decided = accepted(NOW)

    # When a run claims it, with the market's decision
    got = dynamo.claim_orders(
        keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE, decisions={key("ord-1"): decided}
    )

    # Then the retry's condition accepts the run's own claim: claimed once, with the decision
    assert got == [claimed(pending("ord-1"), "run-1", NOW + LEASE).model_copy(update={"decision": decided})]
    assert faulty.calls["update_item"] == 2
    assert len(sleeps) == 1


def test_dynamodb_complete_retries_throttling(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, sleeps: list[float]
) -> None:
    # Given run-1 holds an order, and DynamoDB throttles the first two updates
    dynamo.put_orders([pending("ord-1")], now=NOW)
    dynamo.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)
    faulty.calls.clear()  # the claim is an update too
    faulty.fail("update_item", error_code="ThrottlingException", times=2)

    # When it completes the order
    dynamo.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, ACCEPTED)

    # Then the third update did it, after two pauses
    assert faulty.calls["update_item"] == 3
    assert len(sleeps) == 2
    completed = dynamo.get_order(key("ord-1"))
    assert completed is not None
    assert completed.status is OrderStatus.ACCEPTED


def test_dynamodb_complete_that_keeps_being_throttled_gives_storage_unavailable(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given run-1 holds an order, and DynamoDB throttles every update
    dynamo.put_orders([pending("ord-1")], now=NOW)
    dynamo.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)
    faulty.calls.clear()  # the claim is an update too
    faulty.fail("update_item", error_code="ThrottlingException", times=MAX_ATTEMPTS)

    # When it completes the order
    with pytest.raises(StorageUnavailable):
        dynamo.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, ACCEPTED)

    # Then it gave up after max_attempts; the order is still pending and held by run-1
    assert faulty.calls["update_item"] == MAX_ATTEMPTS
    assert dynamo.get_order(key("ord-1")) == claimed(pending("ord-1"), "run-1", NOW + LEASE)


def test_dynamodb_complete_whose_answer_was_lost_succeeds_on_retry(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given run-1 holds an order, and the connection drops after DynamoDB applied the first update
    dynamo.put_orders([pending("ord-1")], now=NOW)
    dynamo.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)
    faulty.calls.clear()  # the claim is an update too

    def lose_the_answer(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    faulty.transform("update_item", lose_the_answer)

    # When it completes the order
    dynamo.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, ACCEPTED)

    # Then the retry found its own outcome already there and succeeded
    assert faulty.calls["update_item"] == 2
    completed = dynamo.get_order(key("ord-1"))
    assert completed is not None
    assert completed.outcome == ACCEPTED


def test_dynamodb_item_shape_through_the_pipeline(dynamo: DynamoDbOrderStore, faulty: FaultyClient) -> None:
    # Given a pending order: it is in the index
    dynamo.put_orders([pending("ord-1")], now=NOW)
    shard = _raw_item(faulty, "ord-1")["pending_shard"]
    assert shard in [{"S": str(n)} for n in range(8)]

    # When a run claims it, it stays in the index, with the claim as plain attributes
    dynamo.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE)
    item = _raw_item(faulty, "ord-1")
    assert item["pending_shard"] == shard
    assert item["claim_run_id"] == {"S": "run-1"}
    assert item["claim_expires_at"] == {"N": str(NOW + LEASE)}

    # When the run completes it as rejected, it leaves the pending index and enters the owed-notices
    # index (the outbox), and the claim is gone; the outcome is a map; the TTL keeps it 14 days
    # longer, so every copy of its notice is recognised
    outcome = {"power": Decimal("0.5"), "run_id": "run-1"}
    dynamo.complete_order(key("ord-1"), "run-1", OrderStatus.REJECTED, outcome, notice_due_at=NOW + 900)
    item = _raw_item(faulty, "ord-1")
    assert set(item) == {
        "order_key",
        "record_id",
        "trader",
        "trader_key",
        "listed_at",
        "list_shard",
        "parameter_1",
        "parameter_2",
        "status",
        "submitted_at",
        "expires_at",
        "purge_at",
        "outcome",
        "notice_due_at",
        "notice_shard",
    }
    assert int(item["purge_at"]["N"]) == int(item["expires_at"]["N"]) + RETENTION_SECONDS
    assert item["status"] == {"S": "rejected"}
    assert item["outcome"] == {"M": {"power": {"N": "0.5"}, "run_id": {"S": "run-1"}}}
    assert (item["notice_due_at"], item["notice_shard"]) == ({"N": str(NOW + 900)}, shard)

    # When the notifier has delivered its notice, it leaves the owed-notices index too
    assert dynamo.claim_notices([NoticeHold(key("ord-1"), "run-1", "delivery-1")], NOW + 1, 300) == [
        NoticeClaim.CLAIMED
    ]
    dynamo.finish_notices([NoticeHold(key("ord-1"), "run-1", "delivery-1")], delivered=True)
    assert set(_raw_item(faulty, "ord-1")) == set(item) - {"notice_due_at", "notice_shard"}


def test_dynamodb_processed_orders_are_stored_outside_the_index(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    dynamo.put_orders([processed("ord-1")], now=NOW)

    assert "pending_shard" not in _raw_item(faulty, "ord-1")


def test_dynamodb_records_a_batch_in_a_transaction_whose_token_is_the_run_and_batch(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given a run's record, and a connection that drops once after DynamoDB applied the write
    dynamo.begin_run("run-1", 3, 0, NOW)
    requests: list[dict[str, Any]] = []

    def seen(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        requests.append(request)
        return response

    def seen_then_lost(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        requests.append(request)
        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    faulty.transform("transact_write_items", seen_then_lost).transform("transact_write_items", seen, times=3)

    # When batch 0 is recorded (and the store retries it), then batch 1, and run-2's batch 0
    dynamo.record_batch("run-1", 0, BatchTally(accepted=1, batches=1))
    dynamo.record_batch("run-1", 1, BatchTally(rejected=2, batches=1))
    dynamo.begin_run("run-2", 1, 0, NOW)
    dynamo.record_batch("run-2", 0, BatchTally(accepted=1, batches=1))

    # Then each write is one transaction with a ClientRequestToken: the same for the retry of a
    # batch, so DynamoDB applies it once (for ten minutes; a child execution lasts five), and its
    # own for every other batch of every run
    tokens = [r["ClientRequestToken"] for r in requests]
    assert len(tokens) == 4
    assert tokens[0] == tokens[1]
    assert len(set(tokens[1:])) == 3
    assert all(0 < len(t) <= 36 for t in tokens)  # DynamoDB's limit
    # moto 5.2.5 ignores ClientRequestToken (it applies a repeat again), so that a repeat counts
    # once is tested on SQLite only; here, that one record counts once and that batches add up
    assert dynamo.run_record("run-2") == RunRecord(1, 0, BatchTally(accepted=1, batches=1))
    assert dynamo.run_record("run-1").settled.rejected == 2


@pytest.mark.parametrize(
    "fault",
    [
        {"error_code": "ThrottlingException"},
        {"error_code": "TransactionCanceledException", "cancellation_reasons": ["TransactionConflict"]},
    ],
    ids=["throttled", "conflicting-with-another-batchs-record"],
)
def test_dynamodb_a_batch_record_that_meets_a_transient_failure_is_retried(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, sleeps: list[float], fault: dict[str, Any]
) -> None:
    # Given a run's record, and DynamoDB failing the first write of a batch's counts for a passing
    # reason: throttling, or another batch of the run adding to the same item at that moment (every
    # batch of a run writes its counts to that one item, MaxConcurrency of them at a time)
    dynamo.begin_run("run-1", 4, 0, NOW)
    faulty.fail("transact_write_items", **fault)

    # When the batch is recorded
    dynamo.record_batch("run-1", 0, BatchTally(accepted=3, rejected=1, batches=1))

    # Then the write was retried after a pause, as the store's other transactions are, and counts
    assert faulty.calls["transact_write_items"] == 2
    assert len(sleeps) == 1
    assert dynamo.run_record("run-1") == RunRecord(4, 0, BatchTally(accepted=3, rejected=1, batches=1))


@pytest.mark.parametrize("consistent", [True, False])
def test_dynamodb_get_orders_reads_a_hundred_keys_a_call_consistent_as_asked(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient, consistent: bool
) -> None:
    # Given 250 pending orders, and a note of each batch read's request
    everything = [f"ord-{i:03}" for i in range(250)]
    _seed(faulty, [pending(r) for r in everything])
    requests: list[dict[str, Any]] = []

    def seen(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        requests.append(request["RequestItems"][TABLE])
        return response

    faulty.transform("batch_get_item", seen, times=3)
    faulty.calls.clear()

    # When a batch reads them
    got = (
        dynamo.get_orders(keys(everything))
        if consistent
        else dynamo.get_orders(keys(everything), consistent=False)
    )

    # Then it read them in three calls, each strongly consistent by default, eventually consistent
    # (half the read units) when asked
    assert ids(got) == everything
    assert faulty.calls == {"batch_get_item": 3}
    assert [(len(r["Keys"]), r["ConsistentRead"]) for r in requests] == [
        (100, consistent),
        (100, consistent),
        (50, consistent),
    ]


def test_dynamodb_a_runs_record_is_in_no_index_and_kept_fourteen_days(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given a pending order, a rejected one whose notice is owed, and a run's record with a batch
    dynamo.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)
    dynamo.claim_orders(keys(["ord-2"]), "run-0", now=NOW, lease_seconds=LEASE)
    outcome = {"power": 0, "run_id": "run-0"}
    dynamo.complete_order(key("ord-2"), "run-0", OrderStatus.REJECTED, outcome, notice_due_at=NOW)
    dynamo.begin_run("run-1", 2, 0, NOW)
    dynamo.record_batch("run-1", 0, BatchTally(accepted=2, batches=1))

    # Then the run's item has its counts and a time to live, and no attribute that would put it in
    # an index
    item = faulty.real.get_item(TableName=TABLE, Key={ORDERS_KEY: {"S": "run#run-1"}}, ConsistentRead=True)
    assert set(item["Item"]) == {
        "order_key",
        "staged",
        "left",
        "accepted",
        "rejected",
        "failed",
        "batches",
        "purge_at",
    }
    assert item["Item"]["purge_at"] == {"N": str(NOW + RETENTION_SECONDS)}
    # And no index holds it, nor does any read of the pipeline
    for index in (PENDING_INDEX, NOTICES_INDEX, TRADER_INDEX, TIME_INDEX):
        indexed = faulty.real.scan(TableName=TABLE, IndexName=index)["Items"]
        assert indexed, index
        assert all(not i[ORDERS_KEY]["S"].startswith("run#") for i in indexed), index
    assert list(dynamo.pending_keys(NOW, "run-1")) == keys(["ord-1"])
    assert ids(dynamo.overdue_notices(NOW, 10)) == ["ord-2"]


# --- SQLite only: the index, columns in step with the document ----------------


def test_sqlite_pending_keys_use_the_status_index(sqlite_store: StoreUnderTest, sqlite_path: Path) -> None:
    page = {"now": NOW, "run": "run-1", "limit": 1000, "after_expiry": -1, "after_key": ""}
    with sqlite3.connect(sqlite_path) as raw:
        plan = " ".join(row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {_PENDING_SQL}", page))
    raw.close()

    assert "USING INDEX orders_by_status" in plan


def test_sqlite_pending_keys_go_on_across_pages_by_expiry_then_key(sqlite_store: StoreUnderTest) -> None:
    # Given 2,500 pending orders (more than two pages of the store's reads) submitted in three
    # seconds, every third key in the same second: many expire together, and key order is not expiry
    # order
    store: SqliteOrderStore = sqlite_store.store
    everything = {f"ord-{i:04}": NOW - i % 3 for i in range(2500)}
    records = list(everything)
    for start in range(0, len(records), 100):
        batch = records[start : start + 100]
        store.put_orders([pending(r, submitted=everything[r]) for r in batch], now=NOW)
    by_expiry = sorted(records, key=lambda r: (everything[r], key(r)))

    # When a run reads their keys, and another run claims a hundred of the last page's meanwhile
    stream = store.pending_keys(NOW, "run-1")
    first = list(itertools.islice(stream, 1200))
    taken = set(by_expiry[2100:2200])
    store.claim_orders(keys(sorted(taken)), "run-2", now=NOW, lease_seconds=LEASE)

    # Then every other key comes once, by expiry then key, across the pages: each page is read when
    # it is reached, as the store is then
    assert [*first, *stream] == keys([r for r in by_expiry if r not in taken])


def test_sqlite_claim_columns_stay_in_step_with_the_document(
    sqlite_store: StoreUnderTest, sqlite_path: Path
) -> None:
    store: SqliteOrderStore = sqlite_store.store

    def columns_and_document() -> list[tuple[Any, ...]]:
        with sqlite3.connect(sqlite_path) as raw:
            rows = raw.execute(
                "SELECT status, expires_at, claim_run_id, claim_expires_at, document FROM orders"
                " ORDER BY record_id"
            ).fetchall()
        raw.close()
        for status, expires_at, run_id, until, document in rows:
            order = Order.model_validate_json(document)
            assert (status, expires_at, run_id, until) == (
                order.status.value,
                order.expires_at,
                order.claim_run_id,
                order.claim_expires_at,
            )
        return [row[:4] for row in rows]

    # Given orders that go through every step of the pipeline
    store.put_orders([pending("ord-1"), pending("ord-2")], now=NOW)
    store.claim_orders(keys(["ord-1", "ord-2"]), "run-1", now=NOW, lease_seconds=LEASE)
    assert columns_and_document() == [("pending", NOW + ORDER_TTL_SECONDS, "run-1", NOW + LEASE)] * 2

    store.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, ACCEPTED)
    store.release_order(key("ord-2"), "run-1")

    # Then the columns say what the document says, at every step
    assert columns_and_document() == [
        ("accepted", NOW + ORDER_TTL_SECONDS, None, None),
        ("pending", NOW + ORDER_TTL_SECONDS, None, None),
    ]


def test_sqlite_runs_in_two_processes_claim_each_order_once(sqlite_path: Path) -> None:
    # Given four stores on one file (like run-pipeline processes) and 200 pending orders
    stores = [SqliteOrderStore(sqlite_path) for _ in range(4)]
    everything = [f"ord-{i:03}" for i in range(200)]
    stores[0].put_orders([pending(r) for r in everything[:100]], now=NOW)
    stores[0].put_orders([pending(r) for r in everything[100:]], now=NOW)
    start_together = threading.Barrier(len(stores))

    def claim(n: int) -> list[str]:
        start_together.wait()
        return ids(stores[n].claim_orders(keys(everything), f"run-{n}", now=NOW, lease_seconds=LEASE))

    try:
        # When each claims all of them at once
        with ThreadPoolExecutor(max_workers=len(stores)) as pool:
            got = list(pool.map(claim, range(len(stores))))

        # Then each order went to one run
        assert sorted(r for claimed_ids in got for r in claimed_ids) == everything
    finally:
        for store in stores:
            store.close()


def test_dynamodb_keeps_a_decided_order_past_its_expiry_until_it_is_settled(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given a pending order: the TTL may delete it at its expiry
    dynamo.put_orders([pending("ord-1")], now=NOW)
    expires = int(_raw_item(faulty, "ord-1")["expires_at"]["N"])
    assert int(_raw_item(faulty, "ord-1")["purge_at"]["N"]) == expires

    # When a run claims it with the market's decision, the TTL keeps it until 14 days past expiry
    decision = Decision(
        status="accepted",
        power=Decimal("12.5"),
        auction_date="2027-01-15",
        decided_at=iso_utc(NOW),
        submitted_at=iso_utc(NOW),
    )
    dynamo.claim_orders(
        keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE, decisions={key("ord-1"): decision}
    )
    assert int(_raw_item(faulty, "ord-1")["purge_at"]["N"]) == expires + RETENTION_SECONDS

    # And once it is settled as accepted, at its expiry again
    dynamo.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, {"run_id": "run-1"})
    assert int(_raw_item(faulty, "ord-1")["purge_at"]["N"]) == expires


def test_sqlite_recording_a_batch_again_changes_nothing(sqlite_store: StoreUnderTest) -> None:
    # Given a run whose batch 0 is recorded
    store: SqliteOrderStore = sqlite_store.store
    store.begin_run("run-1", 10, 0, NOW)
    store.record_batch("run-1", 0, BatchTally(accepted=4, rejected=1, batches=1))

    # When the tally task is retried (even with other counts, as a confused caller would send)
    store.record_batch("run-1", 0, BatchTally(accepted=4, rejected=1, batches=1))
    store.record_batch("run-1", 0, BatchTally(failed=5, batches=1))

    # Then the batch counts once, as first recorded, and the next batch still adds up
    assert store.run_record("run-1") == RunRecord(10, 0, BatchTally(accepted=4, rejected=1, batches=1))
    store.record_batch("run-1", 1, BatchTally(failed=5, batches=1))
    assert store.run_record("run-1") == RunRecord(10, 0, BatchTally(4, 1, 5, 2))
