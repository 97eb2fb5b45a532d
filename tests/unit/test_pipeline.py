"""The pipeline's use cases (FetchResults and its batch tasks, ProcessOrder, ReleaseOrder) on the real
local adapters.

Orders live in SQLite and accepted results in a folder (the local container); a run's batches file
goes to the in-memory WorkStore of ``tests.fakes``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
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
    BatchTally,
    NoticeClaim,
    NoticeHold,
    Order,
    OrderStatus,
    RunRecord,
    iso_utc,
    trader_key,
)
from energy_auction.pipeline import (
    BATCH_PAYLOAD_BYTES,
    claim_batch,
    fetch_results,
    process_order,
    redeliver_notices,
    release_order,
    result_key,
    summarise_run,
    tally_batch,
)
from tests.builders import TRADER, key, keys, pending_orders
from tests.fakes import MemoryWorkStore

from ..builders import store_orders
from ..conftest import START, FakeClock

LEASE = 4500
NOTICE_DELAY = 900
RUN = "run-20270115T080000Z-aaaa"
OTHER_RUN = "run-20270115T080500Z-bbbb"
BATCH_SIZE = 100
MAX_ORDERS = 1_000_000


class RacingMarket:
    """The simulated market, with something else happening while it decides: a batch asks it after
    reading its orders and before claiming them, so ``meanwhile`` runs in that window. Records the
    record_ids it was asked about."""

    def __init__(self, market: SimulatedMarket, meanwhile: Callable[[], object] = lambda: None) -> None:
        self.market = market
        self.meanwhile = meanwhile
        self.asked: list[str] = []

    def is_ready(self, run_id: str, attempt: int) -> bool:
        return self.market.is_ready(run_id, attempt)

    def decide(self, orders: Sequence[Order], run_id: str, now: float) -> list[OrderResult]:
        self.asked += [o.record_id for o in orders]
        self.meanwhile()
        return self.market.decide(orders, run_id, now)


def fetch(
    container: Container,
    market: Any,
    work: MemoryWorkStore,
    run_id: str = RUN,
    *,
    batch_size: int = BATCH_SIZE,
    max_orders: int = MAX_ORDERS,
) -> dict[str, Any]:
    return fetch_results(
        run_id,
        1,
        store=container.order_store,
        market=market,
        work=work,
        now=container.clock(),
        batch_size=batch_size,
        max_orders=max_orders,
    )


def claim(
    container: Container,
    market: Any,
    batch_keys: Sequence[str],
    run_id: str = RUN,
    *,
    batch: int = 0,
    payload_bytes: int = BATCH_PAYLOAD_BYTES,
) -> dict[str, Any]:
    return claim_batch(
        batch_keys,
        batch,
        run_id,
        store=container.order_store,
        market=market,
        now=container.clock(),
        lease_seconds=LEASE,
        payload_bytes=payload_bytes,
    )


def staged(work: MemoryWorkStore, run_id: str = RUN) -> list[str]:
    """Every key the run staged, batch after batch."""
    return [k for batch in work.written[run_id] for k in batch["keys"]]


def claim_every_batch(
    container: Container, market: Any, work: MemoryWorkStore, run_id: str = RUN
) -> list[Any]:
    """Run each staged batch's claim, as the Distributed Map's children do; their results in order."""
    return [
        result
        for batch in work.written[run_id]
        for result in claim(container, market, batch["keys"], run_id, batch=batch["batch"])["results"]
    ]


def begun_runs(container: Container) -> dict[str, tuple[int, int]]:
    """The runs the local store recorded as begun: staged and left, by run."""
    with sqlite3.connect(container.settings.orders_db) as raw:
        rows = raw.execute("SELECT run_id, staged, left_for_next FROM runs").fetchall()
    raw.close()
    return {run_id: (staged, left) for run_id, staged, left in rows}


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
    # A batch's claim stores the market's decision with the claim
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
    return get_key(container, key(record_id))


def get_key(container: Container, order_key: str) -> Order:
    found = container.order_store.get_order(order_key)
    assert found is not None
    return found


# --- FetchResults


def test_not_ready_answers_results_false_and_stages_nothing(local_container: Container) -> None:
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
        batch_size=BATCH_SIZE,
        max_orders=MAX_ORDERS,
    )

    # Then it says so, with the run and attempt, and nothing is claimed, written or begun
    assert answer == {"results": False, "run_id": RUN, "attempt": 3}
    pending = pending_orders(local_container.order_store, int(local_container.clock()))
    assert len(pending) == 5
    assert all(o.claim_run_id is None for o in pending)
    assert work.written == {}
    assert begun_runs(local_container) == {}


def test_ready_stages_the_claimable_keys_oldest_first_in_batches_and_claims_nothing(
    local_container: Container, clock: FakeClock
) -> None:
    # Given twelve pending orders submitted in three rounds ten seconds apart, one order another run
    # holds, and one the trader cancelled
    for prefix in ("c", "a", "b"):
        store_orders(local_container, 4, prefix=prefix)
        clock.advance(10)
    store = local_container.order_store
    store_orders(local_container, 2, prefix="x")
    store.claim_orders(keys(["x0"]), OTHER_RUN, int(clock.now), LEASE)
    store.cancel_order(key("x1"), int(clock.now))
    work = MemoryWorkStore()

    # When a ready FetchResults runs, five keys a batch
    answer = fetch(local_container, SimulatedMarket(1.0, 0.5, seed=11), work, batch_size=5)

    # Then it answers how many it staged, in how many batches, and where they are
    assert answer == {
        "results": True,
        "run_id": RUN,
        "attempt": 1,
        "count": 12,
        "batches": 3,
        "left": 0,
        "items": {"bucket": "work-bucket", "key": f"work/runs/{RUN}/batches.json"},
    }
    assert json.loads(json.dumps(answer)) == answer
    # And the batches hold the claimable orders' keys, oldest expiry first, numbered from 0
    assert work.written[RUN] == [
        {"batch": 0, "keys": keys(["c0", "c1", "c2", "c3", "a0"])},
        {"batch": 1, "keys": keys(["a1", "a2", "a3", "b0", "b1"])},
        {"batch": 2, "keys": keys(["b2", "b3"])},
    ]
    # And nothing is claimed: every staged order is as claimable by any run as before
    assert {o.claim_run_id for o in store.get_orders(staged(work))} == {None}
    assert len(pending_orders(store, int(clock.now))) == 12
    # And the run's record says what it took
    assert store.run_record(RUN) == RunRecord(staged=12, left=0)


def test_ready_with_no_pending_orders_answers_count_zero_writes_nothing_and_begins_the_run(
    local_container: Container,
) -> None:
    work = MemoryWorkStore()

    answer = fetch(local_container, SimulatedMarket(1.0, 1.0, seed=1), work)

    assert answer == {"results": True, "run_id": RUN, "attempt": 1, "count": 0, "batches": 0, "left": 0}
    assert work.written == {}
    assert begun_runs(local_container) == {RUN: (0, 0)}


@pytest.mark.parametrize(
    ("batch_size", "sizes"),
    [(1, [1, 1, 1]), (2, [2, 1]), (3, [3]), (100, [3])],
    ids=["one-a-batch", "a-partial-last-batch", "exactly-one-batch", "a-batch-bigger-than-the-run"],
)
def test_every_staged_key_is_in_one_batch_of_at_most_the_batch_size(
    local_container: Container, batch_size: int, sizes: list[int]
) -> None:
    store_orders(local_container, 3)
    work = MemoryWorkStore()

    answer = fetch(local_container, SimulatedMarket(1.0, 1.0, seed=1), work, batch_size=batch_size)

    assert (answer["count"], answer["batches"]) == (3, len(sizes))
    assert [b["batch"] for b in work.written[RUN]] == list(range(len(sizes)))
    assert [len(b["keys"]) for b in work.written[RUN]] == sizes
    assert staged(work) == keys(["o0", "o1", "o2"])


def test_a_run_past_max_orders_stages_the_oldest_and_leaves_the_rest_claimable_at_once(
    local_container: Container, clock: FakeClock
) -> None:
    # Given ten pending orders, submitted a second apart
    for i in range(10):
        store_orders(local_container, 1, prefix=f"o{i}-")
        clock.advance(1)
    market = SimulatedMarket(1.0, 1.0, seed=1)
    work = MemoryWorkStore()

    # When a run that takes at most four orders fetches, three a batch, and its batches claim them
    answer = fetch(local_container, market, work, batch_size=3, max_orders=4)
    claimed = claim_every_batch(local_container, market, work)

    # Then it staged and claimed the four oldest, and counted the six it left
    assert (answer["count"], answer["batches"], answer["left"]) == (4, 2, 6)
    assert [r["record_id"] for r in claimed] == [f"o{i}-0" for i in range(4)]
    assert local_container.order_store.run_record(RUN) == RunRecord(staged=4, left=6)

    # And the next run, at once, stages and claims the six left, with no lease to wait for
    answer = fetch(local_container, market, work, run_id=OTHER_RUN, batch_size=3, max_orders=4)
    assert (answer["count"], answer["left"]) == (4, 2)
    claimed = claim_every_batch(local_container, market, work, run_id=OTHER_RUN)
    assert [r["record_id"] for r in claimed] == [f"o{i}-0" for i in range(4, 8)]
    answer = fetch(local_container, market, work, run_id="run-3", batch_size=3, max_orders=4)
    assert (answer["count"], answer["left"]) == (2, 0)
    assert [r["record_id"] for r in claim_every_batch(local_container, market, work, "run-3")] == [
        "o8-0",
        "o9-0",
    ]


def test_a_second_run_right_after_finds_the_orders_claimed(
    local_container: Container, clock: FakeClock
) -> None:
    # Given a run whose batches claimed every pending order
    store_orders(local_container, 4)
    market = SimulatedMarket(1.0, 1.0, seed=1)
    first = MemoryWorkStore()
    assert fetch(local_container, market, first)["count"] == 4
    assert len(claim_every_batch(local_container, market, first)) == 4

    # When another run starts a minute later
    clock.advance(60)
    work = MemoryWorkStore()
    answer = fetch(local_container, market, work, run_id=OTHER_RUN)

    # Then it finds nothing to do and writes nothing
    assert answer == {"results": True, "run_id": OTHER_RUN, "attempt": 1, "count": 0, "batches": 0, "left": 0}
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


def test_a_failed_fetch_results_leaves_nothing_claimed_and_its_retry_stages_the_same_keys(
    local_container: Container, clock: FakeClock
) -> None:
    # Given FetchResults failed to write the batches file (the task is retried)
    store_orders(local_container, 3)
    market = SimulatedMarket(1.0, 1.0, seed=1)
    response: dict[str, Any] = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
    slow_down = ClientError(response, "PutObject")  # type: ignore[arg-type]
    work = MemoryWorkStore(failures=[slow_down])
    with pytest.raises(ClientError):
        fetch(local_container, market, work)

    # Then no order is held: another run could take every one at once (there is nothing to release)
    now = int(clock.now)
    assert [o.claim_run_id for o in pending_orders(local_container.order_store, now)] == [None] * 3

    # When the state machine retries the same task a few seconds later
    clock.advance(4)
    answer = fetch(local_container, market, work)

    # Then the retry stages the same orders
    assert answer["count"] == 3
    assert staged(work) == keys(["o0", "o1", "o2"])


# --- A batch claims its orders


def test_a_batch_claims_its_orders_with_the_markets_decisions_and_answers_their_results(
    local_container: Container,
) -> None:
    # Given 30 staged orders, eight a batch, and a seeded market that is ready
    stored = store_orders(local_container, 30)
    market = SimulatedMarket(ready_probability=1.0, accept_probability=0.5, seed=11)
    work = MemoryWorkStore()
    fetch(local_container, market, work, batch_size=8)

    # When each batch claims its orders
    answers = [
        claim(local_container, market, batch["keys"], batch=batch["batch"]) for batch in work.written[RUN]
    ]

    # Then each answers its run, its number and its orders' results
    assert [(a["run_id"], a["batch"], len(a["results"])) for a in answers] == [
        (RUN, 0, 8),
        (RUN, 1, 8),
        (RUN, 2, 8),
        (RUN, 3, 6),
    ]
    results = [r for a in answers for r in a["results"]]
    accepted = sum(1 for r in results if r["status"] == "accepted")
    assert 0 < accepted < 30

    # And the results are the market's for those orders (same seed, same run), in the batches' order
    expected = [r.as_item() for r in market.decide(stored, RUN, local_container.clock())]
    by_id = {item["record_id"]: item for item in results}
    assert len(by_id) == len(results) == 30
    assert by_id == {item["record_id"]: item for item in expected}
    assert [r["record_id"] for r in results] == [k.partition("/")[2] for k in staged(work)]

    # And their numbers are exact decimal strings (JSON numbers would be parsed as floats downstream)
    assert codec.loads(codec.dumps(results)) == results
    assert json.loads(json.dumps(answers)) == answers
    assert by_id["o7"]["parameter_2"] == "7.25"

    # And every order is now held by this run, with the decision its result came from
    for order in stored:
        held = get(local_container, order.record_id)
        assert (held.claim_run_id, held.claim_expires_at) == (RUN, int(START) + LEASE)
        assert OrderResult.of(held).as_item() == by_id[order.record_id]
    assert pending_orders(local_container.order_store, int(local_container.clock())) == []


def test_a_batch_asks_the_market_only_about_undecided_orders_and_keeps_a_dead_runs_decision(
    local_container: Container, clock: FakeClock
) -> None:
    # Given two staged orders, one of which a dead run claimed with the market's rejection
    store_orders(local_container, 2)
    store = local_container.order_store
    dead_decision = SimulatedMarket(1.0, 0.0, seed=5).decide([get(local_container, "o1")], "run-dead", START)
    store.claim_orders(
        keys(["o1"]), "run-dead", int(START), 60, {key("o1"): dead_decision[0].decision(iso_utc(START))}
    )
    clock.advance(60)  # its claim lapsed
    market = RacingMarket(SimulatedMarket(1.0, 1.0, seed=1))
    work = MemoryWorkStore()
    fetch(local_container, market, work)

    # When the batch claims them
    results = claim(local_container, market, staged(work))["results"]

    # Then only the undecided one was put to the market; the other keeps the answer it got then
    assert market.asked == ["o0"]
    assert [(r["record_id"], r["status"]) for r in results] == [("o0", "accepted"), ("o1", "rejected")]
    assert results[1] == dead_decision[0].as_item()
    assert get(local_container, "o1").claim_run_id == RUN


def test_a_retried_claim_answers_the_same_results_and_renews_the_lease(
    local_container: Container, clock: FakeClock
) -> None:
    # Given a batch that claimed its orders
    store_orders(local_container, 3)
    market = RacingMarket(SimulatedMarket(1.0, 0.5, seed=2))
    work = MemoryWorkStore()
    fetch(local_container, market, work)
    first = claim(local_container, market, staged(work))

    # When the task is retried half a minute later (its answer was lost)
    clock.advance(30)
    again = claim(local_container, market, staged(work))

    # Then it answers the same results, asks the market nothing more, and holds the orders longer
    assert again == first
    assert len(first["results"]) == 3
    assert market.asked == ["o0", "o1", "o2"]
    assert get(local_container, "o0").claim_expires_at == int(clock.now) + LEASE


def test_an_order_cancelled_after_it_was_staged_is_not_claimed(
    local_container: Container, clock: FakeClock
) -> None:
    # Given three staged orders, one of which the trader cancels before its batch starts
    store_orders(local_container, 3)
    market = RacingMarket(SimulatedMarket(1.0, 1.0, seed=1))
    work = MemoryWorkStore()
    fetch(local_container, market, work)
    clock.advance(5)
    local_container.order_store.cancel_order(key("o1"), int(clock.now))

    # When the batch claims its orders
    results = claim(local_container, market, staged(work))["results"]

    # Then the cancelled one is left out, never put to the market, and stays cancelled, unclaimed
    assert [r["record_id"] for r in results] == ["o0", "o2"]
    assert market.asked == ["o0", "o2"]
    cancelled = get(local_container, "o1")
    assert (cancelled.status, cancelled.claim_run_id, cancelled.decision) == (
        OrderStatus.CANCELLED,
        None,
        None,
    )


def test_a_cancel_while_the_batch_asks_the_market_wins(local_container: Container, clock: FakeClock) -> None:
    # Given three staged orders, and a trader who cancels one after the batch read it, while the
    # market decides
    store_orders(local_container, 3)
    store = local_container.order_store
    market = RacingMarket(
        SimulatedMarket(1.0, 1.0, seed=1), meanwhile=lambda: store.cancel_order(key("o1"), int(clock.now))
    )
    work = MemoryWorkStore()
    fetch(local_container, market, work)

    # When the batch claims its orders
    results = claim(local_container, market, staged(work))["results"]

    # Then the claim's conditions decide: the cancelled order is not claimed, the others are
    assert market.asked == ["o0", "o1", "o2"]
    assert [r["record_id"] for r in results] == ["o0", "o2"]
    assert get(local_container, "o1").status is OrderStatus.CANCELLED
    assert get(local_container, "o1").claim_run_id is None


def test_an_order_resubmitted_while_the_batch_asks_the_market_is_left_for_the_next_run(
    local_container: Container, clock: FakeClock
) -> None:
    # Given three staged orders, and a trader who resubmits one (a replacement, another volume) a
    # second after the batch read it, while the market decides about the first submission
    store_orders(local_container, 3)
    store = local_container.order_store
    replacement: list[Order] = []

    def resubmit() -> None:
        clock.advance(1)
        replacement.extend(store_orders(local_container, 1, volume=lambda i: Decimal("99.5")))

    market = RacingMarket(SimulatedMarket(1.0, 1.0, seed=1), meanwhile=resubmit)
    work = MemoryWorkStore()
    fetch(local_container, market, work)

    # When the batch claims its orders
    results = claim(local_container, market, staged(work))["results"]

    # Then the replacement is not claimed with the decision made for the order it replaced: it is
    # pending, undecided and free, for the next run
    assert [r["record_id"] for r in results] == ["o1", "o2"]
    assert get(local_container, "o0") == replacement[0]
    assert pending_orders(store, int(clock.now)) == replacement

    # And the next run claims it with a decision on the new submission
    next_market = SimulatedMarket(1.0, 1.0, seed=1)
    work = MemoryWorkStore()
    fetch(local_container, next_market, work, run_id=OTHER_RUN)
    (result,) = claim(local_container, next_market, staged(work, OTHER_RUN), OTHER_RUN)["results"]
    assert (result["record_id"], result["power"], result["parameter_2"]) == ("o0", "99.5", "99.5")
    decision = get(local_container, "o0").decision
    assert decision is not None
    assert decision.submitted_at == replacement[0].submitted_at


def test_an_order_another_live_run_claimed_is_left_out(local_container: Container, clock: FakeClock) -> None:
    # Given four orders two overlapping runs staged: the other run's batch claimed one of them
    # first, and claims another while this run's batch asks the market
    store_orders(local_container, 4)
    other = SimulatedMarket(1.0, 1.0, seed=9)
    work = MemoryWorkStore()
    fetch(local_container, other, work, run_id=OTHER_RUN)
    fetch(local_container, other, work)
    assert staged(work, OTHER_RUN) == staged(work) == keys(["o0", "o1", "o2", "o3"])
    claim(local_container, other, keys(["o1"]), OTHER_RUN)
    market = RacingMarket(
        SimulatedMarket(1.0, 1.0, seed=1),
        meanwhile=lambda: claim(local_container, other, keys(["o2"]), OTHER_RUN),
    )

    # When this run's batch claims its orders
    results = claim(local_container, market, staged(work))["results"]

    # Then it gets the two no other run holds; the other run keeps its claims and their decisions
    assert market.asked == ["o0", "o2", "o3"]
    assert [r["record_id"] for r in results] == ["o0", "o3"]
    for record_id in ("o1", "o2"):
        held = get(local_container, record_id)
        assert held.claim_run_id == OTHER_RUN
        assert held.decision is not None


def test_a_batch_of_orders_gone_since_they_were_staged_claims_nothing(local_container: Container) -> None:
    market = SimulatedMarket(1.0, 1.0, seed=1)

    assert claim(local_container, market, keys(["nowhere"]), batch=7) == {
        "run_id": RUN,
        "batch": 7,
        "results": [],
    }
    assert claim(local_container, market, []) == {"run_id": RUN, "batch": 0, "results": []}


class ReadRecordingStore:
    """The container's store, noting how each ``get_orders`` was asked to read."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_orders(self, keys: Sequence[str], *, consistent: bool = True) -> list[Order]:
        self.reads.append(consistent)
        found: list[Order] = self._store.get_orders(keys, consistent=consistent)
        return found


