"""The API's OpenAPI 3.1 document, generated from the route table and the models.

Build time only: ``make openapi`` writes it to ``docs/openapi.json`` (``tests/unit/test_openapi.py``
fails when that file is stale), and the local stack serves it at ``GET /openapi.json``. No Lambda
handler imports this module, so the document costs their cold starts nothing.

Every fact comes from the code that enforces it: the routes and their roles from
:data:`energy_auction.routes.ROUTES`, the bodies from the pydantic models and the use cases'
results, each error's status from the API handler's table and its details from the error class,
the gateway's answers from :mod:`energy_auction.errors`, and each limit from its constant.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import json
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from energy_auction import auth, codec, errors, intake, orders
from energy_auction.cursors import CURSOR_MAX_LENGTH
from energy_auction.errors import EnergyAuctionError
from energy_auction.orders import (
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    PIPELINE_FIELDS,
    Limits,
    Order,
    OrderRequest,
    OrderStatus,
    RecordId,
)
from energy_auction.roles import Role
from energy_auction.routes import ROUTES, Route

OPENAPI_VERSION = "3.1.0"
TITLE = "Energy Auction API"
DOCUMENT = Path("docs/openapi.json")
"""Where the committed document lives, relative to the repository's root."""
REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearer"
EXAMPLE_NOW = 1_795_303_504.516
"""The submission time of the examples (2026-11-21T23:25:04.516Z)."""
EXAMPLE_TRADER = "desk-7"

_LIMITS = Limits()
"""The default limits; a deployment may lower them (settings), never raise them."""

# --- The errors each operation answers, beyond those every operation may answer.
_EVERY_OPERATION: tuple[type[EnergyAuctionError], ...] = (
    errors.InvalidQuery,
    errors.RoleForbidden,
    errors.StorageUnavailable,
)
_OPERATION_ERRORS: dict[str, tuple[type[EnergyAuctionError], ...]] = {
    "submit_orders": (
        errors.InvalidJson,
        errors.UnsupportedMediaType,
        errors.BodyTooLarge,
        errors.OrdersInvalid,
        errors.TooManyOrders,
        errors.OrdersAlreadyProcessed,
    ),
    "list_orders": (errors.InvalidCursor,),
    "get_order": (errors.OrderNotFound,),
    "cancel_order": (errors.OrderNotFound, errors.OrderLocked, errors.OrdersAlreadyProcessed),
}
"""Keyed by the route's operation; a route without an entry stops the generator."""


def _error_examples() -> list[EnergyAuctionError]:
    """One instance of each error the API answers, made by the code that raises it where it can
    be: its details name the fields its body carries, and it is the document's example."""
    invalid_json = _raised(lambda: orders.parse_json('[{"record_id": "a", "parameter_2": 1,},]'))
    invalid = _raised(
        lambda: orders.parse_orders(
            json.dumps(
                [
                    {"record_id": "a!", "parameter_1": "abc", "parameter_2": 4},
                    {"record_id": "b", "parameter_1": "def", "parameter_2": "4"},
                ]
            ),
            _LIMITS,
        )
    )
    return [
        invalid_json,
        errors.InvalidQuery("limit", f"must be a whole number from 1 to {LIST_LIMIT_MAX}"),
        errors.InvalidCursor(),
        errors.UnsupportedMediaType("send the orders as JSON with Content-Type: application/json"),
        errors.BodyTooLarge(_LIMITS.max_body_bytes + 1, _LIMITS.max_body_bytes),
        invalid,
        errors.TooManyOrders(_LIMITS.max_orders + 1, _LIMITS.max_orders),
        errors.OrdersAlreadyProcessed(["unique_id_1"]),
        errors.OrderLocked("unique_id_1"),
        errors.OrderNotFound("unique_id_9"),
        errors.RoleForbidden("a token of role operator may not submit or replace orders (all or none)"),
        errors.StorageUnavailable(),
    ]


def _raised(action: Any) -> EnergyAuctionError:
    try:
        action()
    except EnergyAuctionError as err:
        return err
    raise AssertionError("the example was meant to be refused")


# --- JSON Schema from the models


