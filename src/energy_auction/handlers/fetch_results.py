"""FetchResults (Lambda A): is the auction ready? If so, claim the pending orders and stage their results.

``{"action": "release_run", "run_id": ...}`` gives back the orders of a run whose FetchResults
kept failing; ``{"action": "redeliver", "run_id": ...}`` (the first state of every run) publishes
again the rejection notices that are owed and overdue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from energy_auction.adapters.transient import retried_by_the_state_machine
from energy_auction.bootstrap import container
from energy_auction.observability import logger, metrics_for, tracer
from energy_auction.pipeline import fetch_results, redeliver_notices, release_run

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


metrics = metrics_for("fetch-results")


# Each action publishes a metric, so Powertools never warns "No application metrics to publish".


@logger.inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_id = str(event["run_id"])
    deps = container()
    action = event.get("action")
    logger.append_keys(run_id=run_id)
    if action == "release_run":
        with retried_by_the_state_machine("releasing a run's orders"):
            released = release_run(run_id, store=deps.order_store, now=deps.clock())
        metrics.add_metric(name="OrdersReleased", unit=MetricUnit.Count, value=released["released"])
        logger.warning("released the orders of a failed run", extra={"released": released["released"]})
        return released
    if action == "redeliver":
        with retried_by_the_state_machine("redelivering owed notices"):
            redelivered = redeliver_notices(
                run_id,
                store=deps.order_store,
                publisher=deps.notice_publisher,
                now=deps.clock(),
                redelivery_seconds=deps.settings.notice_redelivery_seconds,
            )
        # Published when 0 too: a run that had nothing to redeliver is a data point, not a gap.
        metrics.add_metric(name="NoticesRedelivered", unit=MetricUnit.Count, value=redelivered["redelivered"])
        if redelivered["redelivered"]:
            logger.warning("published owed rejection notices again", extra=redelivered)
        return redelivered
    attempt = int(event["attempt"])
    logger.append_keys(attempt=attempt)
    with retried_by_the_state_machine("fetching results"):
        answer = fetch_results(
            run_id,
            attempt,
            store=deps.order_store,
            market=deps.market,
            work=deps.work_store,
            now=deps.clock(),
            lease_seconds=deps.settings.claim_lease_seconds,
        )
    if answer["results"]:
        metrics.add_metric(name="OrdersClaimed", unit=MetricUnit.Count, value=answer["count"])
    else:
        metrics.add_metric(name="ResultsNotReady", unit=MetricUnit.Count, value=1)
    logger.info("fetch results", extra={k: v for k, v in answer.items() if k != "items"})
    return answer
