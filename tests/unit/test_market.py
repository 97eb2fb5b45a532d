"""The simulated market: seeded reproducibility, probabilities at their bounds, and result items."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from energy_auction.errors import OrdersInvalid
from energy_auction.market import REJECTION_REASONS, OrderResult, SimulatedMarket
from energy_auction.notifications import notice_from_message
from energy_auction.orders import ORDER_FIELDS, ORDER_TTL_SECONDS, Limits, Order, iso_utc, parse_orders

from ..builders import TRADER
from ..conftest import START


def order(record_id: str, parameter_2: str = "2.5", parameter_1: str = "lot") -> Order:
    return Order(
        record_id=record_id,
        trader=TRADER,
        parameter_1=parameter_1,
        parameter_2=Decimal(parameter_2),
        submitted_at=iso_utc(START),
        expires_at=int(START) + ORDER_TTL_SECONDS,
    )


def orders(count: int, prefix: str = "o") -> list[Order]:
    return [order(f"{prefix}{i}", parameter_2=f"{i}.25") for i in range(count)]


def statuses(results: list[OrderResult]) -> list[str]:
    return [r.status for r in results]


# --- Reproducibility


def test_the_same_seed_and_run_id_give_the_same_readiness_and_outcomes() -> None:
    # Given two markets with the same seed
    first, second = SimulatedMarket(0.5, 0.5, seed=42), SimulatedMarket(0.5, 0.5, seed=42)
    batch = orders(200)

    # When each is asked about the same run
    readiness = [(first.is_ready("run-1", a), second.is_ready("run-1", a)) for a in range(1, 51)]
    decided_first = first.decide(batch, "run-1", START)
    decided_second = second.decide(batch, "run-1", START)

    # Then they answer identically, including the rejection reasons
    assert all(a == b for a, b in readiness)
    assert decided_first == decided_second
    # And the answers are not trivially constant (the seed really drives a mix)
    assert {a for a, _ in readiness} == {True, False}
    assert set(statuses(decided_first)) == {"accepted", "rejected"}


def test_different_run_ids_get_different_outcomes() -> None:
    # Given one seeded market and a large set of orders
    market = SimulatedMarket(0.5, 0.5, seed=42)
    batch = orders(200)

    # When two runs decide the same orders
    run_a = market.decide(batch, "run-a", START)
    run_b = market.decide(batch, "run-b", START)

    # Then the outcomes differ (each draw depends on the run id)
    assert statuses(run_a) != statuses(run_b)
    ready_a = [market.is_ready("run-a", a) for a in range(1, 101)]
    ready_b = [market.is_ready("run-b", a) for a in range(1, 101)]
    assert ready_a != ready_b


def test_different_seeds_give_different_outcomes() -> None:
    batch = orders(200)
    one = SimulatedMarket(0.5, 0.5, seed=1).decide(batch, "run-1", START)
    two = SimulatedMarket(0.5, 0.5, seed=2).decide(batch, "run-1", START)
    assert statuses(one) != statuses(two)


def test_an_outcome_does_not_depend_on_the_order_of_the_batch() -> None:
    # Given a seeded market
    market = SimulatedMarket(0.5, 0.5, seed=9)
    batch = orders(100)

    # When the same orders are decided forwards, backwards, and one at a time
    forwards = {r.record_id: r for r in market.decide(batch, "run-1", START)}
    backwards = {r.record_id: r for r in market.decide(list(reversed(batch)), "run-1", START)}
    singly = {o.record_id: market.decide([o], "run-1", START)[0] for o in batch}

    # Then each order gets the same outcome every time
    assert forwards == backwards == singly


# --- Probabilities at their bounds


@pytest.mark.parametrize("seed", [7, None])
def test_ready_probability_zero_is_never_ready_and_one_is_always_ready(seed: int | None) -> None:
    never = SimulatedMarket(ready_probability=0.0, seed=seed)
    always = SimulatedMarket(ready_probability=1.0, seed=seed)
    attempts = range(1, 301)
    assert not any(never.is_ready(f"run-{a % 7}", a) for a in attempts)
    assert all(always.is_ready(f"run-{a % 7}", a) for a in attempts)


@pytest.mark.parametrize("seed", [7, None])
def test_accept_probability_zero_rejects_all_and_one_accepts_all(seed: int | None) -> None:
    batch = orders(300)
    rejected = SimulatedMarket(accept_probability=0.0, seed=seed).decide(batch, "run-1", START)
    accepted = SimulatedMarket(accept_probability=1.0, seed=seed).decide(batch, "run-1", START)
    assert set(statuses(rejected)) == {"rejected"}
    assert set(statuses(accepted)) == {"accepted"}


def test_acceptance_rate_over_many_seeded_orders_is_close_to_the_probability() -> None:
    # Given a seeded market accepting 70% of orders (deterministic: the seed fixes every draw)
    market = SimulatedMarket(ready_probability=1.0, accept_probability=0.7, seed=2024)

    # When it decides 2,000 orders
    results = market.decide(orders(2000), "run-1", START)

    # Then about 70% are accepted
    rate = statuses(results).count("accepted") / len(results)
    assert 0.65 <= rate <= 0.75


def test_readiness_rate_over_many_seeded_attempts_is_close_to_the_probability() -> None:
    market = SimulatedMarket(ready_probability=0.8, seed=2024)
    ready = [market.is_ready(f"run-{i}", 1) for i in range(2000)]
    assert 0.75 <= ready.count(True) / len(ready) <= 0.85


# --- What a result holds


def test_a_rejected_result_has_a_known_reason_and_no_power() -> None:
    # Given a market that rejects everything
    results = SimulatedMarket(accept_probability=0.0, seed=5).decide(orders(300), "run-1", START)

    # Then each rejection has one of the known reasons and zero power
    for result in results:
        assert result.reason in REJECTION_REASONS
        assert result.power == 0
        assert isinstance(result.power, Decimal)
    # And over many orders every reason occurs
    assert {r.reason for r in results} == set(REJECTION_REASONS)


def test_an_accepted_result_clears_exactly_the_orders_volume() -> None:
    # Given an order whose volume a float could not hold exactly
    exact = "2.1000000000000000000001"
    batch = [order("precise", parameter_2=exact), order("big", parameter_2="9.99E+125")]

    # When the market accepts it
    results = SimulatedMarket(accept_probability=1.0, seed=5).decide(batch, "run-1", START)

    # Then the cleared power is the order's parameter_2, digit for digit, and there is no reason
    assert [r.power for r in results] == [Decimal(exact), Decimal("9.99E+125")]
    assert all(isinstance(r.power, Decimal) for r in results)
    assert str(results[0].power) == exact
    assert [r.reason for r in results] == [None, None]
    assert [r.order_fields for r in results] == [
        {"parameter_1": "lot", "parameter_2": Decimal(exact)},
        {"parameter_1": "lot", "parameter_2": Decimal("9.99E+125")},
    ]


@pytest.mark.parametrize(
    "now",
    [
        START,
        datetime(2027, 1, 15, 23, 59, 59, 999000, tzinfo=UTC).timestamp(),
        datetime(2027, 1, 16, 0, 0, 0, tzinfo=UTC).timestamp(),
    ],
)
def test_auction_date_is_the_utc_date_of_now_and_decided_at_is_iso_utc(now: float) -> None:
    # When the market decides at a given moment
    (result,) = SimulatedMarket(accept_probability=1.0, seed=1).decide([order("a")], "run-1", now)

    # Then the auction date is that moment's UTC date, and decided_at is that moment in ISO 8601 UTC
    moment = datetime.fromtimestamp(now, UTC)
    assert result.auction_date == moment.date().isoformat()
    assert result.decided_at.endswith("Z")
    parsed = datetime.fromisoformat(result.decided_at.replace("Z", "+00:00"))
    assert parsed.utcoffset() is not None
    assert abs((parsed - moment).total_seconds()) < 0.001


def test_as_item_of_an_accepted_result_has_the_documented_keys_and_no_reason() -> None:
    (result,) = SimulatedMarket(accept_probability=1.0, seed=1).decide(
        [order("unique_id_1", parameter_2="4", parameter_1="abc")], "run-1", START
    )
    assert result.as_item() == {
        "record_id": "unique_id_1",
        "trader": TRADER,
        "status": "accepted",
        "power": "4",
        "parameter_1": "abc",
        "parameter_2": "4",
        "auction_date": "2027-01-15",
        "decided_at": iso_utc(START),
    }


def test_as_item_keeps_numbers_exact_as_decimal_strings() -> None:
    # Step Functions and Lambda's runtime would parse JSON numbers as floats and round this one
    (result,) = SimulatedMarket(accept_probability=1.0, seed=1).decide(
        [order("r", parameter_2="2.1000000000000000000001")], "run-1", START
    )
    item = json.loads(json.dumps(result.as_item()))
    assert Decimal(item["power"]) == Decimal("2.1000000000000000000001")
    assert Decimal(item["parameter_2"]) == Decimal("2.1000000000000000000001")


def test_as_item_of_a_rejected_result_carries_the_reason() -> None:
    (result,) = SimulatedMarket(accept_probability=0.0, seed=1).decide(
        [order("unique_id_2", parameter_2="2.1", parameter_1="def")], "run-1", START
    )
    item = result.as_item()
    assert set(item) == {
        "record_id",
        "trader",
        "status",
        "power",
        "parameter_1",
        "parameter_2",
        "auction_date",
        "decided_at",
        "reason",
    }
    assert item["status"] == "rejected"
    assert item["power"] == "0"
    assert item["parameter_2"] == "2.1"
    assert item["reason"] in REJECTION_REASONS


def test_a_result_carries_every_field_the_trader_sent() -> None:
    # Each of the order's fields (declared once, by OrderRequest) travels with its result: into the
    # run's S3 item and the rejection notice, and the validation message names them all.
    (result,) = SimulatedMarket(accept_probability=0.0, seed=5).decide([order("o1")], "run-1", START)
    item = result.as_item()
    assert set(ORDER_FIELDS) <= set(item)
    message = json.dumps({"result": item, "run_id": "run-1"})
    notice = notice_from_message(message, "order_rejected", None)
    assert set(ORDER_FIELDS) <= {label for label, _ in notice.fields}
    with pytest.raises(OrdersInvalid) as refused:
        parse_orders('[{"record_id": "a", "parameter_1": "x", "parameter_2": 1, "zzz": 1}]', Limits())
    (problem,) = refused.value.problems
    assert all(name in problem.message for name in ORDER_FIELDS)
