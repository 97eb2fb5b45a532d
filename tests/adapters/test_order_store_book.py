"""The order book on both stores, SQLite and DynamoDB (moto): orders belong to a trader, a trader's
listing holds only their live orders newest first, page by page, and a cancel and a run's claim
never both win."""

from __future__ import annotations

import threading

import pytest

from energy_auction.errors import OrderLocked, OrderNotFound, OrdersAlreadyProcessed
from energy_auction.orders import (
    ORDER_TTL_SECONDS,
    BatchTally,
    OrderQuery,
    OrderStatus,
    iso_utc,
    order_key,
    trader_key,
)
from tests.adapters.stores import NOW, StoreUnderTest, accepted, pending
from tests.builders import TRADER, key, pending_orders
from tests.fakes import FaultyClient

LEASE = 600
OTHER = "trader-2"

SUBJECTS = ["a/b", "a#b", "..", "../../etc", "with space", "ünïcødé-交易员", "x" * 200, "a", "A", "a "]


def listed(
    subject: StoreUnderTest,
    *,
    now: float = NOW + 1,
    trader: str | None = None,
    status: OrderStatus | None = None,
    since: float | None = None,
) -> list[str]:
    """Every record_id a listing gives, following its pages (a page of 3), newest first."""
    found: list[str] = []
    before = None
    for _ in range(100):
        query = OrderQuery(now=now, trader=trader, status=status, since=since, before=before, limit=3)
        page = subject.store.list_orders(query)
        found += [o.record_id for o in page.orders]
        if page.next_before is None:
            return found
        before = page.next_before
    raise AssertionError("the listing never ended")


# --- Ownership


def test_trader_keys_cannot_collide_or_escape_whatever_the_subject_holds() -> None:
    keys = {trader_key(s) for s in SUBJECTS}

    assert len(keys) == len(SUBJECTS)
    for k in keys:
        assert len(k) == 52
        assert set(k) <= set("abcdefghijklmnopqrstuvwxyz234567")
    # a record_id cannot hold "/", so an order key splits back into its trader and its record_id
    assert order_key("a/b", "c") != order_key("a", "b/c")
    assert order_key("a/b", "c").count("/") == 1


def test_two_traders_may_use_the_same_record_id_without_touching_each_other(subject: StoreUnderTest) -> None:
    # Given trader-1's order ord-1, processed by the auction
    mine = pending("ord-1", parameter_1="mine")
    subject.store.put_orders([mine.model_copy(update={"status": OrderStatus.ACCEPTED})], now=NOW)

    # When trader-2 submits an order ord-1 of their own, twice
    theirs = pending("ord-1", parameter_1="theirs", trader=OTHER)
    subject.store.put_orders([theirs], now=NOW)
    subject.store.put_orders([theirs], now=NOW)

    # Then each reads their own, and trader-1's processed order was neither replaced nor refused
    assert subject.store.get_order(key("ord-1")).parameter_1 == "mine"
    assert subject.store.get_order(key("ord-1", OTHER)) == theirs


@pytest.mark.parametrize("trader", SUBJECTS)
def test_any_subject_owns_its_orders_and_only_those(subject: StoreUnderTest, trader: str) -> None:
    subject.store.put_orders([pending("ord-1", trader=trader)], now=NOW)
    subject.store.put_orders([pending("ord-1", trader=trader + "x")], now=NOW)

    found = subject.store.get_order(order_key(trader, "ord-1"))

    assert found is not None
    assert found.trader == trader
    assert listed(subject, trader=trader) == ["ord-1"]


# --- Listing


def test_a_traders_listing_is_their_live_orders_newest_first_page_by_page(subject: StoreUnderTest) -> None:
    # Given ten orders of trader-1 submitted one a second, two of trader-2, and an expired one
    subject.store.put_orders([pending("old", submitted=NOW - ORDER_TTL_SECONDS - 5)], now=NOW)
    for i in range(10):
        subject.store.put_orders([pending(f"o{i}", submitted=NOW + i)], now=NOW)
    subject.store.put_orders([pending("t0", trader=OTHER), pending("t1", trader=OTHER)], now=NOW)

    # When trader-1 lists them, three a page
    found = listed(subject, trader=TRADER, now=NOW + 20)

    # Then every live order of theirs comes once, newest first, and nothing else
    assert found == [f"o{i}" for i in reversed(range(10))]