class _Generator(GenerateJsonSchema):
    def decimal_schema(self, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
        # Every Decimal the API reads or writes is a JSON number (energy_auction.codec), exact.
        return {"type": "number"}


def _finite_number_schema() -> dict[str, Any]:
    """``parameter_2``: zero, or a magnitude DynamoDB keeps (``orders._finite_number``)."""
    smallest = float(f"1e{orders._MIN_ADJUSTED_EXPONENT}")
    beyond = float(f"1e{orders._MAX_ADJUSTED_EXPONENT + 1}")
    return {
        "type": "number",
        "anyOf": [
            {"const": 0},
            {"minimum": smallest, "exclusiveMaximum": beyond},
            {"maximum": -smallest, "exclusiveMinimum": -beyond},
        ],
        "description": (
            "A finite JSON number, kept exactly as sent (any zero is stored as 0): at most "
            f"{orders._MAX_DIGITS} significant digits, magnitude from {smallest:g} to below {beyond:g} "
            "(DynamoDB's number range). Booleans, strings, null, NaN and Infinity are refused."
        ),
    }


def _attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a class's fields (``x: int`` then ``\"\"\"...\"\"\"``), its bases' too."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.split(".")[0] != "energy_auction":
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for field, doc in itertools.pairwise(body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                found[field.target.id] = " ".join(inspect.cleandoc(doc.value.value).split())
    return found


class ReceiptOrder(BaseModel):
    """One stored order of a submission."""

    model_config = ConfigDict(extra="forbid")

    record_id: RecordId
    status: OrderStatus
    expires_at: int = Field(description="Epoch seconds: submission + 24 hours.")


class Receipt(BaseModel):
    """What a submission stored: every order of the request."""

    model_config = ConfigDict(extra="forbid")

    stored: int = Field(ge=1, le=_LIMITS.max_orders)
    orders: list[ReceiptOrder] = Field(min_length=1, max_length=_LIMITS.max_orders)


class OrderPage(BaseModel):
    """A page of a listing, newest first."""

    model_config = ConfigDict(extra="forbid")

    orders: list[Order] = Field(max_length=LIST_LIMIT_MAX)
    next_cursor: str | None = Field(
        description="Pass it as `cursor`, with the same filters, for the next page; null on the last page."
    )


def _model_schemas() -> dict[str, Any]:
    """Components from the models: the order as sent, as shown, the receipt, a page, a problem."""
    _, top = models_json_schema(
        [
            (OrderRequest, "validation"),
            (Order, "serialization"),
            (Receipt, "serialization"),
            (OrderPage, "serialization"),
        ],
        ref_template=REF,
        schema_generator=_Generator,
    )
    schemas: dict[str, Any] = top["$defs"]
    for name in (OrderRequest.__name__, Order.__name__):
        schemas[name]["properties"]["parameter_2"] = _finite_number_schema()
    schemas[Order.__name__] = _order_view(schemas[Order.__name__])
    schemas["Problem"] = TypeAdapter(errors.Problem).json_schema(
        ref_template=REF, schema_generator=_Generator, mode="serialization"
    )
    schemas["Problem"]["required"] = sorted(schemas["Problem"]["properties"])  # Problem.as_dict
    shown = {OrderRequest.__name__, Receipt.__name__, OrderPage.__name__, "Problem"}
    for name, schema in list(schemas.items()):
        if name not in shown and not _referenced(name, schemas):
            del schemas[name]  # the pipeline's Decision: never shown
        _describe(schema)
    return schemas


def _order_view(schema: dict[str, Any]) -> dict[str, Any]:
    """``Order.public_view``: the stored order less the pipeline's fields; a field that is None is
    left out, not null."""
    docs = _attribute_docs(Order)
    properties = {}
    required = []
    for name, generated in schema["properties"].items():
        if name in PIPELINE_FIELDS:
            continue
        field = Order.model_fields[name]
        prop = {k: v for k, v in generated.items() if k not in {"anyOf", "default"}}
        if field.default is None and not field.is_required():
            (shown,) = [branch for branch in generated["anyOf"] if branch != {"type": "null"}]
            prop.update(shown)
        else:
            prop.update(generated)
            prop.pop("default", None)
            required.append(name)
        if name in docs and "description" not in prop:
            prop["description"] = docs[name]
        properties[name] = prop
    for name in ("submitted_at", "cancelled_at"):
        properties[name]["format"] = "date-time"  # orders.iso_utc
    return {
        **{k: v for k, v in schema.items() if k not in {"properties", "required"}},
        "description": "An order as the API shows it; `outcome` and `cancelled_at` appear once they apply.",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _referenced(name: str, schemas: Mapping[str, Any]) -> bool:
    ref = REF.format(model=name)
    return any(ref in json.dumps(schema) for other, schema in schemas.items() if other != name)


def _describe(schema: Any) -> None:
    """Drop pydantic's generated property titles ("Record Id": the names say as much) and null
    defaults; docstrings' reST literals become Markdown."""
    if isinstance(schema, dict):
        for prop in (schema.get("properties") or {}).values():
            prop.pop("title", None)
            if "default" in prop and prop["default"] is None:
                del prop["default"]
        if isinstance(schema.get("description"), str):
            schema["description"] = schema["description"].replace("``", "`")
        for value in schema.values():
            _describe(value)
    elif isinstance(schema, list):
        for value in schema:
            _describe(value)


# --- Errors


@dataclass(frozen=True)
class _Answer:
    """One error answer: its status, body (``error``, ``message`` and details) and who makes it."""

    status: int
    body: Mapping[str, Any]
    source: str
    headers: tuple[str, ...] = ()


def _service_answers() -> dict[type[EnergyAuctionError], _Answer]:
    from energy_auction.handlers.api import _STATUS  # build time only: the status of each error

    examples = {type(e): e for e in _error_examples()}
    missing = sorted(c.__name__ for c in _STATUS if c not in examples)
    if missing:
        raise ValueError(f"no example of {', '.join(missing)}: add one to _error_examples")
    return {
        cls: _Answer(
            int(_STATUS[cls]),
            {"error": e.code, "message": e.message, **codec.loads(codec.dumps(e.details()))},
            "the service",
            ("Retry-After",) if isinstance(e, errors.StorageUnavailable) else (),
        )
        for cls, e in examples.items()
    }


_UNKNOWN_ROUTE = "MISSING_AUTHENTICATION_TOKEN"


def _gateway_answers() -> dict[str, _Answer]:
    answers = {
        kind: _Answer(status, body, "the gateway")
        for kind, (status, body) in errors.GATEWAY_RESPONSES.items()
    }
    answers["THROTTLED"] = _Answer(
        HTTPStatus.TOO_MANY_REQUESTS, errors.THROTTLED_BODY, "API Gateway's throttle (AWS)", ("Retry-After",)
    )
    return answers


_AWS_VALIDATION = _Answer(
    HTTPStatus.UNPROCESSABLE_ENTITY,
    {"error": errors.OrdersInvalid.code, "message": "", "detail": ""},
    "API Gateway's request model (AWS)",
)
"""API Gateway refuses a body the request model refuses before the function runs: ``detail``
holds its own account (``infra/api.py``, ``VALIDATION_FAILED_TEMPLATE``)."""
_AWS_TOO_LARGE = _Answer(
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    {"error": errors.GATEWAY_DEFAULT_ERRORS["DEFAULT_4XX"], "message": "Request Too Long"},
    "API Gateway's 10 MB payload limit (AWS)",
)
_SERVER_ERRORS = (
    HTTPStatus.INTERNAL_SERVER_ERROR,
    HTTPStatus.BAD_GATEWAY,
    HTTPStatus.GATEWAY_TIMEOUT,
)
"""What the gateway answers when the authorizer or the function fails or times out."""


def _error_name(code: str) -> str:
    name = "".join(part.title() for part in code.split("_"))
    return name if name.endswith("Error") else f"{name}Error"


_DETAIL_SCHEMAS: dict[str, dict[str, Any]] = {
    "problems": {
        "type": "array",
        "items": {"$ref": REF.format(model="Problem")},
        "minItems": 1,
        "description": "Every problem of the request at once, one entry each.",
    },
    "record_ids": {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 1,
        "description": "The orders that cannot be changed.",
    },
    "record_id": {"type": "string", "description": "The record_id of the request."},
    "parameter": {"type": "string", "description": "The query string parameter refused."},
    "limit_bytes": {"type": "integer", "minimum": 1, "description": "The body size limit."},
    "limit": {"type": "integer", "minimum": 1, "description": "The most orders one request may hold."},
    "retry_after_seconds": {
        "type": "integer",
        "minimum": 0,
        "description": "When to retry, as in the Retry-After header.",
    },
    "detail": {
        "type": "string",
        "description": "API Gateway's own account of what its request model refused.",
    },
}
"""The schema of each detail field an error body may carry (``EnergyAuctionError.details``)."""


def _error_schemas(answers: Iterable[_Answer]) -> dict[str, dict[str, Any]]:
    """One schema per ``error`` code: ``error``, ``message``, and the details every answer with that
    code carries (required) or some do (optional)."""
    by_code: dict[str, list[_Answer]] = {}
    for answer in answers:
        by_code.setdefault(answer.body["error"], []).append(answer)
    schemas = {}
    for code, group in sorted(by_code.items()):
        details = [set(a.body) - {"error", "message"} for a in group]
        names = sorted(set().union(*details))
        unknown = [n for n in names if n not in _DETAIL_SCHEMAS]
        if unknown:
            raise ValueError(
                f"no schema for the error detail {', '.join(unknown)}: add it to _DETAIL_SCHEMAS"
            )
        always = sorted(set.intersection(*details))
        schema: dict[str, Any] = {
            "type": "object",
            "description": f"`{code}`: answered by {', '.join(sorted({a.source for a in group}))}.",
            "properties": {
                "error": {"const": code},
                "message": {"type": "string", "description": "What went wrong, for a person."},
                **{n: _DETAIL_SCHEMAS[n] for n in names},
            },
            "required": ["error", "message", *always],
            "additionalProperties": False,
            "examples": _unique(dict(a.body) for a in group if "detail" not in a.body),
        }
        if len(group) > 1 and all(details) and len({frozenset(d) for d in details}) == len(group):
            # Each source carries details of its own (validation_failed: the service's problems, or
            # API Gateway's detail): exactly one source's.
            schema["oneOf"] = [{"required": sorted(d)} for d in details]
        if not schema["examples"]:
            del schema["examples"]
        schemas[_error_name(code)] = schema
    schemas["Error"] = {
        "type": "object",
        "description": "Every error body: a stable `error` code and a `message`, plus its code's details.",
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
        "required": ["error", "message"],
    }
    return schemas


def _unique(bodies: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for body in bodies:
        if body not in found:
            found.append(body)
    return found


# --- Operations


def _path_parameter(name: str) -> dict[str, Any]:
    if name != "record_id":
        raise ValueError(f"no schema for the path parameter {name}: add it to _path_parameter")
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": (
            f"The order's record_id ({orders.RECORD_ID_RULE}). Any other text answers 404, as an order "
            "that does not exist does."
        ),
        "schema": TypeAdapter(RecordId).json_schema(),
        "example": _examples()[0].record_id,
    }


def _query_parameters() -> dict[str, dict[str, Any]]:
    statuses = ", ".join(OrderStatus)
    return {
        "status": {
            "description": f"Only orders of this status ({statuses}).",
            "schema": {"$ref": REF.format(model=OrderStatus.__name__)},
            "example": OrderStatus.PENDING.value,
        },
        "since": {
            "description": (
                "Only orders submitted at or after this time: ISO 8601 with its time zone, e.g. "
                "2026-12-01T08:00:00Z."
            ),
            "schema": {"type": "string", "format": "date-time"},
            "example": _examples()[0].submitted_at,
        },
        "limit": {
            "description": f"Orders per page, 1 to {LIST_LIMIT_MAX}.",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": LIST_LIMIT_MAX,
                "default": LIST_LIMIT_DEFAULT,
            },
        },
        "cursor": {
            "description": (
                "The `next_cursor` of the previous page, with the same filters (`status`, `since`, "
                "`trader`). Opaque and tamper-proof: one changed, made for other filters or used by "
                "another caller answers 400 `invalid_cursor`."
            ),
            "schema": {"type": "string", "minLength": 1, "maxLength": CURSOR_MAX_LENGTH},
        },
        "trader": {
            "description": (
                "Whose orders (a token's `sub`). An operator reads any trader's, and must name one to "
                "read a single order; a trader may name only themselves (another answers 403)."
            ),
            "schema": {"type": "string", "minLength": 1},
            "example": EXAMPLE_TRADER,
        },
    }


def _operation(route: Route, service: Mapping[type[EnergyAuctionError], _Answer]) -> dict[str, Any]:
    if route.operation not in _OPERATION_ERRORS:
        raise ValueError(f"no errors listed for the operation {route.operation}: add it to _OPERATION_ERRORS")
    query = _query_parameters()
    unknown = [q for q in route.query if q not in query]
    if unknown:
        raise ValueError(
            f"no schema for the query parameter {', '.join(unknown)}: add it to _query_parameters"
        )
    roles = sorted(route.roles)
    operation: dict[str, Any] = {
        "operationId": route.operation,
        "summary": route.summary,
        "description": (
            f"Roles: {', '.join(roles)}. Any query string parameter not listed here answers 400 "
            "`invalid_query`, as one given twice does."
        ),
        "x-roles": roles,
        "tags": ["orders"],
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [_path_parameter(p) for p in route.parameters]
        + [{"name": q, "in": "query", "required": False, **query[q]} for q in route.query],
        "responses": _responses(route, service),
    }
    if route.takes_orders:
        operation["requestBody"] = _orders_body()
    return operation


def _orders_body() -> dict[str, Any]:
    return {
        "required": True,
        "description": (
            f"1 to {_LIMITS.max_orders} orders (a deployment may allow fewer), at most "
            f"{_LIMITS.max_body_bytes} bytes, stored together: all or none. No record_id twice. "
            "An order of the caller's that is pending or cancelled is replaced; one the auction has "
            "processed, is processing or has decided answers 409. Send Content-Type: "
            "application/json, or none."
        ),
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {"$ref": REF.format(model=OrderRequest.__name__)},
                    "minItems": 1,
                    "maxItems": _LIMITS.max_orders,
                },
                "example": _json_example([o.request_fields() for o in _examples()]),
            }
        },
    }


