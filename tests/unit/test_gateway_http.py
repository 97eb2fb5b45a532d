"""The local gateway behind its HTTP server (loopback): every method reaches the gateway, and the
API's OpenAPI document is served without a token."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from openapi_schema_validator import OAS31Validator

from energy_auction.local.gateway import MAX_PAYLOAD_BYTES, LocalGateway, LocalHttpServer
from energy_auction.openapi import DOCUMENT

from .test_gateway import real_authorizer, spy_api

pytestmark = pytest.mark.usefixtures("local_container")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[LocalHttpServer]:
    running = LocalHttpServer(("127.0.0.1", 0), LocalGateway(real_authorizer(), spy_api()))
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(timeout=5)


def request(server: LocalHttpServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("method", "allowed"),
    [("TRACE", "POST, GET, HEAD"), ("CONNECT", "POST, GET, HEAD"), ("BREW", "POST, GET, HEAD")],
)
def test_a_method_no_route_takes_is_a_json_405_naming_the_allowed_ones(
    server: LocalHttpServer, method: str, allowed: str
) -> None:
    # Given a method http.server has no do_ handler for: once its 501 HTML page
    status, headers, body = request(server, method, "/orders")

    assert status == 405
    assert headers["Content-Type"] == "application/json"
    assert headers["Allow"] == allowed
    assert json.loads(body)["error"] == "method_not_allowed"


def test_the_openapi_document_is_served_without_a_token(server: LocalHttpServer) -> None:
    status, headers, body = request(server, "GET", "/openapi.json")

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    # the committed document, which the stale-document test keeps equal to the generated one
    assert body == (ROOT / DOCUMENT).read_bytes()


def test_head_of_the_openapi_document_has_its_length_and_no_body(server: LocalHttpServer) -> None:
    status, headers, body = request(server, "HEAD", "/openapi.json")

    assert status == 200
    assert int(headers["Content-Length"]) == len((ROOT / DOCUMENT).read_bytes())
    assert body == b""


def test_a_body_over_the_gateways_limit_is_the_documented_413(server: LocalHttpServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        # Given a Content-Length over the gateway's own limit (the body is never read)
        connection.putrequest("POST", "/orders")
        connection.putheader("Content-Length", str(MAX_PAYLOAD_BYTES + 1))
        connection.endheaders()
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        connection.close()

    assert status == 413
    assert body["limit_bytes"] == MAX_PAYLOAD_BYTES
    document = json.loads((ROOT / DOCUMENT).read_text())
    schema = document["paths"]["/orders"]["post"]["responses"]["413"]["content"]["application/json"]["schema"]
    assert list(OAS31Validator({**schema, "components": document["components"]}).iter_errors(body)) == []