def test_a_batch_reads_its_orders_eventually_consistent_and_answers_what_the_claim_stored(
    local_container: Container,
) -> None:
    # Given three staged orders, one of them decided by a run that died
    store_orders(local_container, 3)
    market = SimulatedMarket(1.0, 0.0, seed=1)  # rejects everything it is asked
    work = MemoryWorkStore()
    fetch(local_container, market, work)
    batch_keys = staged(work)
    dead = SimulatedMarket(1.0, 1.0, seed=1)  # accepted it
    claim(local_container, dead, batch_keys[:1], run_id="dead-run")
    local_container.order_store.release_order(batch_keys[0], "dead-run")
    recording = ReadRecordingStore(local_container.order_store)

    # When the batch claims them
    answer = claim_batch(
        batch_keys, 0, RUN, store=recording, market=market, now=local_container.clock(), lease_seconds=LEASE
    )

    # Then its one read was eventually consistent (a pre-filter: the claim decides), and the
    # results are the decisions the claim stored: the dead run's acceptance is kept
    assert recording.reads == [False]
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "rejected"]


def big_orders(container: Container, count: int, subject_length: int) -> list[str]:
    """Store ``count`` orders of a trader whose subject has ``subject_length`` characters (a result
    carries the trader: such orders make big results, all of the same size); their keys."""
    trader = "t" * subject_length
    orders = store_orders(container, count, prefix="big-", trader=trader, volume=lambda i: Decimal(1))
    return [o.key for o in orders]


