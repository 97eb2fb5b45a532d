"""ProcessOrder (Lambda B): settle one order result; a rejected order raises OrderRejected.

The event is the Distributed Map item ``{"result": {...order result...}, "run_id": "..."}``;
``{"action": "release", ...}`` gives the order back after processing kept failing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from energy_auction.adapters.transient import retried_by_the_state_machine
from energy_auction.bootstrap import container
from energy_auction.errors import OrderRejected
from energy_auction.observability import logger, metrics_for, tracer
from energy_auction.pipeline import CLAIM_MARGIN_SECONDS, process_order, release_order

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


metrics = metrics_for("process-order")


@logger.inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result, run_id = event["result"], str(event["run_id"])
    logger.append_keys(run_id=run_id, record_id=result.get("record_id"))
    deps = container()
    if event.get("action") == "release":
        with retried_by_the_state_machine("releasing the order"):
            released = release_order(result, run_id, store=deps.order_store)
        metrics.add_metric(name="OrdersFailed", unit=MetricUnit.Count, value=1)
        logger.warning("order released after failed processing")
        return released
    try:
        with retried_by_the_state_machine("processing"):
            settled = process_order(
                result,
                run_id,
                store=deps.order_store,
                results=deps.result_store,
                now=deps.clock(),
                notice_delay_seconds=deps.settings.notice_redelivery_seconds,
                claim_margin_seconds=min(CLAIM_MARGIN_SECONDS, deps.settings.claim_lease_seconds / 10),
            )
    except OrderRejected:
        metrics.add_metric(name="OrdersRejected", unit=MetricUnit.Count, value=1)
        logger.info("order rejected")
        raise
    metrics.add_metric(name="OrdersAccepted", unit=MetricUnit.Count, value=1)
    logger.info("order accepted", extra={"result_key": settled["result_key"]})
    return settled
