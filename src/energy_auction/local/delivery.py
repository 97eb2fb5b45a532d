"""The local stand-in for SNS invoking the notifier Lambda: messages of the local topic are delivered
to the notifier handler in a background thread, one at a time, and retried with backoff until they
are delivered. Delivery never holds up the pipeline; what has not been delivered stays in the topic
(on disk) for the next process, and :meth:`NoticeDelivery.settle` says how much is left.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from energy_auction.observability import logger

if TYPE_CHECKING:
    from energy_auction.adapters.local import LocalTopic, TopicMessage
    from energy_auction.local.lambdas import LocalFunction

RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
"""A message that keeps failing is tried again after 1, 2, 4 ... seconds, then every 5 minutes."""
_IDLE_POLL_SECONDS = 1.0
"""How often an idle worker looks for messages another process published or a retry that is due."""
LEASE_MARGIN_SECONDS = 5.0
"""A message is held this much longer than the delivery lease of the notice it carries: after a
crash, the message comes back only once the notice is free again, so its redelivery is not
skipped as a delivery still in progress."""


def sns_event(message: TopicMessage) -> dict[str, Any]:
    """The event SNS gives a subscribed Lambda for one message."""
    published = datetime.fromtimestamp(message.published_at, UTC)
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": message.message_id,
                    "Subject": message.subject,
                    "Message": message.message,
                    "Timestamp": published.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "MessageAttributes": (
                        {"kind": {"Type": "String", "Value": message.kind}} if message.kind else {}
                    ),
                },
            }
        ]
    }


class NoticeDelivery:
    """Delivers the local topic's messages to the notifier function in a background thread."""

    def __init__(self, topic: LocalTopic, notify: LocalFunction, lease_seconds: float) -> None:
        """``lease_seconds``: the notices' delivery lease (``notice_delivery_lease_seconds``)."""
        self._topic = topic
        self._notify = notify
        self._lease = lease_seconds + LEASE_MARGIN_SECONDS
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
        """Stop taking messages; wait up to ``grace_seconds`` for the one being delivered. A delivery
        still going on then is left to its lease: the message is delivered again by a later process."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=grace_seconds)
            self._thread = None

    def deliver_due(self) -> int:
        """Deliver every message that is due now, in this thread; returns how many were delivered."""
        delivered = 0
        while not self._stop.is_set():
            with self._busy:  # held from taking a message to recording its fate (see settle)
                message = self._topic.take(self._lease)
                if message is None:
                    return delivered
                delivered += self._deliver(message)
        return delivered

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

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
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

    def _deliver(self, message: TopicMessage) -> int:
        try:
            self._notify.invoke(sns_event(message))
        except Exception as err:
            retry_in = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**message.attempts)
            self._topic.failed(message.message_id, type(err).__name__, retry_in)
            logger.warning(
                "notice not delivered; it stays queued and is retried",
                extra={
                    "message_id": message.message_id,
                    "attempts": message.attempts + 1,
                    "retry_in_seconds": retry_in,
                    "error": type(err).__name__,
                },
            )
            return 0
        self._topic.delivered(message.message_id)
        return 1