def test_results_past_the_payload_bound_are_not_claimed_and_claimable_at_once(
    local_container: Container,
) -> None:
    # Given ten orders whose results are all the same size, and a bound that fits three and a half
    batch_keys = big_orders(local_container, 10, subject_length=1000)
    market = SimulatedMarket(1.0, 1.0, seed=1)
    one = len(codec.dumps(market.decide([get_key(local_container, batch_keys[0])], RUN, START)[0].as_item()))
    bound = one * 7 // 2

    # When the batch claims them
    results = claim(local_container, market, batch_keys, payload_bytes=bound)["results"]

    # Then it claims the first three, whose results fit the bound, and leaves the rest unclaimed
    assert [r["record_id"] for r in results] == ["big-0", "big-1", "big-2"]
    assert len(codec.dumps(results)) <= bound
    left = local_container.order_store.get_orders(batch_keys[3:])
    assert [(o.claim_run_id, o.decision) for o in left] == [(None, None)] * 7

    # And another run claims those at once
    others = claim(local_container, market, batch_keys, OTHER_RUN)["results"]
    assert [r["record_id"] for r in others] == [f"big-{i}" for i in range(3, 10)]


def test_a_batch_answer_stays_under_what_step_functions_passes_between_states(
    local_container: Container,
) -> None:
    # Given a batch of 100 orders of a trader whose subject is 4,000 characters long
    batch_keys = big_orders(local_container, 100, subject_length=4000)

    # When the batch claims them with the default bound
    answer = claim(local_container, SimulatedMarket(1.0, 0.5, seed=1), batch_keys)

    # Then its answer fits in a state's 256 KB payload; the orders that did not fit wait, unclaimed
    assert 0 < len(answer["results"]) < 100
    assert len(codec.dumps(answer).encode()) < 256 * 1024
    claimed = {r["record_id"] for r in answer["results"]}
    for order in local_container.order_store.get_orders(batch_keys):
        assert (order.claim_run_id == RUN) == (order.record_id in claimed)


