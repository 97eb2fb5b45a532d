"""FetchResults (Lambda A): is the auction ready? If so, stage the pending orders' keys in batches.

Its other actions, each a task of the state machine: ``{"action": "redeliver", "run_id"}`` (the
first state of every run) publishes again the rejection notices that are owed and overdue;
``{"action": "claim", "run_id", "batch", "keys"}`` (the first state of each batch) claims the
batch's orders and answers their results; ``{"action": "tally", "run_id", "batch", "outcomes"}``
(the last state of each batch) records how they ended; ``{"action": "summarise", "run_id",
"started_at"}`` answers the run summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from energy_auction.adapters.transient import retried_by_the_state_machine
from energy_auction.bootstrap import container
from energy_auction.observability import logger, metrics_for, tracer
from energy_auction.pipeline import claim_batch, fetch_results, redeliver_notices, summarise_run, tally_batch

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
    if action == "claim":
        batch = int(event["batch"])
        with retried_by_the_state_machine("claiming a batch"):
            claimed = claim_batch(
                [str(k) for k in event["keys"]],
                batch,
                run_id,
                store=deps.order_store,
                market=deps.market,
                now=deps.clock(),
                lease_seconds=deps.settings.claim_lease_seconds,
            )
        count = len(claimed["results"])
        metrics.add_metric(name="OrdersClaimed", unit=MetricUnit.Count, value=count)
        logger.info("batch claimed", extra={"batch": batch, "staged": len(event["keys"]), "claimed": count})
        return claimed
    if action == "tally":
        with retried_by_the_state_machine("recording a batch"):
            tally = tally_batch(event["outcomes"], int(event["batch"]), run_id, store=deps.order_store)
        metrics.add_metric(name="BatchesSettled", unit=MetricUnit.Count, value=1)
        logger.info("batch settled", extra=tally)
        return tally
    if action == "summarise":
        with retried_by_the_state_machine("summarising the run"):
            summary = summarise_run(
                run_id, str(event["started_at"]), store=deps.order_store, now=deps.clock()
            )
        metrics.add_metric(name="OrdersSettled", unit=MetricUnit.Count, value=summary["orders"])
        logger.info("run summary", extra=summary)
        return summary
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
    if action is not None:
        # Say, an execution still running an earlier definition ("release_run" is gone): refused
        # plainly, not taken for a poll.
        raise ValueError(f"FetchResults has no action {action!r}")
    attempt = int(event["attempt"])
    logger.append_keys(attempt=attempt)
    settings = deps.settings
    with retried_by_the_state_machine("fetching results"):
        answer = fetch_results(
            run_id,
            attempt,
            store=deps.order_store,
            market=deps.market,
            work=deps.work_store,
            now=deps.clock(),
            batch_size=settings.pipeline_batch_size,
            max_orders=settings.pipeline_max_orders,
        )
    if answer["results"]:
        metrics.add_metric(name="OrdersStaged", unit=MetricUnit.Count, value=answer["count"])
    else:
        metrics.add_metric(name="ResultsNotReady", unit=MetricUnit.Count, value=1)
    logger.info("fetch results", extra={k: v for k, v in answer.items() if k != "items"})
    return answer
