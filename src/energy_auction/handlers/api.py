"""API Lambda: the routes of ``energy_auction.routes`` behind the REQUEST authorizer.

Each route's operation is a function here of the same name; the caller (the token's subject and
role) comes from the authorizer's context.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from energy_auction import codec, errors, intake
from energy_auction.bootstrap import container
from energy_auction.observability import logger, metrics_for, tracer
from energy_auction.roles import Role
from energy_auction.routes import ROUTES, Route

metrics = metrics_for("api")

app = APIGatewayRestResolver(serializer=codec.dumps)

_STATUS: dict[type[errors.EnergyAuctionError], HTTPStatus] = {
    errors.InvalidJson: HTTPStatus.BAD_REQUEST,
    errors.InvalidQuery: HTTPStatus.BAD_REQUEST,
    errors.InvalidCursor: HTTPStatus.BAD_REQUEST,
    errors.OrdersInvalid: HTTPStatus.UNPROCESSABLE_ENTITY,
    errors.TooManyOrders: HTTPStatus.UNPROCESSABLE_ENTITY,
    errors.BodyTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    errors.OrdersAlreadyProcessed: HTTPStatus.CONFLICT,
    errors.OrderLocked: HTTPStatus.CONFLICT,
    errors.OrderNotFound: HTTPStatus.NOT_FOUND,
    errors.RoleForbidden: HTTPStatus.FORBIDDEN,
    errors.StorageUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
}


def error_response(status: int, code: str, message: str, **details: Any) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=codec.dumps({"error": code, "message": message, **details}),
    )


@app.exception_handler(errors.EnergyAuctionError)
def handle_domain_error(err: errors.EnergyAuctionError) -> Response[str]:
    status = _STATUS.get(type(err), HTTPStatus.BAD_REQUEST)
    metrics.add_metric(name="RequestsRefused", unit=MetricUnit.Count, value=1)
    logger.info("request refused", extra={"error": err.code, "status": int(status)})
    response = error_response(status, err.code, err.message, **err.details())
    if isinstance(err, errors.StorageUnavailable):
        response.headers["Retry-After"] = str(err.retry_after)
    return response


@app.not_found
def handle_not_found(_: Exception) -> Response[str]:
    record_id = (app.current_event.path_parameters or {}).get("record_id")
    if record_id is not None:
        # API Gateway matched /orders/{record_id}, but the resolver's pattern lacks a character of
        # the id (a newline, '"', '/' from %2F ...): no order has such an id, so it is not found.
        missing: Response[str] = handle_domain_error(errors.OrderNotFound(record_id))
        return missing
    status, body = errors.GATEWAY_RESPONSES["MISSING_AUTHENTICATION_TOKEN"]
    metrics.add_metric(name="RequestsRefused", unit=MetricUnit.Count, value=1)
    return error_response(status, body["error"], body["message"])


def _caller(route: Route) -> intake.Caller:
    """The token's subject and role, as the authorizer passed them; the route must allow the role
    (the authorizer's policy already does on AWS: this holds if the policy were ever wider)."""
    context: dict[str, Any] = dict(app.current_event.request_context.authorizer or {})
    subject, role = context.get("sub"), context.get("role", Role.TRADER.value)
    if not isinstance(subject, str) or not subject or role not in set(Role):
        raise errors.RoleForbidden("the request carries no caller")
    if Role(role) not in route.roles:
        raise errors.RoleForbidden(f"a token of role {role} may not {route.summary.lower()}")
    return intake.Caller(subject, Role(role))


def _query(route: Route) -> dict[str, str]:
    """The query string, each parameter once and each one the route takes."""
    event = app.current_event
    single = event.query_string_parameters or {}
    multi = event.multi_value_query_string_parameters or {}
    for name in single.keys() | multi.keys():
        if name not in route.query:
            known = ", ".join(route.query) or "none"
            raise errors.InvalidQuery(name, f"is not a parameter of this route (known: {known})")
        if len(multi.get(name) or []) > 1:
            raise errors.InvalidQuery(name, "is given more than once")
    return dict(single)


def _json(status: HTTPStatus, document: Any) -> Response[str]:
    return Response(status, "application/json", codec.dumps(document))


def submit_orders(route: Route) -> Response[str]:
    caller = _caller(route)
    _query(route)
    event = app.current_event
    content_type = (event.headers.get("content-type") or event.headers.get("Content-Type") or "").lower()
    if content_type and not content_type.split(";")[0].strip().endswith(("/json", "+json")):
        raise errors.UnsupportedMediaType("send the orders as JSON with Content-Type: application/json")
    deps = container()
    # Raw bytes when base64-encoded: the validator reports bodies that are not UTF-8 as invalid JSON.
    body = base64.b64decode(event.body or "") if event.is_base64_encoded else event.body
    receipt = intake.submit_orders(body, caller, deps.order_store, deps.limits, deps.clock())
    metrics.add_metric(name="OrdersStored", unit=MetricUnit.Count, value=len(receipt.orders))
    logger.info("orders stored", extra={"count": len(receipt.orders)})
    return _json(HTTPStatus.CREATED, receipt.as_dict())


def list_orders(route: Route) -> Response[str]:
    caller = _caller(route)
    deps = container()
    page = intake.list_orders(deps.order_store, caller, _query(route), deps.clock(), deps.cursor_codec())
    metrics.add_metric(name="OrdersListed", unit=MetricUnit.Count, value=len(page["orders"]))
    return _json(HTTPStatus.OK, page)


def get_order(route: Route, record_id: str) -> Response[str]:
    caller = _caller(route)
    trader = _query(route).get("trader")
    deps = container()
    order = intake.find_order(deps.order_store, caller, record_id, deps.clock(), trader)
    metrics.add_metric(name="OrdersRead", unit=MetricUnit.Count, value=1)
    return _json(HTTPStatus.OK, order.public_view())


def cancel_order(route: Route, record_id: str) -> Response[str]:
    caller = _caller(route)
    _query(route)
    deps = container()
    order = intake.cancel_order(deps.order_store, caller, record_id, deps.clock())
    metrics.add_metric(name="OrdersCancelled", unit=MetricUnit.Count, value=1)
    logger.info("order cancelled", extra={"record_id": record_id})
    return _json(HTTPStatus.OK, order.public_view())


def _register(route: Route, operation: Callable[..., Response[str]]) -> None:
    rule = route.path.replace("{", "<").replace("}", ">")

    def endpoint(**parameters: str) -> Response[str]:
        return operation(route, **parameters)

    app.route(rule, route.method)(endpoint)


for _route in ROUTES:
    _register(_route, globals()[_route.operation])


# Every answer publishes a metric (OrdersStored, OrdersListed, OrdersRead, OrdersCancelled or
# RequestsRefused): an invocation with none makes Powertools warn "No application metrics to publish".
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer().capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    logger.append_keys(principal=authorizer.get("principalId"))
    return app.resolve(event, context)
