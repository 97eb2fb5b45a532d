"""ProcessOrder (Lambda B): settle one order result; a rejected order raises OrderRejected.

The event is the Distributed Map item ``{"result": {...order result...}, "run_id": "..."}``;
``{"action": "release", ...}`` gives the order back after processing kept failing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from energy_auction.adapters.transient import is_transient
from energy_auction.bootstrap import container
from energy_auction.errors import OrderRejected, TransientFailure
from energy_auction.observability import logger, metrics, tracer
from energy_auction.pipeline import process_order, release_order

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result, run_id = event["result"], str(event["run_id"])
    logger.append_keys(run_id=run_id, record_id=result.get("record_id"))
    deps = container()
    try:
        if event.get("action") == "release":
            released = release_order(result, run_id, store=deps.order_store)
            metrics.add_metric(name="OrdersFailed", unit=MetricUnit.Count, value=1)
            logger.warning("order released after failed processing")
            return released
        settled = process_order(
            result,
            run_id,
            store=deps.order_store,
            results=deps.result_store,
            now=deps.clock(),
            notice_delay_seconds=deps.settings.notice_redelivery_seconds,
        )
    except OrderRejected:
        metrics.add_metric(name="OrdersRejected", unit=MetricUnit.Count, value=1)
        logger.info("order rejected")
        raise
    except Exception as err:
        if is_transient(err):
            logger.warning(
                "processing failed; the state machine retries", extra={"error": type(err).__name__}
            )
            raise TransientFailure(type(err).__name__) from err
        raise
    metrics.add_metric(name="OrdersAccepted", unit=MetricUnit.Count, value=1)
    logger.info("order accepted", extra={"result_key": settled["result_key"]})
    return settled
