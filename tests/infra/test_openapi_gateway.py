"""The OpenAPI document declares what the deployed API Gateway answers by itself: each gateway
response with a fixed status, on every operation, with the body schema of its error code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from energy_auction.openapi import DOCUMENT
from tests.infra.conftest import Synthesized

from .test_api import _gateway_responses, _render

ROOT = Path(__file__).resolve().parents[2]
UNKNOWN_ROUTE = "MISSING_AUTHENTICATION_TOKEN"  # answered on no operation: a path no route has


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / DOCUMENT).read_text())
    return document


def test_every_gateway_response_is_documented_on_every_operation(dev: Synthesized) -> None:
    document = _document()
    schemas = document["components"]["schemas"]
    fixed = {
        kind: response
        for kind, response in _gateway_responses(dev).items()
        if response.get("StatusCode") and kind != UNKNOWN_ROUTE
    }
    assert {"UNAUTHORIZED", "ACCESS_DENIED", "THROTTLED", "BAD_REQUEST_BODY"} <= set(fixed)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for kind, response in fixed.items():
                if kind == "BAD_REQUEST_BODY" and "requestBody" not in operation:
                    continue  # only a body the request model checks
                body = _render(response["ResponseTemplates"]["application/json"])
                documented = operation["responses"][response["StatusCode"]]["content"]["application/json"]
                refs = documented["schema"].get("oneOf", [documented["schema"]])
                names = [ref["$ref"].rsplit("/", 1)[1] for ref in refs]
                matching = [
                    n for n in names if schemas[n]["properties"]["error"].get("const") == body["error"]
                ]
                assert matching, (method, path, kind)
                # every field of the gateway's body is one the schema of its code declares
                assert set(body) <= set(schemas[matching[0]]["properties"]), (method, path, kind)
                for header in response["ResponseParameters"]:
                    name = header.removeprefix("gatewayresponse.header.")
                    if name != "Content-Type":
                        assert name in documented_headers(operation, response["StatusCode"]), (
                            path,
                            kind,
                            name,
                        )


def documented_headers(operation: dict[str, Any], status: str) -> set[str]:
    return set(operation["responses"][status].get("headers", {}))
