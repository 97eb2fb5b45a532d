"""API Gateway REST (payload v1) events, shaped as API Gateway sends them to the Lambdas."""

from __future__ import annotations

import base64
import functools
import json
import time
import uuid
import warnings
from typing import Any

import jwt

from energy_auction import codec
from energy_auction.auth import mint_token
from energy_auction.roles import Role

from .conftest import SECRET

ACCOUNT = "123456789012"
API_ID = "abcdef1234"
STAGE = "dev"


def method_arn(method: str, path: str) -> str:
    return f"arn:aws:execute-api:eu-west-1:{ACCOUNT}:{API_ID}/{STAGE}/{method}{path}"


def bearer(
    subject: str = "trader-1",
    secret: str = SECRET,
    ttl: int = 3600,
    now: float | None = None,
    role: Role | None = None,
) -> str:
    return "Bearer " + mint_token(secret, subject=subject, ttl_seconds=ttl, now=now, role=role)


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
    role: str | None = None,
    query: dict[str, str | list[str]] | None = None,
) -> dict[str, Any]:
    """A proxy event as API Gateway sends it after the authorizer allowed the request.

    ``body`` is JSON-encoded (exact decimals); ``raw_body`` is sent as it is (bytes as base64).
    ``role`` is the authorizer's context ``role`` (None: as the authorizer passes a trader's);
    ``query`` the query string (a list: the parameter repeated).
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
    context["authorizer"] = {"principalId": principal, "sub": principal, "role": role or "trader"}
    multi_query = {k: v if isinstance(v, list) else [v] for k, v in (query or {}).items()}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": context,
        "body": text,
        "isBase64Encoded": encoded,
    }


# --- Bearer tokens of every kind the authorizer must refuse (shared by the auth and authorizer tests).


def jwt_token(claims: dict[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    """A token signed with PyJWT directly (not with our mint_token)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)  # HS512 wants 64 bytes
        return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned_token(claims: dict[str, Any]) -> str:
    """An ``alg: none`` token, built by hand: header.payload. with an empty signature."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@functools.cache
def _rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rs256_token(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, _rsa_key(), algorithm="RS256")


INVALID_AUTHORIZATION_CASES = (
    "missing header",
    "empty header",
    "blank header",
    "basic scheme",
    "token scheme",
    "bearer without token",
    "malformed token",
    "not a jwt",
    "wrong signature",
    "expired",
    "nbf in the future",
    "iat in the future",
    "missing exp",
    "missing iat",
    "missing sub",
    "empty sub",
    "alg none",
    "HS512",
    "HS384",
    "RS256",
)


def invalid_authorization(case: str, now: float | None = None) -> tuple[str | None, str]:
    """The Authorization header value for one refused case, and the expected ``InvalidToken.reason``."""
    t = int(time.time() if now is None else now)
    good = {"sub": "trader-1", "iat": t, "exp": t + 3600}

    def without(name: str) -> dict[str, Any]:
        return {k: v for k, v in good.items() if k != name}

    cases: dict[str, tuple[str | None, str]] = {
        "missing header": (None, "missing"),
        "empty header": ("", "missing"),
        "blank header": ("   ", "missing"),
        "basic scheme": ("Basic dHJhZGVyOnNlY3JldA==", "wrong_scheme"),
        "token scheme": ("Token " + jwt_token(good), "wrong_scheme"),
        "bearer without token": ("Bearer", "wrong_scheme"),
        "malformed token": ("Bearer abc.def", "malformed"),
        "not a jwt": ("Bearer not-a-token-at-all", "malformed"),
        "wrong signature": (
            "Bearer " + jwt_token(good, secret="another-secret-also-long-enough-0123456789"),
            "bad_signature",
        ),
        "expired": ("Bearer " + jwt_token({**good, "iat": t - 7200, "exp": t - 60}), "expired"),
        "nbf in the future": ("Bearer " + jwt_token({**good, "nbf": t + 600}), "not_yet_valid"),
        "iat in the future": (
            "Bearer " + jwt_token({**good, "iat": t + 600, "exp": t + 7200}),
            "not_yet_valid",
        ),
        "missing exp": ("Bearer " + jwt_token(without("exp")), "missing_claim"),
        "missing iat": ("Bearer " + jwt_token(without("iat")), "missing_claim"),
        "missing sub": ("Bearer " + jwt_token(without("sub")), "missing_claim"),
        "empty sub": ("Bearer " + jwt_token({**good, "sub": ""}), "missing_claim"),
        "alg none": ("Bearer " + unsigned_token(good), "bad_algorithm"),
        "HS512": ("Bearer " + jwt_token(good, algorithm="HS512"), "bad_algorithm"),
        "HS384": ("Bearer " + jwt_token(good, algorithm="HS384"), "bad_algorithm"),
        "RS256": ("Bearer " + rs256_token(good), "bad_algorithm"),
    }
    return cases[case]