# --- A batch's tally and the run summary


def outcomes(*statuses: str) -> list[dict[str, str]]:
    """A batch's outcomes as its inline Map collects them: one ``{"status"}`` per order."""
    return [{"status": s} for s in statuses]


def test_a_batchs_tally_is_recorded_in_the_runs_record_once(local_container: Container) -> None:
    # Given a run that staged six orders
    store = local_container.order_store
    store.begin_run(RUN, 6, 0, int(START))

    # When its first batch's tally is recorded, twice (a retried task), and its second's once
    answer = tally_batch(outcomes("accepted", "rejected", "failed", "accepted"), 0, RUN, store=store)
    assert tally_batch(outcomes("accepted", "rejected", "failed", "accepted"), 0, RUN, store=store) == answer
    tally_batch(outcomes("rejected", "accepted"), 1, RUN, store=store)

    # Then it answers the batch's counts, and the run's record adds each batch once
    assert answer == {"run_id": RUN, "batch": 0, "accepted": 2, "rejected": 1, "failed": 1}
    assert store.run_record(RUN) == RunRecord(6, 0, BatchTally(accepted=3, rejected=2, failed=1, batches=2))


@pytest.mark.parametrize("outcome", [{"status": "lost"}, {}], ids=["unknown-status", "no-status"])
def test_a_tally_of_an_outcome_it_does_not_know_is_refused_and_records_nothing(
    local_container: Container, outcome: dict[str, str]
) -> None:
    store = local_container.order_store

    with pytest.raises(ValueError, match="expected one of"):
        tally_batch([{"status": "accepted"}, outcome], 0, RUN, store=store)

    assert store.run_record(RUN) == RunRecord()