@cache
def _examples() -> tuple[Order, ...]:
    """The example orders, made by the code that stores a submission."""
    body = json.dumps(
        [
            {"record_id": "unique_id_1", "parameter_1": "abc", "parameter_2": 4},
            {"record_id": "unique_id_2", "parameter_1": "def", "parameter_2": 2.1},
        ]
    )
    return tuple(orders.new_orders(orders.parse_orders(body, _LIMITS), EXAMPLE_NOW, EXAMPLE_TRADER))


def _json_example(value: Any) -> Any:
    return json.loads(codec.dumps(value))


def _success(route: Route) -> tuple[int, dict[str, Any]]:
    pending = _examples()
    cancelled = pending[1].model_copy(
        update={"status": OrderStatus.CANCELLED, "cancelled_at": orders.iso_utc(EXAMPLE_NOW + 60)}
    )
    if route.takes_orders:
        example: Any = intake.Receipt(pending).as_dict()
        return HTTPStatus.CREATED, _body("Every order is stored, as pending.", Receipt.__name__, example)
    if route.method == "GET" and not route.parameters:
        example = {"orders": [o.public_view() for o in reversed(pending)], "next_cursor": None}
        return HTTPStatus.OK, _body("A page of orders, newest first.", OrderPage.__name__, example)
    if route.method == "DELETE":
        return HTTPStatus.OK, _body(
            "The order, now cancelled; cancelling it again answers the same.",
            "Order",
            cancelled.public_view(),
        )
    return HTTPStatus.OK, _body("The order.", "Order", pending[0].public_view())


