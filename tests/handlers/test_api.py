"""The API Lambda: POST /orders and GET /orders/{record_id}, every status it answers, on the local store."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from energy_auction import bootstrap
from energy_auction.errors import StorageUnavailable
from energy_auction.handlers import api
from energy_auction.local.lambdas import LocalLambdaContext
from energy_auction.orders import Order, OrderStatus
from energy_auction.settings import Backend, Settings

from ..builders import TRADER
from ..conftest import SECRET, START, FakeClock
from ..events import api_event
from ..metrics import published_metrics

DAY = 86400
EXAMPLE = [
    {"record_id": "unique_id_1", "parameter_1": "abc", "parameter_2": 4},
    {"record_id": "unique_id_2", "parameter_1": "def", "parameter_2": Decimal("2.1")},
]


def call(event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = api.handler(event, LocalLambdaContext("api"))
    return response


def post(body: Any = None, **kwargs: Any) -> dict[str, Any]:
    return call(api_event("POST", "/orders", body, **kwargs))


def get(record_id: str) -> dict[str, Any]:
    return call(api_event("GET", f"/orders/{record_id}"))


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"], parse_float=Decimal)


def header(response: dict[str, Any], name: str) -> str | None:
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower():
            return ", ".join(str(v) for v in values)
    return None


def assert_error(response: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    assert response["statusCode"] == status, response
    assert header(response, "Content-Type") == "application/json"
    payload: dict[str, Any] = body(response)
    assert payload["error"] == code
    assert isinstance(payload["message"], str)
    assert payload["message"]
    return payload


def install(tmp_path: Path, clock: FakeClock, **overrides: Any) -> bootstrap.Container:
    settings = Settings(backend=Backend.LOCAL, home=tmp_path / "custom", jwt_secret=SECRET, **overrides)
    container = bootstrap.Container(settings, clock=clock)
    bootstrap.use(container)
    return container


def stored_order(record_id: str, status: OrderStatus, submitted: float, parameter_2: str = "1") -> Order:
    return Order(
        record_id=record_id,
        trader=TRADER,
        parameter_1="abc",
        parameter_2=Decimal(parameter_2),
        status=status,
        submitted_at="2027-01-15T08:00:00.000Z",
        expires_at=int(submitted) + DAY,
        outcome={"cleared": True} if status is not OrderStatus.PENDING else None,
    )


class UnavailableStore:
    """A store whose backend keeps failing."""

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        raise StorageUnavailable(retry_after=7)

    def get_order(self, record_id: str) -> Order | None:
        raise StorageUnavailable(retry_after=7)


pytestmark = pytest.mark.usefixtures("local_container")


# --- POST /orders, then GET /orders/{record_id}


def test_valid_orders_are_stored_and_acknowledged() -> None:
    # When the example request is posted
    response = post(EXAMPLE)

    # Then it is created, and each order is reported pending until 24 hours from now
    assert response["statusCode"] == 201
    assert header(response, "Content-Type") == "application/json"
    assert body(response) == {
        "stored": 2,
        "orders": [
            {"record_id": "unique_id_1", "status": "pending", "expires_at": int(START) + DAY},
            {"record_id": "unique_id_2", "status": "pending", "expires_at": int(START) + DAY},
        ],
    }


def test_stored_order_is_returned_with_exact_values() -> None:
    # Given an order with a value no binary float can hold
    post([{"record_id": "precise", "parameter_1": "xyz", "parameter_2": Decimal("2.1000000000000000000001")}])

    # When it is read back
    response = get("precise")

    # Then it is the same order, with parameter_2 as an exact JSON number
    assert response["statusCode"] == 200
    assert '"parameter_2":2.1000000000000000000001' in response["body"]
    assert body(response) == {
        "record_id": "precise",
        "parameter_1": "xyz",
        "parameter_2": Decimal("2.1000000000000000000001"),
        "trader": "trader-1",
        "status": "pending",
        "submitted_at": "2027-01-15T08:00:00.000Z",
        "expires_at": int(START) + DAY,
    }


def test_integer_parameter_2_is_returned_as_an_integer() -> None:
    post(EXAMPLE)
    assert '"parameter_2":4,' in get("unique_id_1")["body"]
    assert '"parameter_2":2.1,' in get("unique_id_2")["body"]


def test_unknown_order_is_not_found() -> None:
    payload = assert_error(get("never-posted"), 404, "not_found")
    assert "never-posted" in payload["message"]


def test_malformed_record_id_in_the_path_is_not_found() -> None:
    assert_error(get("-not-an-id"), 404, "not_found")
    assert_error(get("a" * 65), 404, "not_found")


@pytest.mark.parametrize("record_id", ["a\nb", "a/b", 'a"b', "a#b", "a\\b"])
def test_an_id_the_resolver_cannot_route_is_a_missing_order(record_id: str) -> None:
    # Given API Gateway routed /orders/{record_id} with an id holding a character no id has
    response = get(record_id)

    # Then the answer is exactly that of a missing order, not "no such route"
    payload = assert_error(response, 404, "not_found")
    assert payload == {"error": "not_found", "message": f"no unexpired order with record_id {record_id!r}"}
    assert payload.keys() == body(get("never-posted")).keys()


def test_unknown_route_is_not_found() -> None:
    assert_error(call(api_event("GET", "/nowhere")), 404, "not_found")


def test_base64_encoded_body_is_accepted() -> None:
    raw = json.dumps([{"record_id": "b64", "parameter_1": "été", "parameter_2": 2.5}]).encode()

    response = post(raw_body=raw)

    assert response["statusCode"] == 201
    order = body(get("b64"))
    assert (order["parameter_1"], order["parameter_2"]) == ("été", Decimal("2.5"))


def test_json_content_type_with_charset_or_suffix_is_accepted() -> None:
    first = [{"record_id": "c1", "parameter_1": "a", "parameter_2": 1}]
    second = [{"record_id": "c2", "parameter_1": "a", "parameter_2": 1}]
    assert post(first, headers={"Content-Type": "application/json; charset=utf-8"})["statusCode"] == 201
    assert post(second, headers={"Content-Type": "application/vnd.orders+json"})["statusCode"] == 201


# --- Refusals: the status, the error code, and nothing stored


def test_invalid_json_is_a_bad_request_and_stores_nothing() -> None:
    response = post(raw_body='[{"record_id": "a", "parameter_1": "x", "parameter_2": 1,},]')

    assert_error(response, 400, "invalid_json")
    assert get("a")["statusCode"] == 404


def test_base64_body_that_is_not_utf8_is_a_bad_request() -> None:
    # The local gateway (like API Gateway for binary media) base64-encodes bodies that are not UTF-8 text.
    response = post(raw_body=b'[{"record_id": "a", "parameter_1": "\xff", "parameter_2": 1}]')

    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_utf16_or_utf32_body_is_invalid_json_and_stores_nothing(encoding: str) -> None:
    # Given the example orders encoded as UTF-16 or UTF-32 (base64 in the event, as binary media)
    raw = json.dumps([{"record_id": "wide", "parameter_1": "x", "parameter_2": 1}]).encode(encoding)

    # When posted, then they are refused as invalid JSON, and nothing is stored
    payload = assert_error(post(raw_body=raw), 400, "invalid_json")
    assert "line 1 column" in payload["message"]
    assert get("wide")["statusCode"] == 404


def test_a_text_body_with_a_byte_order_mark_is_invalid_json() -> None:
    text = "\ufeff" + json.dumps([{"record_id": "bom", "parameter_1": "x", "parameter_2": 1}])

    payload = assert_error(post(raw_body=text), 400, "invalid_json")

    assert "byte order mark" in payload["message"]
    assert get("bom")["statusCode"] == 404


def test_deeply_nested_json_is_invalid_json_in_plain_words() -> None:
    payload = assert_error(post(raw_body="[" * 100_000), 400, "invalid_json")
    assert payload["message"] == "body is not valid JSON: nested too deeply"


def test_invalid_orders_are_unprocessable_with_every_problem_listed() -> None:
    # Given one valid and two invalid orders
    orders = [
        {"record_id": "fine", "parameter_1": "x", "parameter_2": 1},
        {"record_id": "a/b", "parameter_1": "x", "parameter_2": 1},
        {"record_id": "c", "parameter_1": "x", "parameter_2": "4"},
    ]

    # When they are posted
    payload = assert_error(post(orders), 422, "validation_failed")

    # Then every problem is named, and not even the valid order is stored
    assert payload["problems"] == [
        {
            "index": 1,
            "record_id": "a/b",
            "field": "record_id",
            "message": (
                "must be 1 to 64 characters: letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            ),
        },
        {"index": 2, "record_id": "c", "field": "parameter_2", "message": "must be a JSON number"},
    ]
    assert get("fine")["statusCode"] == 404


@pytest.mark.parametrize("raw", ["", "[]", "{}", "null"])
def test_empty_or_non_array_body_is_unprocessable(raw: str) -> None:
    payload = assert_error(post(raw_body=raw), 422, "validation_failed")
    assert payload["problems"] == [
        {
            "index": None,
            "record_id": None,
            "field": None,
            "message": "body must be a non-empty JSON array of orders",
        }
    ]


def test_missing_body_is_unprocessable() -> None:
    assert_error(post(None), 422, "validation_failed")


def test_too_many_orders_is_unprocessable_and_stores_nothing(tmp_path: Path, clock: FakeClock) -> None:
    install(tmp_path, clock, max_orders_per_request=2)
    orders = [{"record_id": f"r{i}", "parameter_1": "x", "parameter_2": i} for i in range(3)]

    payload = assert_error(post(orders), 422, "too_many_orders")

    assert payload["limit"] == 2
    assert get("r0")["statusCode"] == 404
    assert post(orders[:2])["statusCode"] == 201


def test_body_too_large_is_refused_and_stores_nothing(tmp_path: Path, clock: FakeClock) -> None:
    install(tmp_path, clock, max_body_bytes=1024)
    orders = [{"record_id": "big", "parameter_1": "x" * 200, "parameter_2": 1} for _ in range(5)]

    payload = assert_error(post(orders), 413, "body_too_large")

    assert payload["limit_bytes"] == 1024
    assert get("big")["statusCode"] == 404


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json-ish"])
def test_non_json_content_type_is_unsupported(content_type: str) -> None:
    response = post(EXAMPLE, headers={"Content-Type": content_type})

    assert_error(response, 415, "unsupported_media_type")
    assert get("unique_id_1")["statusCode"] == 404


def test_lower_case_content_type_header_is_honoured() -> None:
    event = api_event("POST", "/orders", EXAMPLE)
    del event["headers"]["Content-Type"], event["multiValueHeaders"]["Content-Type"]
    event["headers"]["content-type"] = "text/plain"
    event["multiValueHeaders"]["content-type"] = ["text/plain"]

    assert_error(call(event), 415, "unsupported_media_type")


def test_changing_a_processed_order_conflicts_and_stores_nothing(
    local_container: bootstrap.Container, clock: FakeClock
) -> None:
    # Given the auction has processed order "done"
    local_container.order_store.put_orders(
        [stored_order("done", OrderStatus.ACCEPTED, clock())], now=int(clock())
    )
    clock.advance(60)

    # When a request changes it along with a new order
    orders = [
        {"record_id": "new-one", "parameter_1": "x", "parameter_2": 1},
        {"record_id": "done", "parameter_1": "changed", "parameter_2": 99},
    ]
    payload = assert_error(post(orders), 409, "order_already_processed")

    # Then the request is refused naming the processed order, and nothing from it is stored
    assert payload["record_ids"] == ["done"]
    assert get("new-one")["statusCode"] == 404
    unchanged = body(get("done"))
    assert (unchanged["status"], unchanged["parameter_1"]) == ("accepted", "abc")


def test_store_outage_is_service_unavailable_with_retry_after(install: Callable[..., Any]) -> None:
    # Given the order store keeps failing
    install(order_store=UnavailableStore())

    # Then both routes answer 503 and tell the client when to retry
    for response in (post(EXAMPLE), get("unique_id_1")):
        payload = assert_error(response, 503, "storage_unavailable")
        assert header(response, "Retry-After") == "7"
        assert payload["retry_after_seconds"] == 7


def test_nothing_is_stored_after_a_store_outage(
    local_container: bootstrap.Container, install: Callable[..., Any]
) -> None:
    real_store = local_container.order_store
    install(order_store=UnavailableStore())
    assert post(EXAMPLE)["statusCode"] == 503

    install(order_store=real_store)
    assert get("unique_id_1")["statusCode"] == 404


# --- Resubmission and expiry


def test_resubmitting_the_same_request_succeeds_and_keeps_one_order(clock: FakeClock) -> None:
    first = post(EXAMPLE)
    clock.advance(1)
    again = post(EXAMPLE)

    assert first["statusCode"] == again["statusCode"] == 201
    assert body(again)["stored"] == 2
    assert body(get("unique_id_1"))["parameter_2"] == 4


def test_changing_a_pending_order_replaces_it_with_a_new_expiry(clock: FakeClock) -> None:
    # Given a pending order submitted at START
    post([{"record_id": "p", "parameter_1": "old", "parameter_2": 1}])

    # When it is changed two hours later
    clock.advance(7200)
    response = post([{"record_id": "p", "parameter_1": "new", "parameter_2": Decimal("1.5")}])

    # Then the new version replaces it, living 24 hours from the change
    assert response["statusCode"] == 201
    assert body(response)["orders"][0]["expires_at"] == int(START) + 7200 + DAY
    order = body(get("p"))
    assert (order["parameter_1"], order["parameter_2"], order["status"]) == ("new", Decimal("1.5"), "pending")
    assert order["expires_at"] == int(START) + 7200 + DAY
    assert order["submitted_at"] == "2027-01-15T10:00:00.000Z"

    # and it is still there when the original would have expired
    clock.advance(DAY - 7200)
    assert get("p")["statusCode"] == 200


def test_order_disappears_24_hours_after_submission(clock: FakeClock) -> None:
    post(EXAMPLE)

    clock.advance(DAY - 1)
    assert get("unique_id_1")["statusCode"] == 200

    clock.advance(1)
    assert_error(get("unique_id_1"), 404, "not_found")


def test_expired_processed_order_can_be_submitted_again(
    local_container: bootstrap.Container, clock: FakeClock
) -> None:
    # Given an order the auction accepted, now 24 hours old
    local_container.order_store.put_orders(
        [stored_order("old", OrderStatus.ACCEPTED, clock())], now=int(clock())
    )
    clock.advance(DAY)
    assert get("old")["statusCode"] == 404

    # When its record_id is submitted again, then it is a new pending order
    response = post([{"record_id": "old", "parameter_1": "fresh", "parameter_2": 3}])
    assert response["statusCode"] == 201
    order = body(get("old"))
    assert (order["status"], order["parameter_1"], order["expires_at"]) == (
        "pending",
        "fresh",
        int(START) + 2 * DAY,
    )
    assert "outcome" not in order


def test_rejected_live_order_also_conflicts(local_container: bootstrap.Container, clock: FakeClock) -> None:
    local_container.order_store.put_orders(
        [stored_order("rej", OrderStatus.REJECTED, clock())], now=int(clock())
    )

    response = post([{"record_id": "rej", "parameter_1": "x", "parameter_2": 1}])

    payload = assert_error(response, 409, "order_already_processed")
    assert payload["record_ids"] == ["rej"]


# --- Metrics: every answer publishes one, so Powertools never warns of an invocation without


def test_a_get_publishes_orders_read_and_no_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stored order
    post(EXAMPLE)

    # When it is read through the handler
    with published_metrics(monkeypatch, capsys) as published:
        response = get("unique_id_1")

    # Then the read is counted, and no "No application metrics to publish" warning is logged
    assert response["statusCode"] == 200
    assert published.metrics == {"OrdersRead": [1]}
    assert published.warnings == []


@pytest.mark.parametrize(
    ("request_event", "status"),
    [
        (api_event("GET", "/orders/nobody"), 404),
        (api_event("POST", "/orders", [{"record_id": "a!"}]), 422),
        (api_event("DELETE", "/nowhere"), 404),
    ],
    ids=["unknown-order", "invalid-body", "unknown-route"],
)
def test_a_refused_request_publishes_requests_refused_and_no_warning(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request_event: dict[str, Any],
    status: int,
) -> None:
    with published_metrics(monkeypatch, capsys) as published:
        response = call(request_event)

    assert response["statusCode"] == status
    assert published.metrics == {"RequestsRefused": [1]}
    assert published.warnings == []


def test_a_post_publishes_orders_stored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with published_metrics(monkeypatch, capsys) as published:
        post(EXAMPLE)

    assert published.metrics == {"OrdersStored": [2]}
    assert published.warnings == []