def test_a_run_from_fetch_to_summary_counts_what_it_took_and_how_each_order_ended(
    local_container: Container, clock: FakeClock
) -> None:
    # Given five pending orders, and a run started at 08:00:00.5 that takes four, two a batch
    store_orders(local_container, 5)
    store = local_container.order_store
    market = SimulatedMarket(1.0, 0.5, seed=4)
    work = MemoryWorkStore()
    fetch(local_container, market, work, batch_size=2, max_orders=4)

    # When each batch claims and settles its orders (one fails and is given back) and is tallied
    for batch in work.written[RUN]:
        statuses = []
        for result in claim(local_container, market, batch["keys"], batch=batch["batch"])["results"]:
            if result["record_id"] == "o3":
                release_order(as_event(result), RUN, store=store)
                statuses.append("failed")
                continue
            try:
                statuses.append(settle(local_container, as_event(result))["status"])
            except OrderRejected:
                statuses.append("rejected")
        tally_batch(outcomes(*statuses), batch["batch"], RUN, store=store)
    clock.advance(125)
    summary = summarise_run(RUN, "2027-01-15T08:00:00.500Z", store=store, now=clock.now)

    # Then the summary has what the run took and left, how its orders ended, and how long it took
    ended = [get(local_container, f"o{i}").status for i in range(3)]
    accepted = ended.count(OrderStatus.ACCEPTED)
    assert summary == {
        "run_id": RUN,
        "staged": 4,
        "orders": 4,
        "accepted": accepted,
        "rejected": 3 - accepted,
        "failed": 1,
        "left": 1,
        "started_at": "2027-01-15T08:00:00Z",
        "duration_seconds": 124.5,
    }
    assert json.loads(json.dumps(summary)) == summary