def _body(description: str, model: str, example: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": REF.format(model=model)},
                "example": _json_example(example),
            }
        },
    }


def _route_answers(route: Route, service: Mapping[type[EnergyAuctionError], _Answer]) -> list[_Answer]:
    gateway = _gateway_answers()
    answers = [service[c] for c in (*_EVERY_OPERATION, *_OPERATION_ERRORS[route.operation])]
    answers += [a for kind, a in gateway.items() if kind != _UNKNOWN_ROUTE]
    if route.parameters:
        # A parameter holding "/" (encoded or not) makes a path no route has.
        answers.append(gateway[_UNKNOWN_ROUTE])
    if route.takes_orders:
        answers += [_AWS_VALIDATION, _AWS_TOO_LARGE]
    return answers


def _responses(route: Route, service: Mapping[type[EnergyAuctionError], _Answer]) -> dict[str, Any]:
    status, success = _success(route)
    responses: dict[str, Any] = {str(int(status)): success}
    by_status: dict[int, list[_Answer]] = {}
    for answer in _route_answers(route, service):
        by_status.setdefault(int(answer.status), []).append(answer)
    for code, group in sorted(by_status.items()):
        names = sorted({_error_name(a.body["error"]) for a in group})
        refs = [{"$ref": REF.format(model=n)} for n in names]
        shown = [a for a in group if "detail" not in a.body]
        codes = [a.body["error"] for a in shown]
        examples = {
            a.body["error"] if codes.count(a.body["error"]) == 1 else f"{a.body['error']}, from {a.source}": {
                "value": dict(a.body)
            }
            for a in shown
        }
        response: dict[str, Any] = {
            "description": HTTPStatus(code).phrase,
            "content": {
                "application/json": {
                    "schema": refs[0] if len(refs) == 1 else {"oneOf": refs},
                    "examples": examples,
                }
            },
        }
        headers = {h for a in group for h in a.headers}
        if code == HTTPStatus.UNAUTHORIZED:
            headers.add("WWW-Authenticate")
        if headers:
            response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in sorted(headers)}
        responses[str(code)] = response
    for code in _SERVER_ERRORS:
        responses[str(int(code))] = {
            "description": f"{code.phrase}: the gateway's answer when the authorizer or the function fails.",
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
        }
    return responses


