"""HTTP -> API Gateway REST proxy events (payload v1), through the REQUEST authorizer, to the API.

:class:`LocalGateway` is the part API Gateway plays: match the route, build the authorizer event,
honour the returned policy, build the proxy event with the authorizer context, and turn the proxy
response back into HTTP. :func:`serve` puts it behind a threaded HTTP server.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from energy_auction.auth import InvalidToken, bearer_token
from energy_auction.errors import (
    BEARER_CHALLENGE,
    GATEWAY_DEFAULT_ERRORS,
    GATEWAY_RESPONSES,
    INVALID_REQUEST_CHALLENGE,
    INVALID_TOKEN_CHALLENGE,
)
from energy_auction.local.lambdas import LOCAL_ACCOUNT as ACCOUNT
from energy_auction.local.lambdas import LocalFunction
from energy_auction.routes import match

STAGE = "local"
API_ID = "local"
REGION = "local"
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's own limit
MAX_URL_CHARACTERS = 10240  # API Gateway's limit on the URL of a regional REST API


@dataclass
class GatewayResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Mapping[str, Any], **headers: str) -> GatewayResponse:
    return GatewayResponse(
        status, json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}
    )


OPENAPI_PATH = "/openapi.json"
"""The API's OpenAPI document, served without a token (the local stack's own route, as /health)."""


@cache
def _openapi_document() -> bytes:
    from energy_auction.openapi import render  # the generator: only when the document is asked for

    return render().encode()


def _gateway_response(kind: str, **headers: str) -> GatewayResponse:
    status, body = GATEWAY_RESPONSES[kind]
    return json_response(status, body, **headers)


def _refused(status: int, message: str) -> GatewayResponse:
    """The gateway's own refusal of a request it cannot pass on, with API Gateway's default error codes."""
    return json_response(
        status, {"error": GATEWAY_DEFAULT_ERRORS[f"DEFAULT_{status // 100}XX"], "message": message}
    )


def _challenge(headers: list[tuple[str, str]]) -> str:
    """The ``WWW-Authenticate`` of a 401 (RFC 6750 section 3): no error code without a bearer token."""
    given = [value for name, value in headers if name.lower() == "authorization"]
    if len(given) > 1:
        return INVALID_REQUEST_CHALLENGE
    try:
        bearer_token(given[0] if given else None)
    except InvalidToken:
        return BEARER_CHALLENGE  # missing, empty, or another scheme (Basic ...)
    return INVALID_TOKEN_CHALLENGE


def _split_target(target: str) -> tuple[str, str]:
    """The raw (still percent-encoded) path and the query of a request target.

    urlsplit would read "//orders/x" as a host "orders" and a path "/x"; in a request line it is a path.
    """
    if not target.startswith("/"):  # absolute-form: http://host/path?query
        url = urlsplit(target)
        return url.path or "/", url.query
    path, _, query = target.partition("?")
    return path, query


def _arn_pattern(resource: str) -> re.Pattern[str]:
    # IAM resource wildcards: * is any run of characters (including "/" and a newline), ? is one character.
    return re.compile(re.escape(resource).replace(r"\*", ".*").replace(r"\?", "."), re.DOTALL)


def policy_allows(policy: Mapping[str, Any], method_arn: str) -> bool:
    """IAM evaluation for execute-api:Invoke: an explicit Deny wins, otherwise an Allow is needed."""
    allowed = False
    for statement in policy.get("policyDocument", {}).get("Statement", []):
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(a in {"execute-api:Invoke", "execute-api:*", "*"} for a in actions):
            continue
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if any(_arn_pattern(r).fullmatch(method_arn) for r in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def _multi(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


class LocalGateway:
    """Plays API Gateway for the local stack (REST API, REQUEST authorizer, Lambda proxy integration)."""

    def __init__(self, authorizer: LocalFunction, api: LocalFunction, ready: bool = True) -> None:
        self._authorizer = authorizer
        self._api = api
        self.ready = ready

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
    ) -> GatewayResponse:
        raw_path, query = _split_target(target)
        path = unquote(raw_path)
        if path == "/health" and method in {"GET", "HEAD"}:
            status = HTTPStatus.OK if self.ready else HTTPStatus.SERVICE_UNAVAILABLE
            return json_response(status, {"status": "ok" if self.ready else "starting"})
        if path == OPENAPI_PATH and method in {"GET", "HEAD"}:
            return GatewayResponse(HTTPStatus.OK, _openapi_document(), {"Content-Type": "application/json"})
        # Matched on the raw path, so an encoded "/" (%2F) stays inside its segment, as on API Gateway.
        route, path_parameters, allowed = match(method, raw_path)
        if route is None and method == "HEAD" and "GET" in allowed:
            # HEAD is GET without the body (RFC 9110): the same status and headers; _write sends no body.
            return self.handle("GET", target, headers, body, source_ip)
        path_parameters = {name: unquote(value) for name, value in path_parameters.items()}
        if route is None:
            if allowed:
                return json_response(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    {"error": "method_not_allowed", "message": f"{method} is not supported on {path}"},
                    Allow=", ".join([*allowed, *(["HEAD"] if "GET" in allowed else [])]),
                )
            return _gateway_response("MISSING_AUTHENTICATION_TOKEN")

        query_pairs = [
            (k, v) for k, values in parse_qs(query, keep_blank_values=True).items() for v in values
        ]
        single_headers, multi_headers = _multi(headers)
        single_query, multi_query = _multi(query_pairs)
        request_id = str(uuid.uuid4())
        method_arn = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/{method}{path}"
        request_context: dict[str, Any] = {
            "resourceId": "local",
            "resourcePath": route.path,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": formatdate(usegmt=True),
            "requestTimeEpoch": int(time.time() * 1000),
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "protocol": "HTTP/1.1",
            "domainName": "localhost",
            "identity": {"sourceIp": source_ip, "userAgent": single_headers.get("User-Agent")},
        }
        common = {
            "resource": route.path,
            "path": path,
            "httpMethod": method,
            "headers": single_headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": single_query or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
        }
        authorizer_event = {
            "type": "REQUEST",
            "methodArn": method_arn,
            **common,
            "requestContext": request_context,
        }
        try:
            policy = self._authorizer.invoke(authorizer_event)
        except Exception as err:
            if str(err) == "Unauthorized":
                return _gateway_response("UNAUTHORIZED", **{"WWW-Authenticate": _challenge(headers)})
            return json_response(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "authorizer_error", "message": "the authorizer failed"},
            )
        if not isinstance(policy, dict) or not policy_allows(policy, method_arn):
            return _gateway_response("ACCESS_DENIED")

        authorizer_context = {**(policy.get("context") or {}), "principalId": policy.get("principalId")}
        try:
            text = body.decode("utf-8")
            encoded = False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
        event = {
            **common,
            "requestContext": {**request_context, "authorizer": authorizer_context},
            "body": text if body else None,
            "isBase64Encoded": encoded,
        }
        try:
            result = self._api.invoke(event)
        except Exception:
            return json_response(
                HTTPStatus.BAD_GATEWAY, {"error": "internal_error", "message": "Internal server error"}
            )
        return self._proxy_response(result)

    @staticmethod
    def _proxy_response(result: Any) -> GatewayResponse:
        if not isinstance(result, dict) or "statusCode" not in result:
            return json_response(
                HTTPStatus.BAD_GATEWAY,
                {"error": "internal_error", "message": "Malformed Lambda proxy response"},
            )
        headers = {k: str(v) for k, v in (result.get("headers") or {}).items()}
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(str(v) for v in values)
        raw = result.get("body") or ""
        body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
        return GatewayResponse(int(result["statusCode"]), body, headers)


class _RequestHandler(BaseHTTPRequestHandler):
    server: LocalHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "energy-auction-local"

    def _serve(self) -> None:
        # The target as sent: http.server turns a leading "//" into "/" (so that no answer of a file
        # server reads as a link to another host), which made //orders/x mean /orders/x here.
        target = self.requestline.split()[1]
        if len(target) > MAX_URL_CHARACTERS:
            self._write(
                _refused(
                    HTTPStatus.REQUEST_URI_TOO_LONG, f"the URL is longer than {MAX_URL_CHARACTERS} characters"
                ),
                close=True,
            )
            return
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._write(
                json_response(
                    HTTPStatus.LENGTH_REQUIRED,
                    {"error": "length_required", "message": "send a Content-Length"},
                ),
                close=True,
            )
            return
        try:
            length = int(length_header or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._write(_refused(HTTPStatus.BAD_REQUEST, "bad Content-Length"), close=True)
            return
        if length > MAX_PAYLOAD_BYTES:
            self._write(
                json_response(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {
                        "error": "body_too_large",
                        "message": f"the limit is {MAX_PAYLOAD_BYTES} bytes",
                        "limit_bytes": MAX_PAYLOAD_BYTES,  # as the service's own 413 (the API contract)
                    },
                ),
                close=True,
            )
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client closed its side early: never pass on a partial body
            self._write(
                _refused(
                    HTTPStatus.BAD_REQUEST,
                    f"the body ended after {len(body)} of its {length} bytes (Content-Length)",
                ),
                close=True,
            )
            return
        response = self.server.gateway.handle(
            self.command, target, list(self.headers.items()), body, self.client_address[0]
        )
        self._write(response)

    def _write(self, response: GatewayResponse, close: bool = False) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in {"content-length", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # Every method reaches the gateway (http.server looks up do_<METHOD>): TRACE or an unknown
        # method is answered like any other, 405 with Allow on a known path, never a 501 HTML page.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a request line over 64 KiB, a header line too long, too many
        headers, a malformed request line) in JSON, like every other answer, not its HTML page."""
        status = HTTPStatus(code)
        # Before it has read a version, http.server takes a request for HTTP/0.9: no status line.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self._write(_refused(status, message or status.phrase), close=True)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the handlers log each request as JSON


class LocalHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: bursts of concurrent clients wait, not get reset

    def __init__(self, address: tuple[str, int], gateway: LocalGateway) -> None:
        super().__init__(address, _RequestHandler)
        self.gateway = gateway
