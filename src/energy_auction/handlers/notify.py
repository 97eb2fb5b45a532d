"""Notifier Lambda: a batch of the notice queue's messages (the topic's, as SNS envelopes) becomes a
few Slack messages: a digest of the order notices, and each other notice on its own.

The notices that could not be delivered are reported as batch item failures (the event source
mapping has ``ReportBatchItemFailures``), so SQS delivers only those again, and the others are not
posted twice. Powertools' ``BatchProcessor`` is not used: it hands one record at a time to a
handler and fails records by their exceptions, while a digest is made of the whole batch at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import SQSEvent

from energy_auction.bootstrap import container
from energy_auction.digest import ALERTS_CHANNEL, Arrival, deliver_batch
from energy_auction.notifications import notice_from_envelope
from energy_auction.observability import logger, metrics_for, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


metrics = metrics_for("notify")


@logger.inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[dict[str, str]]]:
    deps = container()
    arrivals = [
        Arrival(record.message_id, notice_from_envelope(record.body, record.message_id))
        for record in SQSEvent(event).records
    ]
    report = deliver_batch(
        arrivals,
        channels={ALERTS_CHANNEL: deps.notifier},
        record=deps.notice_log,
        store=deps.order_store,
        now=deps.clock(),
        lease_seconds=deps.settings.notice_delivery_lease_seconds,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    # Every one, zeros too: an invocation always publishes metrics (Powertools warns otherwise).
    for name, value in (
        ("NoticesDigested", report.digested),
        ("SlackMessagesPosted", report.posted),
        ("DuplicateNoticesSkipped", report.skipped),
        ("NotificationsFailed", len(report.failed)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    logger.info(
        "notice batch delivered",
        extra={
            "notices": len(arrivals),
            "digested": report.digested,
            "posted": report.posted,
            "skipped": report.skipped,
            "failed": len(report.failed),
        },
    )
    return {"batchItemFailures": [{"itemIdentifier": item} for item in report.failed]}
