"""The API Lambda's order book: each trader's own orders, GET /orders with its filters and cursor,
DELETE /orders/{record_id}, and the operator role, on the local store."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from energy_auction import bootstrap
from energy_auction.adapters.aws import DynamoDbOrderStore
from energy_auction.handlers import api
from energy_auction.local.lambdas import LocalLambdaContext
from energy_auction.orders import ORDER_TTL_SECONDS, BatchTally, OrderStatus

from ..adapters.stores import TABLE, create_orders_table
from ..builders import key
from ..conftest import FakeClock
from ..events import api_event


@pytest.fixture(autouse=True)
def _local(local_container: bootstrap.Container) -> bootstrap.Container:
    return local_container


def call(method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    response = api.handler(api_event(method, path, body, **kwargs), LocalLambdaContext("api"))
    return (
        response["statusCode"],
        json.loads(response["body"], parse_float=Decimal),
        response.get("headers") or {},
    )


def submit(trader: str, *record_ids: str) -> None:
    orders = [{"record_id": r, "parameter_1": "lot", "parameter_2": 2} for r in record_ids]
    status, answer, _ = call("POST", "/orders", orders, principal=trader)
    assert status == 201, answer


def ids(answer: dict[str, Any]) -> list[str]:
    return [o["record_id"] for o in answer["orders"]]


def list_all(principal: str, role: str | None = None, **query: str) -> list[str]:
    """Every record_id of a listing, following next_cursor, two a page."""
    found: list[str] = []
    params: dict[str, str | list[str]] = {**query, "limit": "2"}
    for _ in range(50):
        status, answer, _ = call("GET", "/orders", principal=principal, role=role, query=params)
        assert status == 200, answer
        found += ids(answer)
        if answer["next_cursor"] is None:
            return found
        params = {**params, "cursor": answer["next_cursor"]}
    raise AssertionError("the listing never ended")


# --- Ownership


def test_another_traders_order_is_not_found_exactly_like_a_missing_one() -> None:
    submit("alice", "ord-1")

    theirs = call("GET", "/orders/ord-1", principal="bob")
    missing = call("GET", "/orders/nowhere", principal="bob")

    assert theirs[0] == missing[0] == 404
    assert theirs[1] == {**missing[1], "message": missing[1]["message"].replace("nowhere", "ord-1")}
    assert call("GET", "/orders/ord-1", principal="alice")[1]["trader"] == "alice"


def test_two_traders_submit_the_same_record_id_and_each_keeps_their_own() -> None:
    submit("alice", "ord-1")
    call(
        "POST", "/orders", [{"record_id": "ord-1", "parameter_1": "bobs", "parameter_2": 9}], principal="bob"
    )

    assert call("GET", "/orders/ord-1", principal="alice")[1]["parameter_1"] == "lot"
    assert call("GET", "/orders/ord-1", principal="bob")[1]["parameter_1"] == "bobs"


# --- GET /orders


def test_a_trader_lists_their_own_live_orders_newest_first(clock: FakeClock) -> None:
    for i in range(5):
        submit("alice", f"a{i}")
        clock.advance(1)
    submit("bob", "b0")

    assert list_all("alice") == ["a4", "a3", "a2", "a1", "a0"]
    clock.advance(ORDER_TTL_SECONDS - 4)  # 24 h after a1's submission: a0 and a1 (only those) expired
    assert list_all("alice") == ["a4", "a3", "a2"]


def test_a_listing_filters_on_status_and_since(clock: FakeClock) -> None:
    submit("alice", "early")
    clock.advance(60)
    submit("alice", "late", "gone")
    call("DELETE", "/orders/gone", principal="alice")

    assert list_all("alice", status="cancelled") == ["gone"]
    assert list_all("alice", status="pending") == ["late", "early"]
    since = "2027-01-15T08:01:00Z"
    assert sorted(list_all("alice", since=since)) == ["gone", "late"]
    assert list_all("alice", since="2027-01-15T09:01:00+01:00") == list_all("alice", since=since)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "open"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2027-01-15T08:00:00"}, "since"),  # no time zone
        ({"sort": "asc"}, "sort"),
        ({"limit": ["2", "3"]}, "limit"),
        ({"limit": "0" * 4301 + "1"}, "limit"),  # digits past Python's int limit
    ],
)
def test_a_bad_query_is_a_400_naming_the_parameter(query: dict[str, Any], parameter: str) -> None:
    status, answer, _ = call("GET", "/orders", query=query)

    assert status == 400
    assert (answer["error"], answer["parameter"]) == ("invalid_query", parameter)


def test_the_default_page_is_50_and_the_cursor_goes_on_where_it_stopped() -> None:
    submit("alice", *[f"o{i:03}" for i in range(60)])

    status, first, _ = call("GET", "/orders", principal="alice")
    assert status == 200
    assert len(first["orders"]) == 50
    _, rest, _ = call("GET", "/orders", principal="alice", query={"cursor": first["next_cursor"]})

    assert len(rest["orders"]) == 10
    assert rest["next_cursor"] is None
    assert sorted(ids(first) + ids(rest)) == [f"o{i:03}" for i in range(60)]


@pytest.mark.parametrize("change", ["forged", "other-trader", "other-filter", "operator"])
def test_a_cursor_works_only_for_its_caller_and_its_filters(change: str) -> None:
    submit("alice", "a0", "a1", "a2")
    submit("bob", "b0", "b1", "b2")
    _, first, _ = call("GET", "/orders", principal="alice", query={"limit": "1"})
    cursor = first["next_cursor"]
    assert cursor

    principal, role, query = {
        "forged": ("alice", None, {"cursor": cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")}),
        "other-trader": ("bob", None, {"cursor": cursor}),
        "other-filter": ("alice", None, {"cursor": cursor, "status": "pending"}),
        "operator": ("alice", "operator", {"cursor": cursor}),
    }[change]
    status, answer, _ = call("GET", "/orders", principal=principal, role=role, query=query)

    assert (status, answer["error"]) == (400, "invalid_cursor")


def test_an_operator_lists_everyone_or_one_trader_and_reads_any_order() -> None:
    submit("alice", "a0")
    submit("bob", "b0")

    assert sorted(list_all("ops", role="operator")) == ["a0", "b0"]
    assert list_all("ops", role="operator", trader="bob") == ["b0"]
    status, order, _ = call("GET", "/orders/b0", principal="ops", role="operator", query={"trader": "bob"})
    assert (status, order["trader"]) == (200, "bob")
    # an operator names whose order to read; an id no order can have is a 404 all the same
    assert call("GET", "/orders/b0", principal="ops", role="operator")[1]["error"] == "invalid_query"
    assert call("GET", "/orders/a%0Ab", principal="ops", role="operator")[0] == 404


def test_a_runs_record_in_the_dynamodb_orders_table_is_in_no_listing(
    install: Callable[..., bootstrap.Container], clock: FakeClock
) -> None:
    with mock_aws():
        # Given the orders table on DynamoDB, orders of two traders, and a run's record beside them
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_orders_table(client, TABLE)
        store = DynamoDbOrderStore(client, TABLE)
        install(order_store=store)
        submit("alice", "a0", "a1")
        submit("bob", "b0")
        store.begin_run("run-1", 3, 0, int(clock.now))
        store.record_batch("run-1", 0, BatchTally(accepted=3, batches=1))

        # Then a trader lists their orders, and an operator everyone's or one trader's: orders only
        assert list_all("alice") == ["a1", "a0"]
        assert list_all("ops", role="operator") == ["b0", "a1", "a0"]
        assert list_all("ops", role="operator", trader="run") == []
        assert (
            call("GET", "/orders/run-1", principal="ops", role="operator", query={"trader": "run"})[0] == 404
        )


def test_a_trader_cannot_list_or_read_another_traders_orders_by_naming_them() -> None:
    submit("bob", "b0")

    listing = call("GET", "/orders", principal="alice", query={"trader": "bob"})
    reading = call("GET", "/orders/b0", principal="alice", query={"trader": "bob"})

    assert (listing[0], listing[1]["error"]) == (403, "forbidden")
    assert (reading[0], reading[1]["error"]) == (403, "forbidden")
    assert list_all("alice", trader="alice") == []  # naming themselves is fine


@pytest.mark.parametrize(("method", "path"), [("POST", "/orders"), ("DELETE", "/orders/b0")])
def test_an_operator_may_not_submit_or_cancel(
    method: str, path: str, local_container: bootstrap.Container
) -> None:
    submit("bob", "b0")
    body = [{"record_id": "x", "parameter_1": "lot", "parameter_2": 1}] if method == "POST" else None

    status, answer, _ = call(method, path, body, principal="ops", role="operator")

    assert (status, answer["error"]) == (403, "forbidden")
    assert local_container.order_store.get_order(key("b0", "bob")).status is OrderStatus.PENDING  # type: ignore[union-attr]
    assert local_container.order_store.get_order(key("x", "ops")) is None


# --- DELETE /orders/{record_id}


def test_cancelling_a_pending_order_answers_it_cancelled_and_again_the_same(clock: FakeClock) -> None:
    submit("alice", "ord-1")
    clock.advance(5)

    status, cancelled, _ = call("DELETE", "/orders/ord-1", principal="alice")
    again = call("DELETE", "/orders/ord-1", principal="alice")

    assert status == 200
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] == "2027-01-15T08:00:05.000Z"
    assert again[0] == 200
    assert again[1] == cancelled
    # it stays readable and listed until it expires
    assert call("GET", "/orders/ord-1", principal="alice")[1] == cancelled
    assert list_all("alice") == ["ord-1"]


def test_a_later_post_makes_a_cancelled_record_id_a_new_pending_order() -> None:
    submit("alice", "ord-1")
    call("DELETE", "/orders/ord-1", principal="alice")

    submit("alice", "ord-1")

    order = call("GET", "/orders/ord-1", principal="alice")[1]
    assert order["status"] == "pending"
    assert "cancelled_at" not in order


def test_cancelling_a_locked_or_processed_order_is_a_409_and_changes_nothing(
    local_container: bootstrap.Container,
) -> None:
    submit("alice", "held", "done")
    store = local_container.order_store
    now = int(local_container.clock())
    store.claim_orders([key("held", "alice"), key("done", "alice")], "run-1", now, 600)
    store.complete_order(key("done", "alice"), "run-1", OrderStatus.ACCEPTED, {"run_id": "run-1"})

    held = call("DELETE", "/orders/held", principal="alice")
    done = call("DELETE", "/orders/done", principal="alice")

    assert (held[0], held[1]["error"], held[1]["record_id"]) == (409, "order_locked", "held")
    assert (done[0], done[1]["error"]) == (409, "order_already_processed")
    assert store.get_order(key("held", "alice")).claim_run_id == "run-1"  # type: ignore[union-attr]
    assert store.get_order(key("done", "alice")).status is OrderStatus.ACCEPTED  # type: ignore[union-attr]


@pytest.mark.parametrize("record_id", ["nowhere", "bobs", "a%0Ab", "-bad"])
def test_cancelling_an_unknown_or_another_traders_order_is_a_404(record_id: str) -> None:
    submit("bob", "bobs")

    status, answer, _ = call("DELETE", f"/orders/{record_id}", principal="alice")

    assert (status, answer["error"]) == (404, "not_found")
