"""LocalGateway in-process: routing, the authorizer and its policy, and the proxy event the API receives."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import pytest

from energy_auction import codec
from energy_auction.errors import (
    BEARER_CHALLENGE,
    GATEWAY_RESPONSES,
    INVALID_REQUEST_CHALLENGE,
    INVALID_TOKEN_CHALLENGE,
)
from energy_auction.handlers import api, authorizer
from energy_auction.local.gateway import (
    API_ID,
    REGION,
    STAGE,
    GatewayResponse,
    LocalGateway,
    policy_allows,
)
from energy_auction.local.lambdas import LOCAL_ACCOUNT, Handler, LocalFunction

from ..events import bearer, invalid_authorization

pytestmark = pytest.mark.usefixtures("local_container")

ARN = f"arn:aws:execute-api:{REGION}:{LOCAL_ACCOUNT}:{API_ID}/{STAGE}"
ORDERS = [{"record_id": "gw-1", "parameter_1": "abc", "parameter_2": Decimal("2.1000000000000000000001")}]


class SpyFunction(LocalFunction):
    """A LocalFunction that records every event it is invoked with."""

    def __init__(self, name: str, handler: Handler) -> None:
        super().__init__(name, handler)
        self.events: list[dict[str, Any]] = []

    def invoke(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        return super().invoke(event)


def spy_api() -> SpyFunction:
    return SpyFunction("api", api.handler)


def real_authorizer() -> SpyFunction:
    return SpyFunction("authorizer", authorizer.handler)


def policy(
    effect: str, resource: Any, action: Any = "execute-api:Invoke", principal: str = "p"
) -> dict[str, Any]:
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": action, "Effect": effect, "Resource": resource}],
        },
        "context": {"sub": principal},
    }


def fixed_authorizer(result: dict[str, Any]) -> SpyFunction:
    return SpyFunction("authorizer", lambda event, context: result)


def json_body(response: GatewayResponse) -> Any:
    return json.loads(response.body, parse_float=Decimal)


def send(
    gateway: LocalGateway,
    method: str,
    target: str,
    body: Any = None,
    *,
    authorization: str | None = None,
    extra_headers: list[tuple[str, str]] | None = None,
) -> GatewayResponse:
    headers = [("Host", "localhost"), ("Content-Type", "application/json")]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    headers += extra_headers or []
    raw = body if isinstance(body, bytes) else (b"" if body is None else codec.dumps(body).encode())
    return gateway.handle(method, target, headers, raw)


@pytest.fixture
def gateway_api() -> SpyFunction:
    return spy_api()


@pytest.fixture
def gateway(gateway_api: SpyFunction) -> LocalGateway:
    return LocalGateway(real_authorizer(), gateway_api)


# --- Health and routing


def test_health_answers_without_authorization(gateway: LocalGateway, gateway_api: SpyFunction) -> None:
    response = send(gateway, "GET", "/health")
    assert response.status == 200
    assert json_body(response) == {"status": "ok"}
    assert gateway_api.events == []


def test_health_reports_starting_until_ready() -> None:
    gateway = LocalGateway(real_authorizer(), spy_api(), ready=False)
    response = send(gateway, "GET", "/health")
    assert response.status == 503
    assert json_body(response) == {"status": "starting"}


@pytest.mark.parametrize(
    "target", ["/", "/order", "/orders/a/b", "/ORDERS", "/health/x", "//orders/x", "/orders//x", "//orders"]
)
def test_unknown_path_is_not_found(gateway: LocalGateway, gateway_api: SpyFunction, target: str) -> None:
    response = send(gateway, "GET", target, authorization=bearer())
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/json"
    assert json_body(response)["error"] == "not_found"
    assert gateway_api.events == []


@pytest.mark.parametrize(
    ("method", "target", "allowed"),
    [
        ("PUT", "/orders", "POST, GET, HEAD"),
        ("PATCH", "/orders/x", "GET, DELETE, HEAD"),
        ("POST", "/orders/x", "GET, DELETE, HEAD"),
        ("TRACE", "/orders", "POST, GET, HEAD"),
        ("BREW", "/orders/x", "GET, DELETE, HEAD"),
    ],
)
def test_wrong_method_on_a_known_path_is_not_allowed(
    gateway: LocalGateway, gateway_api: SpyFunction, method: str, target: str, allowed: str
) -> None:
    response = send(gateway, method, target, authorization=bearer())
    assert response.status == 405
    assert json_body(response)["error"] == "method_not_allowed"
    # and it says which methods the path takes (RFC 9110: a 405 carries Allow)
    assert response.headers["Allow"] == allowed
    assert gateway_api.events == []


def json_response_body(kind: str) -> bytes:
    return json.dumps(GATEWAY_RESPONSES[kind][1]).encode()


def test_paths_with_an_empty_segment_agree_with_each_other_whatever_the_method(gateway: LocalGateway) -> None:
    # "//orders/x" is a path in a request line, not a host "orders" and a path "/x"
    answers = {
        (method, target): send(
            gateway, method, target, ORDERS if method == "POST" else None, authorization=bearer()
        )
        for method in ("GET", "POST")
        for target in ("//orders/x", "/orders//x", "//orders")
    }
    assert {(r.status, r.body) for r in answers.values()} == {
        (404, json_response_body("MISSING_AUTHENTICATION_TOKEN"))
    }


@pytest.mark.parametrize("encoded", ["a%0Ab", "a%2Fb", "a%22b", "a%20b", "%E2%9A%A1"])
def test_an_id_no_order_can_have_is_a_missing_order_not_a_refusal(
    gateway: LocalGateway, gateway_api: SpyFunction, encoded: str
) -> None:
    # Given a valid token, and a record_id with a character no record_id has (a newline, "/", ...)
    record_id = unquote(encoded)

    # When that order is asked for
    response = send(gateway, "GET", f"/orders/{encoded}", authorization=bearer())

    # Then the answer is that of a missing order, from the API, with the id decoded
    assert response.status == 404
    assert json_body(response) == {
        "error": "not_found",
        "message": f"no unexpired order with record_id {record_id!r}",
    }
    (event,) = gateway_api.events
    assert event["pathParameters"] == {"record_id": record_id}
    assert event["path"] == f"/orders/{record_id}"


# --- The authorizer


def test_missing_authorization_is_unauthorized(gateway: LocalGateway, gateway_api: SpyFunction) -> None:
    response = send(gateway, "POST", "/orders", ORDERS)

    status, payload = GATEWAY_RESPONSES["UNAUTHORIZED"]
    assert (response.status, json_body(response)) == (status, payload)
    assert response.status == 401
    assert gateway_api.events == []


@pytest.mark.parametrize("case", ["wrong signature", "expired", "alg none", "basic scheme"])
def test_bad_token_is_unauthorized(gateway: LocalGateway, gateway_api: SpyFunction, case: str) -> None:
    authorization, _ = invalid_authorization(case)
    response = send(gateway, "GET", "/orders/gw-1", authorization=authorization)
    assert response.status == 401
    assert json_body(response) == GATEWAY_RESPONSES["UNAUTHORIZED"][1]
    assert gateway_api.events == []


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, BEARER_CHALLENGE),
        ("", BEARER_CHALLENGE),
        ("Basic dHJhZGVyOnNlY3JldA==", BEARER_CHALLENGE),  # another scheme: no error code (RFC 6750)
        ("Bearer", BEARER_CHALLENGE),
        ("Bearer not-a-token", INVALID_TOKEN_CHALLENGE),
        (invalid_authorization("expired")[0], INVALID_TOKEN_CHALLENGE),
        (invalid_authorization("wrong signature")[0], INVALID_TOKEN_CHALLENGE),
    ],
    ids=["missing", "empty", "basic", "bearer without token", "malformed", "expired", "wrong signature"],
)
def test_a_401_says_how_to_authenticate(
    gateway: LocalGateway, authorization: str | None, challenge: str
) -> None:
    response = send(gateway, "POST", "/orders", ORDERS, authorization=authorization)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == challenge
    assert json_body(response) == GATEWAY_RESPONSES["UNAUTHORIZED"][1]


@pytest.mark.parametrize("second_name", ["Authorization", "authorization", "AUTHORIZATION"])
def test_two_authorization_headers_are_unauthorized_even_if_both_are_good(
    gateway: LocalGateway, gateway_api: SpyFunction, second_name: str
) -> None:
    # Given a request with two Authorization headers, each with a valid token of its own trader
    response = send(
        gateway,
        "POST",
        "/orders",
        ORDERS,
        authorization=bearer("trader-1"),
        extra_headers=[(second_name, bearer("trader-2"))],
    )

    # Then it is refused before the API, saying the request is malformed
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == INVALID_REQUEST_CHALLENGE
    assert gateway_api.events == []


def test_deny_policy_is_forbidden_and_the_api_is_not_invoked() -> None:
    # Given an authorizer that denies everything
    api_function = spy_api()
    gateway = LocalGateway(fixed_authorizer(policy("Deny", f"{ARN}/*")), api_function)

    # When a request arrives
    response = send(gateway, "POST", "/orders", ORDERS, authorization=bearer())

    # Then it is forbidden and never reaches the API
    assert response.status == 403
    assert json_body(response) == GATEWAY_RESPONSES["ACCESS_DENIED"][1]
    assert api_function.events == []


def test_allow_for_another_resource_only_is_forbidden() -> None:
    api_function = spy_api()
    gateway = LocalGateway(fixed_authorizer(policy("Allow", f"{ARN}/GET/orders/*")), api_function)

    response = send(gateway, "POST", "/orders", ORDERS, authorization=bearer())

    assert response.status == 403
    assert api_function.events == []


@pytest.mark.parametrize("result", [None, "Allow", [], {"principalId": "p"}])
def test_authorizer_answer_that_is_not_a_policy_is_forbidden(result: Any) -> None:
    api_function = spy_api()
    gateway = LocalGateway(SpyFunction("authorizer", lambda event, context: result), api_function)

    assert send(gateway, "POST", "/orders", ORDERS, authorization=bearer()).status == 403
    assert api_function.events == []


def test_authorizer_failure_is_a_server_error_and_the_api_is_not_invoked() -> None:
    def broken(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("secret store unreachable")

    api_function = spy_api()
    gateway = LocalGateway(SpyFunction("authorizer", broken), api_function)

    response = send(gateway, "POST", "/orders", ORDERS, authorization=bearer())

    assert response.status == 500
    assert json_body(response)["error"] == "authorizer_error"
    assert b"secret store unreachable" not in response.body
    assert api_function.events == []


def test_authorizer_receives_a_request_event_with_the_method_arn() -> None:
    auth = real_authorizer()
    gateway = LocalGateway(auth, spy_api())

    send(gateway, "GET", "/orders/gw-1?x=1", authorization=bearer())

    (event,) = auth.events
    assert event["type"] == "REQUEST"
    assert event["methodArn"] == f"{ARN}/GET/orders/gw-1"
    assert event["headers"]["Authorization"].startswith("Bearer ")
    assert event["pathParameters"] == {"record_id": "gw-1"}


# --- The proxy event the API receives


def test_api_receives_a_v1_proxy_event_with_the_principal(
    gateway: LocalGateway, gateway_api: SpyFunction
) -> None:
    # Given an allowed request for trader-5
    authorization = bearer("trader-5")

    # When it is sent through the gateway
    response = send(
        gateway,
        "GET",
        "/orders/gw-1?trader=full&trader=short",
        authorization=authorization,
        extra_headers=[("X-Trace", "a"), ("X-Trace", "b")],
    )

    # Then the API sees what API Gateway would send
    assert response.status == 400  # the API answered: a trader names no trader, and at most once
    (event,) = gateway_api.events
    assert event["httpMethod"] == "GET"
    assert event["path"] == "/orders/gw-1"
    assert event["resource"] == "/orders/{record_id}"
    assert event["pathParameters"] == {"record_id": "gw-1"}
    assert event["headers"]["Authorization"] == authorization
    assert event["headers"]["X-Trace"] == "b"
    assert event["multiValueHeaders"]["X-Trace"] == ["a", "b"]
    assert event["queryStringParameters"] == {"trader": "short"}
    assert event["multiValueQueryStringParameters"] == {"trader": ["full", "short"]}
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["authorizer"]["principalId"] == "trader-5"
    assert context["authorizer"]["sub"] == "trader-5"
    assert context["authorizer"]["role"] == "trader"
    assert context["resourcePath"] == "/orders/{record_id}"
    assert context["httpMethod"] == "GET"
    assert context["stage"] == STAGE


def test_api_receives_a_text_body_as_is(gateway: LocalGateway, gateway_api: SpyFunction) -> None:
    raw = b'[{"record_id": "gw-1", "parameter_1": "\xc3\xa9t\xc3\xa9", "parameter_2": 1}]'

    response = send(gateway, "POST", "/orders", raw, authorization=bearer())

    assert response.status == 201
    (event,) = gateway_api.events
    assert (event["body"], event["isBase64Encoded"]) == (raw.decode(), False)
    assert event["resource"] == "/orders"
    assert event["pathParameters"] is None


def test_api_receives_a_binary_body_base64_encoded() -> None:
    api_function = SpyFunction("api", lambda event, context: {"statusCode": 204, "body": ""})
    gateway = LocalGateway(real_authorizer(), api_function)
    raw = b"\xff\xfe\x00binary"

    response = send(gateway, "POST", "/orders", raw, authorization=bearer())

    assert response.status == 204
    (event,) = api_function.events
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw


def test_orders_posted_through_the_gateway_can_be_read_back_exactly(gateway: LocalGateway) -> None:
    posted = send(gateway, "POST", "/orders", ORDERS, authorization=bearer())
    assert posted.status == 201
    assert posted.headers["Content-Type"] == "application/json"
    assert json_body(posted)["stored"] == 1

    fetched = send(gateway, "GET", "/orders/gw-1", authorization=bearer())
    assert fetched.status == 200
    assert json_body(fetched)["parameter_2"] == Decimal("2.1000000000000000000001")


def test_api_failure_is_a_bad_gateway() -> None:
    def broken(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("boom")

    gateway = LocalGateway(real_authorizer(), SpyFunction("api", broken))
    response = send(gateway, "GET", "/orders/x", authorization=bearer())
    assert response.status == 502
    assert json_body(response)["error"] == "internal_error"
    assert b"boom" not in response.body


@pytest.mark.parametrize("result", [None, {"body": "x"}, "ok"])
def test_malformed_proxy_response_is_a_bad_gateway(result: Any) -> None:
    gateway = LocalGateway(real_authorizer(), SpyFunction("api", lambda event, context: result))
    assert send(gateway, "GET", "/orders/x", authorization=bearer()).status == 502


def test_proxy_response_headers_and_base64_body_are_passed_back() -> None:
    def answer(event: dict[str, Any], context: Any) -> Any:
        return {
            "statusCode": 200,
            "headers": {"X-One": "1"},
            "multiValueHeaders": {"X-Many": ["a", "b"]},
            "body": base64.b64encode(b"\x00\x01").decode(),
            "isBase64Encoded": True,
        }

    gateway = LocalGateway(real_authorizer(), SpyFunction("api", answer))
    response = send(gateway, "GET", "/orders/x", authorization=bearer())
    assert (response.status, response.body) == (200, b"\x00\x01")
    assert response.headers["X-One"] == "1"
    assert response.headers["X-Many"] == "a, b"


# --- policy_allows


METHOD_ARN = f"{ARN}/POST/orders"


def statement(effect: str, resource: Any, action: Any = "execute-api:Invoke") -> dict[str, Any]:
    return {"Effect": effect, "Resource": resource, "Action": action}


def doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"policyDocument": {"Version": "2012-10-17", "Statement": list(statements)}}


@pytest.mark.parametrize(
    ("policy_document", "allowed"),
    [
        (doc(statement("Allow", METHOD_ARN)), True),
        (doc(statement("Allow", [f"{ARN}/GET/orders/*", METHOD_ARN])), True),
        (doc(statement("Allow", f"{ARN}/*")), True),
        (doc(statement("Allow", f"{ARN}/*/orders")), True),
        (doc(statement("Allow", "*")), True),
        (doc(statement("Allow", f"{ARN}/POST/order?")), True),
        (doc(statement("Allow", f"{ARN}/POST/orders/*")), False),
        (doc(statement("Allow", f"{ARN}/GET/*")), False),
        (doc(statement("Allow", f"{ARN}/POST/order")), False),
        (doc(statement("Allow", METHOD_ARN.replace(API_ID, "other-api"))), False),
        (doc(statement("Allow", METHOD_ARN, action=["execute-api:Invoke"])), True),
        (doc(statement("Allow", METHOD_ARN, action="execute-api:*")), True),
        (doc(statement("Allow", METHOD_ARN, action="*")), True),
        (doc(statement("Allow", METHOD_ARN, action="execute-api:ManageConnections")), False),
        (doc(statement("Allow", METHOD_ARN, action=[])), False),
        (doc(statement("Deny", METHOD_ARN)), False),
        (doc(statement("Allow", "*"), statement("Deny", METHOD_ARN)), False),
        (doc(statement("Deny", f"{ARN}/*"), statement("Allow", METHOD_ARN)), False),
        (doc(statement("Allow", "*"), statement("Deny", f"{ARN}/GET/*")), True),
        (doc(), False),
        ({}, False),
    ],
    ids=[
        "exact",
        "in a list",
        "stage wildcard",
        "method wildcard",
        "everything",
        "one-character wildcard",
        "sub-resource only",
        "other method",
        "prefix only",
        "other api",
        "action list",
        "action wildcard",
        "any action",
        "other action",
        "no action",
        "deny only",
        "deny after allow wins",
        "deny before allow wins",
        "deny elsewhere",
        "no statements",
        "no document",
    ],
)
def test_policy_allows(policy_document: dict[str, Any], allowed: bool) -> None:
    assert policy_allows(policy_document, METHOD_ARN) is allowed


def test_a_wildcard_spans_every_character_a_path_can_hold() -> None:
    # IAM's * is any run of characters: an id holding a newline is still under GET /orders/*
    policy_document = doc(statement("Allow", f"{ARN}/GET/orders/*"))
    assert policy_allows(policy_document, f"{ARN}/GET/orders/a\nb")
    assert policy_allows(policy_document, f"{ARN}/GET/orders/\n")
    # and an exact resource is that resource alone, not the same with a newline after it
    assert not policy_allows(doc(statement("Allow", METHOD_ARN)), METHOD_ARN + "\n")
