"""API Gateway REST (payload v1) events, shaped as API Gateway sends them to the Lambdas."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from energy_auction import codec
from energy_auction.auth import mint_token

from .conftest import SECRET

ACCOUNT = "123456789012"
API_ID = "abcdef1234"
STAGE = "dev"


def method_arn(method: str, path: str) -> str:
    return f"arn:aws:execute-api:eu-west-1:{ACCOUNT}:{API_ID}/{STAGE}/{method}{path}"


def bearer(subject: str = "trader-1", secret: str = SECRET, ttl: int = 3600, now: float | None = None) -> str:
    return "Bearer " + mint_token(secret, subject=subject, ttl_seconds=ttl, now=now)


def _context(method: str, resource: str, path: str) -> dict[str, Any]:
    return {
        "resourceId": "r1",
        "resourcePath": resource,
        "httpMethod": method,
        "path": f"/{STAGE}{path}",
        "stage": STAGE,
        "requestId": str(uuid.uuid4()),
        "requestTimeEpoch": int(time.time() * 1000),
        "accountId": ACCOUNT,
        "apiId": API_ID,
        "identity": {"sourceIp": "203.0.113.7"},
    }


def authorizer_event(
    authorization: str | None, method: str = "POST", path: str = "/orders", resource: str = "/orders"
) -> dict[str, Any]:
    headers = {} if authorization is None else {"Authorization": authorization}
    return {
        "type": "REQUEST",
        "methodArn": method_arn(method, path),
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": _context(method, resource, path),
    }


def api_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    raw_body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    principal: str = "trader-1",
) -> dict[str, Any]:
    """A proxy event as API Gateway sends it after the authorizer allowed the request.

    ``body`` is JSON-encoded (exact decimals); ``raw_body`` is sent as it is (bytes as base64).
    """
    resource, path_parameters = path, None
    if path.startswith("/orders/"):
        resource, path_parameters = "/orders/{record_id}", {"record_id": path.removeprefix("/orders/")}
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    encoded = False
    text: str | None
    if raw_body is not None:
        if isinstance(raw_body, bytes):
            text, encoded = base64.b64encode(raw_body).decode(), True
        else:
            text = raw_body
    else:
        text = None if body is None else codec.dumps(body)
    context = _context(method, resource, path)
    context["authorizer"] = {"principalId": principal, "sub": principal}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": context,
        "body": text,
        "isBase64Encoded": encoded,
    }
