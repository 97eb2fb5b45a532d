"""Notifier Lambda: each message of the notification topic becomes a notice, posted to Slack.

Every record is tried; if any could not be delivered the invocation fails afterwards, so SNS
(through Lambda's asynchronous retries) delivers the event again. A rejection notice is delivered
once: a copy that was delivered already (a retry, a redelivery) is skipped.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import SNSEvent

from energy_auction.bootstrap import container
from energy_auction.notifications import NotificationFailed, notice_from_message
from energy_auction.observability import logger, metrics_for, tracer
from energy_auction.pipeline import deliver_notice

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


metrics = metrics_for("notify")


@logger.inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    deps = container()
    delivered, skipped, failed = 0, 0, 0
    first_error: Exception | None = None
    for record in SNSEvent(event).records:
        sns = record.sns
        kind = (sns.get("MessageAttributes") or {}).get("kind") or {}
        notice = notice_from_message(sns.get("Message") or "", kind.get("Value"), sns.get("Subject"))
        if notice.occurred_at is None and sns.get("Timestamp"):
            notice = dataclasses.replace(notice, occurred_at=sns["Timestamp"])
        if notice.key is None and sns.get("MessageId"):
            notice = dataclasses.replace(notice, key=sns["MessageId"])
        logger.append_keys(sns_message_id=sns.get("MessageId"), notice_kind=notice.kind.value)
        try:
            sent = deliver_notice(
                notice,
                notifier=deps.notifier,
                store=deps.order_store,
                now=deps.clock(),
                lease_seconds=deps.settings.notice_delivery_lease_seconds,
            )
        except Exception as err:
            failed += 1
            first_error = first_error or err
            logger.error("notice not delivered", extra={"error": type(err).__name__})
        else:
            delivered += sent
            skipped += not sent
    logger.remove_keys(["sns_message_id", "notice_kind"])
    metrics.add_metric(name="NotificationsDelivered", unit=MetricUnit.Count, value=delivered)
    if skipped:
        metrics.add_metric(name="DuplicateNoticesSkipped", unit=MetricUnit.Count, value=skipped)
    if failed:
        metrics.add_metric(name="NotificationsFailed", unit=MetricUnit.Count, value=failed)
        message = f"{failed} of {delivered + skipped + failed} notices were not delivered"
        raise NotificationFailed(message) from first_error
    return {"delivered": delivered, "skipped": skipped}