# --- The document


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API."""
    service = _service_answers()
    paths: dict[str, dict[str, Any]] = {}
    answers: list[_Answer] = []
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, service)
        answers += _route_answers(route, service)
    schemas = {**_model_schemas(), **_error_schemas(answers)}
    roles = ", ".join(f"`{r}`" for r in Role)
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": TITLE,
            "version": _version(),
            "description": (
                "Submit, read, list and cancel energy-auction orders. Each order belongs to the trader "
                "named by the token's `sub`; a trader reaches only their own orders (another's answers "
                "404, as a missing one does). An order lives 24 hours after its latest submission. "
                f"Roles, from the token's `role` claim: {roles} (absent: trader).\n\n"
                "Every error is a JSON body with a stable `error` code and a `message`, plus the "
                "details its code names. A refused request changes nothing. A method a path does not "
                "take answers 405 with `Allow` on the local stack, and 404 `not_found` on AWS, as a "
                "path no route has does.\n\n"
                "Generated from the route table and the models (`make openapi`); the local stack "
                "serves it at `GET /openapi.json`."
            ),
        },
        "servers": [
            {"url": "http://127.0.0.1:8000", "description": "The local stack (make run)"},
            {
                "url": "https://{api}.execute-api.{region}.amazonaws.com/{stage}",
                "description": "A deployed stage",
                "variables": {
                    "api": {"default": "api-id", "description": "The RestApi's id (a stack output)"},
                    "region": {"default": "region", "description": "The stage's AWS region"},
                    "stage": {"default": "dev", "description": "The stage (CDK context stage)"},
                },
            },
        ],
        "tags": [{"name": "orders", "description": "A trader's orders"}],
        "security": [{SECURITY_SCHEME: []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        f"An {auth.ALGORITHM} JWT with the claims {', '.join(auth.REQUIRED_CLAIMS)} "
                        f"(and `role`: {roles}), verified by the REQUEST authorizer. A missing, "
                        "expired or otherwise bad token answers 401."
                    ),
                }
            },
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying the same request (it is safe to repeat).",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
                "WWW-Authenticate": {
                    "description": "The scheme to authenticate with (RFC 6750).",
                    "schema": {"type": "string", "examples": ["Bearer"]},
                },
            },
        },
    }


def _version() -> str:
    from importlib.metadata import version

    return version("energy-auction")


def render() -> str:
    """The document as committed: sorted keys, two-space indents, a newline at the end."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the API's OpenAPI document.")
    parser.add_argument("--out", type=Path, default=DOCUMENT, help=f"where to write it (default {DOCUMENT})")
    args = parser.parse_args(argv)
    text = render()
    if args.out.exists() and args.out.read_text() == text:
        print(f"{args.out} is up to date", file=sys.stderr)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
