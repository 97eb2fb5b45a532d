"""The local stack's HTTP edges, as a client that breaks the rules meets them: raw bytes on a socket
to the real process. Every answer is JSON, and nothing a refused request carried is stored."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from .stack import LocalStack

pytestmark = pytest.mark.e2e

ORDER = {"record_id": "edge-1", "parameter_1": "abc", "parameter_2": 4}


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type") == "application/json", self.headers
        return json.loads(self.body)


def raw_request(stack: LocalStack, head: bytes, body: bytes = b"", *, half_close: bool = False) -> RawAnswer:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` as they are,
    closing our side after them when ``half_close``; read one answer."""
    url = urlsplit(stack.url)
    assert url.hostname is not None
    with socket.create_connection((url.hostname, url.port or 80), timeout=30) as connection:
        connection.sendall(head + b"\r\n\r\n" + body)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            assert chunk, f"the connection closed before an answer: {received!r}"
            received += chunk
        header_block, _, rest = received.partition(b"\r\n\r\n")
        status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = connection.recv(65536)
            assert chunk, "the connection closed before the whole body"
            rest += chunk
    return RawAnswer(int(status_line.split()[1]), headers, rest[:length])


def post_head(token: str, length: int, *extra: str) -> bytes:
    lines = [
        "POST /orders HTTP/1.1",
        "Host: localhost",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return "\r\n".join(lines).encode()


def test_a_body_in_utf16_is_invalid_json_and_nothing_is_stored(stack: LocalStack) -> None:
    # Given the orders encoded as UTF-16, byte order mark and all
    token = stack.token()
    body = json.dumps([ORDER]).encode("utf-16")

    # When they are posted
    answer = raw_request(stack, post_head(token, len(body)), body)

    # Then they are refused as invalid JSON, and nothing is stored
    assert answer.status == 400
    assert answer.json() == {
        "error": "invalid_json",
        "message": "body is not valid JSON: bytes that are not UTF-8 at line 1 column 1",
    }
    assert stack.get_order("edge-1", token).status == 404


def test_a_body_shorter_than_its_content_length_is_refused_and_nothing_is_stored(stack: LocalStack) -> None:
    # Given a client that announces more bytes than it sends, then closes its side
    token = stack.token()
    body = json.dumps([ORDER]).encode()

    # When the request is sent that way
    answer = raw_request(stack, post_head(token, len(body) + 10), body, half_close=True)

    # Then it is a JSON 400 from the gateway, and the complete-looking orders are not stored
    assert answer.status == 400
    assert answer.json() == {
        "error": "request_refused",
        "message": f"the body ended after {len(body)} of its {len(body) + 10} bytes (Content-Length)",
    }
    assert stack.get_order("edge-1", token).status == 404


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /orders/" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: localhost", 414),  # over API Gateway's 10240
        (b"GET /orders/" + b"x" * 65_536 + b" HTTP/1.1\r\nHost: localhost", 414),  # over http.server's line
        (b"GET /orders/x HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"y" * 70_000, 431),
        (b"GET /orders/x HTTP/1.1\r\n" + b"\r\n".join(b"X-H%d: v" % i for i in range(120)), 431),
        (b"GET /orders/x HTTP/9.9\r\nHost: localhost", 505),
        (b"GARBAGE", 400),
    ],
    ids=["20 KiB path", "64 KiB path", "70 KiB header", "120 headers", "HTTP/9.9", "no request line"],
)
def test_requests_the_gateway_refuses_itself_are_answered_in_json(
    stack: LocalStack, head: bytes, status: int
) -> None:
    answer = raw_request(stack, head)

    assert answer.status == status
    payload = answer.json()
    assert payload["error"] == ("request_refused" if status < 500 else "internal_error")
    assert payload["message"]
    assert b"<html" not in answer.body.lower()
    # and the stack still serves the next request
    assert stack.request("GET", "/health").status == 200


def test_paths_with_an_empty_segment_are_unknown_routes_alike(stack: LocalStack) -> None:
    token = stack.token()
    assert stack.post_orders([{**ORDER, "record_id": "x"}], token).status == 201
    head = "GET {} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + token

    answers = [raw_request(stack, head.format(path).encode()) for path in ("//orders/x", "/orders//x")]

    assert [(a.status, a.json()) for a in answers] == [
        (404, {"error": "not_found", "message": "no such route"})
    ] * 2


def test_an_id_holding_a_newline_is_a_missing_order(stack: LocalStack) -> None:
    token = stack.token()

    answer = stack.get_order("a%0Ab", token)

    assert answer.status == 404
    assert answer.json() == {"error": "not_found", "message": "no unexpired order with record_id 'a\\nb'"}
    assert answer.json().keys() == stack.get_order("never-posted", token).json().keys()


def test_a_401_carries_a_bearer_challenge(stack: LocalStack) -> None:
    token = stack.token()

    missing = stack.request("GET", "/orders/x")
    refused = stack.request("GET", "/orders/x", headers={"Authorization": f"Bearer {token}x"})

    assert (missing.status, missing.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert (refused.status, refused.headers["WWW-Authenticate"]) == (401, 'Bearer error="invalid_token"')


def test_two_authorization_headers_are_unauthorized_and_nothing_is_stored(stack: LocalStack) -> None:
    # Given two valid tokens of two traders, each in an Authorization header of its own
    first, second = stack.token("--sub", "desk-1"), stack.token("--sub", "desk-2")
    body = json.dumps([ORDER]).encode()

    # When the orders are posted with both
    answer = raw_request(stack, post_head(first, len(body), f"authorization: Bearer {second}"), body)

    # Then the request is refused: which trader would it speak for?
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_request"'
    assert answer.json()["error"] == "unauthorized"
    assert stack.get_order("edge-1", first).status == 404


def send(
    stack: LocalStack, method: str, path: str, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(stack.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def test_an_unknown_method_on_an_unknown_path_is_a_json_404(stack: LocalStack) -> None:
    status, headers, body = send(stack, "BREW", "/coffee")

    assert (status, headers["content-type"], json.loads(body)["error"]) == (
        404,
        "application/json",
        "not_found",
    )


def test_head_on_a_get_route_answers_as_get_without_the_body(stack: LocalStack) -> None:
    token = stack.token()
    stack.post_orders([ORDER], token)

    got = send(stack, "GET", "/orders/edge-1", token)
    head = send(stack, "HEAD", "/orders/edge-1", token)

    assert head[0] == got[0] == 200
    assert head[2] == b""
    assert head[1]["content-length"] == str(len(got[2]))
    assert head[1]["content-type"] == got[1]["content-type"] == "application/json"
