"""The local stand-in for the notice queue and its event source mapping: messages of the local topic
are gathered into batches over a short window and handed to the notifier handler in a background
thread, as SQS events whose records carry the SNS envelope, exactly as the notifier gets them on AWS.
A message the handler reports as a batch item failure (or every message of a batch, when the
handler raises) stays in the topic and is retried with backoff until it is delivered. Delivery
never holds up the pipeline; what has not been delivered stays in the topic (on disk) for the next
process, and :meth:`NoticeDelivery.settle` says how much is left.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from energy_auction.digest import BATCH_SIZE
from energy_auction.local.lambdas import LOCAL_ACCOUNT
from energy_auction.observability import logger

if TYPE_CHECKING:
    from energy_auction.adapters.local import LocalTopic, TopicMessage
    from energy_auction.local.lambdas import LocalFunction

RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
"""A message that keeps failing is tried again after 1, 2, 4 ... seconds, then every 5 minutes."""
BATCH_WINDOW_SECONDS = 1.0
"""How long the thread gathers messages into a batch after the first, as the event source
mapping's batching window does on AWS (shorter here: a local run is small and someone waits)."""
_IDLE_POLL_SECONDS = 1.0
"""How often an idle worker looks for messages another process published or a retry that is due."""
_GATHER_POLL_SECONDS = 0.05
LEASE_MARGIN_SECONDS = 5.0
"""A message is held this much longer than the delivery lease of the notice it carries: after a
crash, the message comes back only once the notice is free again, so its redelivery is not
skipped as a delivery still in progress."""

QUEUE_ARN = f"arn:aws:sqs:local:{LOCAL_ACCOUNT}:energy-auction-notices"
TOPIC_ARN = f"arn:aws:sns:local:{LOCAL_ACCOUNT}:energy-auction-notifications"


def sns_envelope(message: TopicMessage) -> dict[str, Any]:
    """What SNS writes to a subscribed queue for one message (no raw message delivery)."""
    published = datetime.fromtimestamp(message.published_at, UTC)
    envelope: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message.message_id,
        "TopicArn": TOPIC_ARN,
        "Message": message.message,
        "Timestamp": published.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if message.subject is not None:
        envelope["Subject"] = message.subject
    if message.kind:
        envelope["MessageAttributes"] = {"kind": {"Type": "String", "Value": message.kind}}
    return envelope


def sqs_event(messages: list[TopicMessage]) -> dict[str, Any]:
    """The event the event source mapping gives the notifier for a batch of the queue's messages."""
    records = []
    for message in messages:
        body = json.dumps(sns_envelope(message), ensure_ascii=False)
        records.append(
            {
                "messageId": message.message_id,
                "receiptHandle": message.message_id,
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": str(message.attempts + 1),
                    "SentTimestamp": str(int(message.published_at * 1000)),
                    "SenderId": LOCAL_ACCOUNT,
                    "ApproximateFirstReceiveTimestamp": str(int(message.published_at * 1000)),
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": QUEUE_ARN,
                "awsRegion": "local",
            }
        )
    return {"Records": records}


class NoticeDelivery:
    """Delivers the local topic's messages to the notifier function in batches, in a background thread."""

    def __init__(
        self,
        topic: LocalTopic,
        notify: LocalFunction,
        lease_seconds: float,
        *,
        window_seconds: float = BATCH_WINDOW_SECONDS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        """``lease_seconds``: the notices' delivery lease (``notice_delivery_lease_seconds``)."""
        self._topic = topic
        self._notify = notify
        self._lease = lease_seconds + LEASE_MARGIN_SECONDS
        self._window = window_seconds
        self._batch_size = batch_size
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="notice-delivery", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A message was published: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, grace_seconds: float) -> None:
        """Stop taking messages; wait up to ``grace_seconds`` for the batch being delivered. A delivery
        still going on then is left to its lease: the messages are delivered again by a later process."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=grace_seconds)
            self._thread = None

    def deliver_due(self) -> int:
        """Deliver every message that is due now, in this thread, in batches without waiting for
        more to arrive; returns how many were delivered."""
        return self._deliver_batches(window=0.0)

    def settle(self, timeout: float) -> int:
        """Give delivery up to ``timeout`` seconds to finish what is due; returns how many messages
        are still undelivered (waiting for a retry, or for a Slack that does not answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            due = self._topic.next_due()
            if due is None or (due > time.time() and not self._busy.locked()):
                break  # nothing waits, or only later retries (and deliveries of other processes)
            self.wake()
            time.sleep(0.02)
        return len(self._topic.undelivered())

    def _deliver_batches(self, window: float) -> int:
        delivered = 0
        while not self._stop.is_set():
            with self._busy:  # held from taking a batch to recording its fate (see settle)
                batch = self._gather(window)
                if not batch:
                    return delivered
                delivered += self._deliver(batch)
        return delivered

    def _gather(self, window: float) -> list[TopicMessage]:
        """The messages due now, and those that come due within ``window`` of the first."""
        batch = self._topic.take(self._lease, self._batch_size)
        if not batch:
            return []
        until = time.monotonic() + window
        while len(batch) < self._batch_size and not self._stop.is_set():
            more = self._topic.take(self._lease, self._batch_size - len(batch))
            if more:
                batch.extend(more)
            elif time.monotonic() < until:
                self._stop.wait(_GATHER_POLL_SECONDS)
            else:
                break
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._deliver_batches(self._window)
            except Exception:  # the topic itself failed (disk): keep the thread, try again later
                logger.exception("the local notice queue failed")
            due = self._topic_next_due()
            wait = _IDLE_POLL_SECONDS if due is None else min(_IDLE_POLL_SECONDS, max(0.0, due - time.time()))
            self._wake.wait(wait)
            self._wake.clear()

    def _topic_next_due(self) -> float | None:
        try:
            return self._topic.next_due()
        except Exception:
            return None

    def _deliver(self, batch: list[TopicMessage]) -> int:
        """Hand ``batch`` to the notifier; record each message delivered or failed; returns how many
        were delivered."""
        try:
            answer = self._notify.invoke(sqs_event(batch))
        except Exception as err:  # the whole batch failed, as when the Lambda raises on AWS
            failed, error = {m.message_id for m in batch}, type(err).__name__
        else:
            failed, error = _batch_item_failures(answer, batch), "NotificationFailed"
        self._topic.delivered([m.message_id for m in batch if m.message_id not in failed])
        for message in (m for m in batch if m.message_id in failed):
            retry_in = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**message.attempts)
            self._topic.failed(message.message_id, error, retry_in)
            logger.warning(
                "notice not delivered; it stays queued and is retried",
                extra={
                    "message_id": message.message_id,
                    "attempts": message.attempts + 1,
                    "retry_in_seconds": retry_in,
                    "error": error,
                },
            )
        return len(batch) - len(failed)


def _batch_item_failures(answer: Any, batch: list[TopicMessage]) -> set[str]:
    """The message ids the handler reported failed, read as Lambda reads a partial batch response:
    an answer that is not one fails the whole batch."""
    ids = {m.message_id for m in batch}
    if answer is None:
        return set()
    failures = answer.get("batchItemFailures") if isinstance(answer, dict) else None
    if failures is None and isinstance(answer, dict):
        return set()
    if not isinstance(failures, list):
        return ids
    named = {f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures}
    return {i for i in named if isinstance(i, str)} if named <= ids else ids
