"""docs/openapi.json: committed, current, a valid OpenAPI 3.1 document, and true to the code it is
generated from (routes, roles, errors and their statuses, limits, examples)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from schemathesis.core.result import Ok

from energy_auction import codec, errors, intake, openapi, orders
from energy_auction.cursors import CURSOR_MAX_LENGTH
from energy_auction.handlers.api import _STATUS
from energy_auction.routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / openapi.DOCUMENT


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    generated: dict[str, Any] = json.loads(openapi.render())
    return generated


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method.lower()]
    return found


def conforms(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    """Why ``instance`` breaks ``schema`` (its $refs read in the document): nothing when it conforms."""
    validator = OAS31Validator({**schema, "components": document["components"]})
    return [error.message for error in validator.iter_errors(instance)]


def test_the_committed_document_is_the_one_the_code_generates() -> None:
    assert COMMITTED.read_text() == openapi.render(), "docs/openapi.json is stale: run make openapi"


def test_the_document_is_valid_openapi_3_1_that_schemathesis_loads(document: dict[str, Any]) -> None:
    validate(document)
    loaded = schemathesis.openapi.from_dict(document)
    results = list(loaded.get_all_operations())
    labels = {result.ok().label for result in results if isinstance(result, Ok)}
    assert labels == {f"{r.method} {r.path}" for r in ROUTES}


def test_every_route_is_an_operation_with_its_roles_and_query(document: dict[str, Any]) -> None:
    for route in ROUTES:
        found = operation(document, route.method, route.path)
        assert found["operationId"] == route.operation
        assert found["summary"] == route.summary
        assert found["x-roles"] == sorted(route.roles)
        assert found["security"] == [{openapi.SECURITY_SCHEME: []}]
        parameters = {(p["in"], p["name"]) for p in found["parameters"]}
        assert parameters == {("path", p) for p in route.parameters} | {("query", q) for q in route.query}
        assert ("requestBody" in found) is route.takes_orders
    methods = {(path, method) for path, item in document["paths"].items() for method in item}
    assert methods == {(r.path, r.method.lower()) for r in ROUTES}


def test_every_error_the_api_answers_is_documented_with_its_status(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    statuses_with_code: dict[str, set[str]] = {}
    for route in ROUTES:
        for status, response in operation(document, route.method, route.path)["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            for ref in schema.get("oneOf", [schema]):
                code = schemas[ref["$ref"].rsplit("/", 1)[1]]["properties"]["error"].get("const")
                if code:
                    statuses_with_code.setdefault(code, set()).add(status)
    for error, status in _STATUS.items():
        assert statuses_with_code[error.code] == {str(int(status))}, error.__name__
    for status, body in errors.GATEWAY_RESPONSES.values():
        assert str(status) in statuses_with_code[body["error"]]
    assert statuses_with_code[errors.THROTTLED_BODY["error"]] == {"429"}


def test_every_operation_answers_401_403_429_503_and_the_gateways_5xx(document: dict[str, Any]) -> None:
    for route in ROUTES:
        responses = operation(document, route.method, route.path)["responses"]
        assert {"401", "403", "429", "500", "502", "503", "504"} <= set(responses), route.operation
        assert "WWW-Authenticate" in responses["401"]["headers"]
        assert responses["503"]["headers"]["Retry-After"]["$ref"] == "#/components/headers/Retry-After"
        assert "Retry-After" in responses["429"]["headers"]


def test_the_limits_are_the_codes_own(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    submit = operation(document, "POST", "/orders")["requestBody"]["content"]["application/json"]["schema"]
    assert submit["maxItems"] == orders.Limits().max_orders
    record_id = schemas["OrderRequest"]["properties"]["record_id"]
    assert (record_id["pattern"], record_id["maxLength"]) == (
        orders.RECORD_ID_PATTERN,
        orders.RECORD_ID_MAX_LENGTH,
    )
    query = {p["name"]: p["schema"] for p in operation(document, "GET", "/orders")["parameters"]}
    assert (query["limit"]["minimum"], query["limit"]["maximum"]) == (1, orders.LIST_LIMIT_MAX)
    assert query["limit"]["default"] == orders.LIST_LIMIT_DEFAULT
    assert query["cursor"]["maxLength"] == CURSOR_MAX_LENGTH
    assert schemas["OrderStatus"]["enum"] == [s.value for s in orders.OrderStatus]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (0, True),
        (-0.0, True),
        (2.1, True),
        (-4, True),
        (1e-130, True),
        (math.nextafter(1e126, 0), True),  # the largest float below 1e126
        (-math.nextafter(1e126, 0), True),
        (1e126, False),
        (-1e126, False),
        (5e-131, False),
        ("4", False),
        (True, False),
        (None, False),
    ],
)
def test_parameter_2_is_documented_as_the_validator_reads_it(
    document: dict[str, Any], value: Any, valid: bool
) -> None:
    schema = document["components"]["schemas"]["OrderRequest"]["properties"]["parameter_2"]
    assert (conforms(document, schema, value) == []) is valid
    order = {"record_id": "a", "parameter_1": "x", "parameter_2": value}
    accepted = True
    try:
        orders.parse_orders(json.dumps([order]), orders.Limits())
    except errors.OrdersInvalid:
        accepted = False
    assert accepted is valid


def test_every_example_conforms_to_its_schema(document: dict[str, Any]) -> None:
    checked = 0
    for route in ROUTES:
        found = operation(document, route.method, route.path)
        media = [found["requestBody"]["content"]["application/json"]] if route.takes_orders else []
        media += [r["content"]["application/json"] for r in found["responses"].values()]
        for content in media:
            examples = [content["example"]] if "example" in content else []
            examples += [e["value"] for e in content.get("examples", {}).values()]
            for example in examples:
                assert conforms(document, content["schema"], example) == [], (route.operation, example)
                checked += 1
        for parameter in found["parameters"]:
            if "example" in parameter:
                assert conforms(document, parameter["schema"], parameter["example"]) == []
    assert checked > 3 * len(ROUTES)


def test_the_receipt_and_the_order_views_are_what_the_use_cases_return(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    stored = orders.new_orders(
        [orders.OrderRequest(record_id="r1", parameter_1="x", parameter_2=Decimal("1.5"))],
        openapi.EXAMPLE_NOW,
        "desk-7",
    )
    receipt = json.loads(json.dumps(intake.Receipt(stored).as_dict()))
    assert conforms(document, {"$ref": "#/components/schemas/Receipt"}, receipt) == []
    cancelled = stored[0].model_copy(
        update={"status": orders.OrderStatus.CANCELLED, "cancelled_at": orders.iso_utc(openapi.EXAMPLE_NOW)}
    )
    for order in (stored[0], cancelled):
        view = json.loads(codec.dumps(order.public_view()))
        assert conforms(document, {"$ref": "#/components/schemas/Order"}, view) == []
    # every field the API shows is documented, and none of the pipeline's
    assert set(schemas["Order"]["properties"]) == set(orders.Order.model_fields) - orders.PIPELINE_FIELDS


def test_no_lambda_handler_imports_the_generator() -> None:
    handlers = ", ".join(f"energy_auction.handlers.{h}" for h in ("api", "authorizer", "fetch_results"))
    tools = ("energy_auction.openapi", "schemathesis", "openapi_spec_validator", "openapi_schema_validator")
    code = f"import sys, {handlers}; print(sorted(m for m in sys.modules if m.startswith({tools!r})))"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"
