"""The order book over HTTP on the local stack as a real process: two traders and an operator, each
with a token from ``energy-auction token``, listing, cancelling, and a pipeline run that leaves a
cancelled order alone."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from tests.e2e.stack import HttpResult, LocalStack


def call(stack: LocalStack, method: str, path: str, token: str, **query: str) -> HttpResult:
    target = f"{path}?{urlencode(query)}" if query else path
    return stack.request(method, target, headers={"Authorization": f"Bearer {token}"})


def listing(stack: LocalStack, token: str, **query: str) -> list[str]:
    found: list[str] = []
    params = {"limit": "2", **query}
    while True:
        answer = call(stack, "GET", "/orders", token, **params)
        assert answer.status == 200, answer.body
        page: dict[str, Any] = answer.json()
        found += [o["record_id"] for o in page["orders"]]
        if page["next_cursor"] is None:
            return found
        params["cursor"] = page["next_cursor"]


def orders(*record_ids: str) -> list[dict[str, Any]]:
    return [{"record_id": r, "parameter_1": "lot", "parameter_2": 1.5} for r in record_ids]


def test_two_traders_and_an_operator_share_the_stack_and_see_what_they_should(stack: LocalStack) -> None:
    # Given two traders (one with a subject that looks like a path) and an operator
    alice = stack.token("--sub", "alice")
    bob = stack.token("--sub", "desk/../bob")
    operator = stack.token("--sub", "ops", "--role", "operator")

    # When both submit, using the same record_id for one order
    assert stack.post_orders(orders("shared", "a-1", "a-2"), alice).status == 201
    assert stack.post_orders(orders("shared", "b-1"), bob).status == 201

    # Then each reads and lists only their own, and the other's order is a plain 404
    assert sorted(listing(stack, alice)) == ["a-1", "a-2", "shared"]
    assert sorted(listing(stack, bob)) == ["b-1", "shared"]
    assert stack.get_order("shared", alice).json()["trader"] == "alice"
    assert stack.get_order("shared", bob).json()["trader"] == "desk/../bob"
    assert stack.get_order("b-1", alice).status == 404
    # and the operator sees everyone's, or one trader's, and may not submit or cancel
    assert sorted(listing(stack, operator)) == ["a-1", "a-2", "b-1", "shared", "shared"]
    assert sorted(listing(stack, operator, trader="desk/../bob")) == ["b-1", "shared"]
    assert call(stack, "GET", "/orders/shared", operator, trader="alice").json()["trader"] == "alice"
    assert stack.post_orders(orders("o-1"), operator).status == 403
    assert call(stack, "DELETE", "/orders/a-1", operator).status == 403

    # When alice cancels one, twice, and bob tries to cancel hers
    first = call(stack, "DELETE", "/orders/a-1", alice)
    again = call(stack, "DELETE", "/orders/a-1", alice)
    assert call(stack, "DELETE", "/orders/a-2", bob).status == 404

    # Then both answers are the same cancelled order, and it is listed as cancelled
    assert (first.status, again.status) == (200, 200)
    assert first.json() == again.json()
    assert first.json()["status"] == "cancelled"
    assert listing(stack, alice, status="cancelled") == ["a-1"]

    # When a pipeline run settles the book
    done = stack.cli("run-pipeline", "--ready-probability", "1", "--accept-probability", "1", "--seed", "1")
    summary = json.loads(done.stdout)

    # Then it settled every order but the cancelled one, which no run touches
    assert (summary["status"], summary["accepted"]) == ("SUCCEEDED", 4)
    assert stack.get_order("a-1", alice).json()["status"] == "cancelled"
    assert {stack.get_order(r, alice).json()["status"] for r in ("a-2", "shared")} == {"accepted"}
    assert call(stack, "DELETE", "/orders/a-2", alice).json()["error"] == "order_already_processed"
    results = sorted(p.name for p in (stack.home / "results").rglob("*.json"))
    assert results == sorted(["a-2.json", "shared.json", "shared.json", "b-1.json"])


def test_a_forged_or_borrowed_cursor_is_refused(stack: LocalStack) -> None:
    alice = stack.token("--sub", "alice")
    bob = stack.token("--sub", "bob")
    stack.post_orders(orders("a-1", "a-2", "a-3"), alice)
    cursor = call(stack, "GET", "/orders", alice, limit="1").json()["next_cursor"]

    borrowed = call(stack, "GET", "/orders", bob, cursor=cursor)
    forged = call(stack, "GET", "/orders", alice, cursor=cursor[::-1])

    assert (borrowed.status, borrowed.json()["error"]) == (400, "invalid_cursor")
    assert (forged.status, forged.json()["error"]) == (400, "invalid_cursor")