@pytest.mark.parametrize(
    ("started_at", "now", "duration"),
    [
        ("2027-01-15T09:00:00+01:00", START + 60, 60.0),
        ("2027-01-15T08:00:00Z", START - 5, 0.0),  # a clock behind the start: never negative
    ],
    ids=["another-offset", "clock-behind"],
)
def test_the_summary_of_a_run_that_recorded_nothing_is_zeros(
    local_container: Container, started_at: str, now: float, duration: float
) -> None:
    summary = summarise_run(RUN, started_at, store=local_container.order_store, now=now)

    assert summary == {
        "run_id": RUN,
        "staged": 0,
        "orders": 0,
        "accepted": 0,
        "rejected": 0,
        "failed": 0,
        "left": 0,
        "started_at": "2027-01-15T08:00:00Z",
        "duration_seconds": duration,
    }


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
    assert pending_orders(local_container.order_store, now) == []

    # When processing kept failing and the order is released
    answer = release_order(item, RUN, store=local_container.order_store)

    # Then it is pending and unclaimed again, offered to the next run
    assert answer == {"record_id": "stuck", "status": "released"}
    order = get(local_container, "stuck")
    assert (order.status, order.claim_run_id, order.claim_expires_at) == (OrderStatus.PENDING, None, None)
    assert [o.record_id for o in pending_orders(local_container.order_store, now)] == ["stuck"]


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
    assert store.claim_notices([NoticeHold(key("unique_id_3"), RUN, "delivery-1")], now, 60) == [
        NoticeClaim.CLAIMED
    ]
    store.finish_notices([NoticeHold(key("unique_id_3"), RUN, "delivery-1")], delivered=True)
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
