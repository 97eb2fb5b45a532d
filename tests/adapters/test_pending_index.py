"""DynamoDB's keys-only pending-orders index with the pipeline on it (moto): FetchResults stages
every order in the index, ClaimBatch's read leaves out the ones it may not claim, and takes the
expired undecided ones out of the index, once."""

from __future__ import annotations

from typing import Any

from energy_auction.adapters.aws import ORDERS_KEY, PENDING_INDEX, PENDING_SHARD_ATTRIBUTE, DynamoDbOrderStore
from energy_auction.market import SimulatedMarket
from energy_auction.orders import ORDER_TTL_SECONDS, OrderStatus, order_key
from energy_auction.pipeline import claim_batch, process_order
from tests.adapters.stores import NOW, TABLE, accepted, pending
from tests.builders import key, keys
from tests.fakes import FaultyClient

LEASE = 600
AFTER_EXPIRY = NOW + ORDER_TTL_SECONDS + 10


class Results:
    """The accepted results written (a ResultStore)."""

    def __init__(self) -> None:
        self.written: dict[str, dict[str, Any]] = {}

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        self.written[key] = document
        return key


def _claim(store: DynamoDbOrderStore, staged: list[str], run_id: str, now: int) -> list[str]:
    answer = claim_batch(
        staged,
        0,
        run_id,
        store=store,
        market=SimulatedMarket(1.0, 1.0, seed=1),
        now=now,
        lease_seconds=LEASE,
    )
    return [order_key(str(r["trader"]), str(r["record_id"])) for r in answer["results"]]


def _in_index(faulty: FaultyClient) -> set[str]:
    items = faulty.real.scan(TableName=TABLE, IndexName=PENDING_INDEX)["Items"]
    return {i[ORDERS_KEY]["S"] for i in items}


def test_a_live_order_another_live_run_holds_is_staged_but_not_claimed(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given two live orders, one of which run-1 holds (its claim is live)
    dynamo.put_orders([pending("held"), pending("free")], now=NOW)
    dynamo.claim_orders(keys(["held"]), "run-1", NOW, LEASE)

    # When run-2 stages the pending orders and claims its batch
    staged = list(dynamo.pending_keys(NOW + 1, "run-2"))
    faulty.calls.clear()
    claimed = _claim(dynamo, staged, "run-2", NOW + 1)

    # Then both were staged (the index holds keys only: nothing filters them), but run-2 claimed
    # only the free one, tried no claim on the held one, and retired nothing
    assert sorted(staged) == sorted(keys(["held", "free"]))
    assert claimed == keys(["free"])
    assert faulty.calls["update_item"] == 1
    held = dynamo.get_order(key("held"))
    assert held is not None
    assert held.claim_run_id == "run-1"
    assert _in_index(faulty) == set(keys(["held", "free"]))


def test_an_expired_undecided_order_is_retired_once_and_not_staged_again(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given an order that expired pending and undecided, and a live one
    dynamo.put_orders([pending("stale")], now=NOW)
    dynamo.put_orders([pending("live", submitted=AFTER_EXPIRY - 60)], now=AFTER_EXPIRY - 60)

    # When a run stages the pending orders after the expiry and claims its batch
    staged = list(dynamo.pending_keys(AFTER_EXPIRY, "run-1"))
    faulty.calls.clear()
    claimed = _claim(dynamo, staged, "run-1", AFTER_EXPIRY)

    # Then the expired one was staged, not claimed, and taken out of the index with one update
    assert staged == keys(["stale", "live"])
    assert claimed == keys(["live"])
    assert faulty.calls["update_item"] == 2  # the live one's claim, the stale one's retirement
    assert _in_index(faulty) == set(keys(["live"]))
    # And it is still stored as it was, for the TTL sweep
    stale = dynamo.get_order(key("stale"))
    assert stale == pending("stale")
    item = faulty.real.get_item(TableName=TABLE, Key={ORDERS_KEY: {"S": key("stale")}})["Item"]
    assert PENDING_SHARD_ATTRIBUTE not in item

    # And the next run does not stage it again, so nothing retires it twice
    assert list(dynamo.pending_keys(AFTER_EXPIRY + 300, "run-2")) == keys(["live"])
    faulty.calls.clear()
    dynamo.retire_orders(keys(["stale"]), AFTER_EXPIRY + 300)  # a stale batch retiring it again
    assert faulty.calls["update_item"] == 1
    assert dynamo.get_order(key("stale")) == pending("stale")


def test_retiring_leaves_live_decided_and_settled_orders_in_place(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given a live order, and an expired one a dead run had decided
    dynamo.put_orders([pending("live", submitted=AFTER_EXPIRY - 60)], now=AFTER_EXPIRY - 60)
    dynamo.put_orders([pending("decided")], now=NOW)
    dynamo.claim_orders(keys(["decided"]), "run-0", NOW, LEASE, {key("decided"): accepted(NOW)})

    # When they are retired (the condition is checked, not the caller's read)
    dynamo.retire_orders(keys(["live", "decided", "missing"]), AFTER_EXPIRY)

    # Then both are still in the index, and no item was made for the missing key
    assert _in_index(faulty) == set(keys(["live", "decided"]))
    assert dynamo.get_order(key("missing")) is None


def test_an_expired_decided_order_of_a_dead_run_is_still_staged_and_settled(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given an order a dead run claimed with the market's decision, and which then expired
    dynamo.put_orders([pending("decided")], now=NOW)
    dynamo.claim_orders(keys(["decided"]), "run-0", NOW, LEASE, {key("decided"): accepted(NOW)})

    # When the next run stages and claims it after its expiry, and settles it
    staged = list(dynamo.pending_keys(AFTER_EXPIRY, "run-1"))
    answer = claim_batch(
        staged,
        0,
        "run-1",
        store=dynamo,
        market=SimulatedMarket(1.0, 0.0, seed=1),  # would reject: the stored decision is kept
        now=AFTER_EXPIRY,
        lease_seconds=LEASE,
    )
    results = Results()
    settled = [
        process_order(r, "run-1", store=dynamo, results=results, now=AFTER_EXPIRY, notice_delay_seconds=60)
        for r in answer["results"]
    ]

    # Then it was staged, not retired, claimed with its decision, and accepted as decided
    assert staged == keys(["decided"])
    assert [s["status"] for s in settled] == ["accepted"]
    order = dynamo.get_order(key("decided"))
    assert order is not None
    assert order.status is OrderStatus.ACCEPTED
    assert len(results.written) == 1
    # And completing it took it out of the index
    assert _in_index(faulty) == set()


def test_a_resubmission_after_retirement_is_staged_again(
    dynamo: DynamoDbOrderStore, faulty: FaultyClient
) -> None:
    # Given an expired undecided order a run retired
    dynamo.put_orders([pending("ord-1")], now=NOW)
    staged = list(dynamo.pending_keys(AFTER_EXPIRY, "run-1"))
    assert _claim(dynamo, staged, "run-1", AFTER_EXPIRY) == []
    assert _in_index(faulty) == set()

    # When its trader submits the same record_id again
    dynamo.put_orders([pending("ord-1", submitted=AFTER_EXPIRY + 5)], now=AFTER_EXPIRY + 5)

    # Then it is back in the index, staged by the next run and claimed
    assert _in_index(faulty) == set(keys(["ord-1"]))
    staged = list(dynamo.pending_keys(AFTER_EXPIRY + 10, "run-2"))
    assert staged == keys(["ord-1"])
    assert _claim(dynamo, staged, "run-2", AFTER_EXPIRY + 10) == keys(["ord-1"])