def test_a_listing_filters_on_status_and_submission_time(subject: StoreUnderTest) -> None:
    store = subject.store
    store.put_orders([pending(f"p{i}", submitted=NOW + i) for i in range(4)], now=NOW)
    store.put_orders(
        [pending("done", submitted=NOW + 1).model_copy(update={"status": OrderStatus.ACCEPTED})], now=NOW
    )
    store.cancel_order(key("p0"), NOW + 5)

    assert listed(subject, trader=TRADER, now=NOW + 9, status=OrderStatus.PENDING) == ["p3", "p2", "p1"]
    assert listed(subject, trader=TRADER, now=NOW + 9, status=OrderStatus.CANCELLED) == ["p0"]
    assert listed(subject, trader=TRADER, now=NOW + 9, status=OrderStatus.ACCEPTED) == ["done"]
    # since: submitted at or after, to the millisecond
    assert listed(subject, trader=TRADER, now=NOW + 9, since=NOW + 2) == ["p3", "p2"]
    assert listed(subject, trader=TRADER, now=NOW + 9, since=NOW + 2.001) == ["p3"]


def test_an_order_expires_from_the_listing_at_its_expiry(subject: StoreUnderTest) -> None:
    subject.store.put_orders([pending("o1")], now=NOW)

    assert listed(subject, trader=TRADER, now=NOW + ORDER_TTL_SECONDS - 1) == ["o1"]
    assert listed(subject, trader=TRADER, now=NOW + ORDER_TTL_SECONDS) == []


def test_everyones_listing_merges_every_trader_newest_first(subject: StoreUnderTest) -> None:
    # Given orders of three traders, interleaved in time
    for i in range(9):
        subject.store.put_orders([pending(f"o{i}", submitted=NOW + i, trader=f"t{i % 3}")], now=NOW)

    # When an operator lists everyone's orders, three a page
    found = listed(subject, now=NOW + 20)

    # Then all come once, newest first across traders
    assert found == [f"o{i}" for i in reversed(range(9))]


def test_a_runs_record_is_never_listed(subject: StoreUnderTest) -> None:
    # Given orders of two traders, and a run that took them and recorded a batch (on DynamoDB its
    # record shares the orders table)
    subject.store.put_orders([pending("o1"), pending("o2", trader=OTHER)], now=NOW)
    subject.store.begin_run("run-1", 2, 0, NOW)
    subject.store.record_batch("run-1", 0, BatchTally(accepted=2, batches=1))

    # Then a trader's listing and everyone's hold the orders only
    assert listed(subject, trader=TRADER) == ["o1"]
    assert sorted(listed(subject)) == ["o1", "o2"]
    assert listed(subject, trader="run") == []


def test_a_replaced_order_is_listed_once_at_its_new_submission(subject: StoreUnderTest) -> None:
    subject.store.put_orders([pending("a", submitted=NOW), pending("b", submitted=NOW + 1)], now=NOW)
    subject.store.put_orders([pending("a", submitted=NOW + 2)], now=NOW + 2)

    assert listed(subject, trader=TRADER, now=NOW + 3) == ["a", "b"]


# --- Cancelling


def test_a_cancel_marks_the_order_cancelled_and_takes_it_out_of_the_auction(subject: StoreUnderTest) -> None:
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)

    cancelled = store.cancel_order(key("ord-1"), NOW + 7)

    assert (cancelled.status, cancelled.cancelled_at) == (OrderStatus.CANCELLED, iso_utc(NOW + 7))
    assert store.get_order(key("ord-1")) == cancelled
    assert list(store.pending_keys(NOW + 8, "run-1")) == []
    assert store.claim_orders([key("ord-1")], "run-1", NOW + 8, LEASE) == []
    # cancelling again answers the same order, unchanged
    assert store.cancel_order(key("ord-1"), NOW + 9) == cancelled


def test_a_cancelled_order_may_be_submitted_again_as_a_new_pending_order(subject: StoreUnderTest) -> None:
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)
    store.cancel_order(key("ord-1"), NOW + 1)

    store.put_orders([pending("ord-1", submitted=NOW + 2)], now=NOW + 2)

    again = store.get_order(key("ord-1"))
    assert again is not None
    assert (again.status, again.cancelled_at) == (OrderStatus.PENDING, None)
    assert pending_orders(store, NOW + 3) == [again]


def test_an_order_a_run_holds_or_decided_is_locked(subject: StoreUnderTest) -> None:
    store = subject.store
    store.put_orders([pending("held"), pending("decided")], now=NOW)
    store.claim_orders([key("held")], "run-1", NOW, LEASE)
    store.claim_orders([key("decided")], "run-1", NOW, LEASE, {key("decided"): accepted(NOW)})
    store.release_order(key("decided"), "run-1")  # released, but its decision stays: it will be settled

    for record_id in ("held", "decided"):
        with pytest.raises(OrderLocked):
            store.cancel_order(key(record_id), NOW + 1)
        assert store.get_order(key(record_id)).status is OrderStatus.PENDING
    # a held order whose claim lapsed, and that no market decided, may be cancelled
    assert store.cancel_order(key("held"), NOW + LEASE).status is OrderStatus.CANCELLED


