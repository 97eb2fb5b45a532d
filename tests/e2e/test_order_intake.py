"""The local stack as a user meets it: a real process, HTTP on loopback, the token command."""

from __future__ import annotations

import json
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import jwt
import pytest

from .stack import LocalStack, OrderBody

pytestmark = pytest.mark.e2e

EXAMPLE: list[OrderBody] = [
    {"record_id": "unique_id_1", "parameter_1": "abc", "parameter_2": 4},
    {"record_id": "unique_id_2", "parameter_1": "def", "parameter_2": 2.1},
]


def test_health_answers_without_auth(stack: LocalStack) -> None:
    response = stack.request("GET", "/health")
    assert response.status == 200
    assert response.json() == {"status": "ok"}


def test_submitted_orders_can_be_read_back_exactly(stack: LocalStack) -> None:
    # Given a token from the token command
    token = stack.token()
    # When the README's example orders are posted
    before = int(time.time())
    created = stack.post_orders(EXAMPLE, token)
    # Then the answer names each stored record_id and its expiry, 24 hours on
    assert created.status == 201, created.body
    receipt = created.json()
    assert [o["record_id"] for o in receipt["orders"]] == ["unique_id_1", "unique_id_2"]
    for order in receipt["orders"]:
        assert before + 86_400 <= order["expires_at"] <= int(time.time()) + 86_400
    # And each order reads back with its exact parameters and status pending
    got = stack.get_order("unique_id_2", token)
    assert got.status == 200
    order = got.json()
    assert order["parameter_2"] == Decimal("2.1")
    assert order["parameter_1"] == "def"
    assert order["status"] == "pending"
    assert order["expires_at"] == receipt["orders"][1]["expires_at"]


def test_a_plain_pyjwt_token_made_from_the_secret_file_is_accepted(stack: LocalStack) -> None:
    secret_file = stack.home / "jwt-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 43  # 32+ random bytes, url-safe base64
    now = int(time.time())
    token = jwt.encode({"sub": "desk-7", "iat": now, "exp": now + 60}, secret, algorithm="HS256")
    assert stack.post_orders(EXAMPLE[:1], token).status == 201


def test_requests_without_a_good_token_are_refused_and_change_nothing(stack: LocalStack) -> None:
    token = stack.token()
    expired = stack.token("--ttl", "1")
    time.sleep(1.1)
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {expired}"},
    ):
        response = stack.request(
            "POST", "/orders", json.dumps(EXAMPLE), {**headers, "Content-Type": "application/json"}
        )
        assert response.status == 401, headers
        assert response.json()["error"] == "unauthorized"
    assert stack.get_order("unique_id_1", token).status == 404


def test_bad_input_gets_a_clear_error_and_stores_nothing(stack: LocalStack) -> None:
    token = stack.token()
    trailing_commas = '[{"record_id": "a", "parameter_1": "x", "parameter_2": 1,},]'
    response = stack.post_orders(None, token, raw=trailing_commas)
    assert response.status == 400
    assert response.json()["error"] == "invalid_json"

    mixed = [
        {"record_id": "good", "parameter_1": "x", "parameter_2": 1},
        {"record_id": "bad", "parameter_1": "x", "parameter_2": True},
    ]
    response = stack.post_orders(mixed, token)
    assert response.status == 422
    assert response.json()["problems"] == [
        {"index": 1, "record_id": "bad", "field": "parameter_2", "message": "must be a JSON number"}
    ]
    assert stack.get_order("good", token).status == 404


def test_resubmitting_is_safe_and_a_change_replaces_the_pending_order(stack: LocalStack) -> None:
    token = stack.token()
    assert stack.post_orders(EXAMPLE, token).status == 201
    assert stack.post_orders(EXAMPLE, token).status == 201  # a client retry
    changed = [{**EXAMPLE[0], "parameter_2": 5}]
    assert stack.post_orders(changed, token).status == 201
    assert stack.get_order("unique_id_1", token).json()["parameter_2"] == 5


def test_orders_survive_a_restart(stack: LocalStack) -> None:
    token = stack.token()
    assert stack.post_orders(EXAMPLE, token).status == 201
    secret = (stack.home / "jwt-secret").read_text()
    # When the stack is stopped and started again on the same home folder
    assert stack.stop() == 0
    stack.start()
    # Then the same token still works and every stored order is still there
    assert (stack.home / "jwt-secret").read_text() == secret
    for order in EXAMPLE:
        assert stack.get_order(order["record_id"], token).status == 200


def test_concurrent_clients_are_all_served(stack: LocalStack) -> None:
    token = stack.token()

    def submit(n: int) -> int:
        orders = [{"record_id": f"c{n}-{i}", "parameter_1": "p", "parameter_2": i} for i in range(20)]
        return stack.post_orders(orders, token).status

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(submit, range(32)))
    assert statuses == [201] * 32
    assert all(stack.get_order(f"c{n}-19", token).status == 200 for n in range(32))


def test_body_size_limit_and_order_limit_are_configurable(tmp_path: Path) -> None:
    stack = LocalStack(
        home=tmp_path / "home",
        env={"ENERGY_AUCTION_MAX_BODY_BYTES": "2048", "ENERGY_AUCTION_MAX_ORDERS_PER_REQUEST": "3"},
    ).start()
    try:
        token = stack.token()
        big = [{"record_id": "big", "parameter_1": "x" * 250, "parameter_2": 1}] * 10
        assert stack.post_orders(big, token).status == 413
        four = [{"record_id": f"o{i}", "parameter_1": "x", "parameter_2": 1} for i in range(4)]
        response = stack.post_orders(four, token)
        assert response.status == 422
        assert response.json()["error"] == "too_many_orders"
        assert stack.get_order("o0", token).status == 404
    finally:
        stack.stop()
