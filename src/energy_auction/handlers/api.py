"""API Lambda: POST /orders and GET /orders/{record_id} behind the REQUEST authorizer."""

from __future__ import annotations

import base64
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from energy_auction import codec, errors
from energy_auction.bootstrap import container
from energy_auction.intake import find_order, submit_orders
from energy_auction.observability import logger, metrics, tracer

app = APIGatewayRestResolver(serializer=codec.dumps)

_STATUS: dict[type[errors.EnergyAuctionError], HTTPStatus] = {
    errors.InvalidJson: HTTPStatus.BAD_REQUEST,
    errors.OrdersInvalid: HTTPStatus.UNPROCESSABLE_ENTITY,
    errors.TooManyOrders: HTTPStatus.UNPROCESSABLE_ENTITY,
    errors.BodyTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    errors.OrdersAlreadyProcessed: HTTPStatus.CONFLICT,
    errors.OrderNotFound: HTTPStatus.NOT_FOUND,
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


@app.post("/orders")
def post_orders() -> Response[str]:
    event = app.current_event
    content_type = (event.headers.get("content-type") or event.headers.get("Content-Type") or "").lower()
    if content_type and not content_type.split(";")[0].strip().endswith(("/json", "+json")):
        raise errors.UnsupportedMediaType("send the orders as JSON with Content-Type: application/json")
    deps = container()
    # Raw bytes when base64-encoded: the validator reports bodies that are not UTF-8 as invalid JSON.
    body = base64.b64decode(event.body or "") if event.is_base64_encoded else event.body
    receipt = submit_orders(body, deps.order_store, deps.limits, deps.clock())
    metrics.add_metric(name="OrdersStored", unit=MetricUnit.Count, value=len(receipt.orders))
    logger.info("orders stored", extra={"count": len(receipt.orders)})
    return Response(HTTPStatus.CREATED, "application/json", codec.dumps(receipt.as_dict()))


@app.get("/orders/<record_id>")
def get_order(record_id: str) -> Response[str]:
    deps = container()
    order = find_order(deps.order_store, record_id, deps.clock())
    metrics.add_metric(name="OrdersRead", unit=MetricUnit.Count, value=1)
    return Response(HTTPStatus.OK, "application/json", codec.dumps(order.public_view()))


# Every answer publishes a metric (OrdersStored, OrdersRead or RequestsRefused): an invocation
# with none makes Powertools warn "No application metrics to publish".
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer().capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    logger.append_keys(principal=authorizer.get("principalId"))
    return app.resolve(event, context)