def test_a_processed_order_cannot_be_cancelled(subject: StoreUnderTest) -> None:
    done = pending("done").model_copy(update={"status": OrderStatus.REJECTED})
    subject.store.put_orders([done], now=NOW)

    with pytest.raises(OrdersAlreadyProcessed):
        subject.store.cancel_order(key("done"), NOW + 1)
    assert subject.store.get_order(key("done")) == done


@pytest.mark.parametrize("which", ["missing", "expired", "another-traders"])
def test_cancelling_an_order_that_is_not_there_is_not_found(subject: StoreUnderTest, which: str) -> None:
    subject.store.put_orders([pending("ord-1", trader=OTHER), pending("gone")], now=NOW)
    wanted, at = {
        "missing": (key("nowhere"), NOW),
        "expired": (key("gone"), NOW + ORDER_TTL_SECONDS),
        "another-traders": (key("ord-1"), NOW),
    }[which]

    with pytest.raises(OrderNotFound):
        subject.store.cancel_order(wanted, at)
    assert subject.store.get_order(key("ord-1", OTHER)).status is OrderStatus.PENDING


def test_a_claim_after_a_cancel_gets_nothing_and_a_cancel_after_a_claim_is_locked(
    subject: StoreUnderTest,
) -> None:
    store = subject.store
    store.put_orders([pending("first-cancel"), pending("first-claim")], now=NOW)

    store.cancel_order(key("first-cancel"), NOW)
    assert store.claim_orders([key("first-cancel")], "run-1", NOW, LEASE) == []

    assert store.claim_orders([key("first-claim")], "run-1", NOW, LEASE)
    with pytest.raises(OrderLocked):
        store.cancel_order(key("first-claim"), NOW)
    assert store.get_order(key("first-cancel")).status is OrderStatus.CANCELLED
    assert store.get_order(key("first-claim")).claim_run_id == "run-1"


def test_cancels_racing_claims_in_threads_each_order_goes_one_way(subject: StoreUnderTest) -> None:
    # Given 40 pending orders, and a run claiming them, ten at a time (a claim's own updates in
    # flight together on DynamoDB), while the trader cancels each
    store = subject.store
    ids = [f"race-{i}" for i in range(40)]
    store.put_orders([pending(r) for r in ids], now=NOW)
    cancelled: list[str] = []
    claimed: list[str] = []

    def cancel_all() -> None:
        for record_id in ids:
            try:
                store.cancel_order(key(record_id), NOW)
                cancelled.append(record_id)
            except OrderLocked:
                pass

    def claim_all() -> None:
        for start in range(0, len(ids), 10):
            wanted = [key(r) for r in ids[start : start + 10]]
            claimed.extend(o.record_id for o in store.claim_orders(wanted, "run-1", NOW, LEASE))

    threads = [threading.Thread(target=cancel_all), threading.Thread(target=claim_all)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Then each order was either cancelled or claimed, never both, never neither
    assert sorted(cancelled + claimed) == sorted(ids)
    assert not set(cancelled) & set(claimed)


def test_dynamodb_lists_with_queries_on_the_listing_indexes_and_never_scans(
    dynamodb_store: StoreUnderTest, faulty: FaultyClient
) -> None:
    store = dynamodb_store.store
    store.put_orders([pending(f"o{i}", submitted=NOW + i) for i in range(12)], now=NOW)
    faulty.calls.clear()

    trader_page = store.list_orders(OrderQuery(now=NOW + 20, trader=TRADER, limit=5))
    after_trader = dict(faulty.calls)
    everyone_page = store.list_orders(OrderQuery(now=NOW + 20, limit=5))

    assert [o.record_id for o in trader_page.orders] == ["o11", "o10", "o9", "o8", "o7"]
    assert [o.record_id for o in everyone_page.orders] == ["o11", "o10", "o9", "o8", "o7"]
    # a trader's page: one query of the trader's index and one batch read of the orders it names
    assert (after_trader.get("query"), after_trader.get("batch_get_item")) == (1, 1)
    assert faulty.calls.get("scan", 0) == 0


def test_a_cursor_whose_order_expired_since_ends_the_listing(subject: StoreUnderTest) -> None:
    # Given a page that ended at an order which has expired by the time the next page is asked for
    subject.store.put_orders([pending("old", submitted=NOW), pending("new", submitted=NOW + 10)], now=NOW)
    first = subject.store.list_orders(OrderQuery(now=NOW + 11, trader=TRADER, limit=1))
    assert [o.record_id for o in first.orders] == ["new"]
    later = NOW + ORDER_TTL_SECONDS + 20  # "new" (and so the cursor's position) expired too

    # When the next page is asked for with that position
    page = subject.store.list_orders(OrderQuery(now=later, trader=TRADER, before=first.next_before))

    # Then the listing is over, with no error
    assert (list(page.orders), page.next_before) == ([], None)
