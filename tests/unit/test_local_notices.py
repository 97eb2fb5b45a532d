"""The local stack's notice path: the durable topic (a SQLite queue standing in for SNS, the notice
queue and its event source mapping), the delivery thread that drains it in batches, and the JSONL
channel that writes each notice once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_auction.adapters.local import JsonlNotifier, LocalTopic
from energy_auction.local.delivery import NoticeDelivery, sqs_event
from energy_auction.local.lambdas import LocalFunction
from energy_auction.notifications import Notice, NoticeKind

from ..conftest import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def topic(tmp_path: Path, clock: FakeClock) -> Iterator[LocalTopic]:
    opened = LocalTopic(tmp_path / "notices.sqlite3", clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def real_time_topic(tmp_path: Path) -> Iterator[LocalTopic]:
    opened = LocalTopic(tmp_path / "notices.sqlite3")
    yield opened
    opened.close()


# --- The topic ----------------------------------------------------------------------------------


def test_a_published_message_is_on_disk_for_any_later_process(tmp_path: Path, clock: FakeClock) -> None:
    # Given a message published by one process
    first = LocalTopic(tmp_path / "notices.sqlite3", clock=clock)
    first.publish("Subject", '{"a": 1}', "order_rejected")
    first.close()

    # When another process (another connection) opens the topic
    other = LocalTopic(tmp_path / "notices.sqlite3", clock=clock)

    # Then the message waits there, due now
    (waiting,) = other.undelivered()
    assert (waiting.subject, waiting.message, waiting.kind, waiting.attempts) == (
        "Subject",
        '{"a": 1}',
        "order_rejected",
        0,
    )
    assert len(other.take(30)) == 1
    other.close()


def test_a_taken_message_is_held_for_its_lease_then_offered_again(
    topic: LocalTopic, clock: FakeClock
) -> None:
    # Given a message taken by a delivery that never reports back (its process died)
    topic.publish(None, "m", None)
    assert len(topic.take(lease_seconds=30)) == 1

    # Then no other delivery gets it during the lease, and the next one does after it
    assert topic.take(30) == []
    clock.advance(29)
    assert topic.take(30) == []
    clock.advance(1)
    (again,) = topic.take(30)
    assert again.message == "m"


def test_a_failed_delivery_is_retried_later_and_a_delivered_one_is_gone(
    topic: LocalTopic, clock: FakeClock
) -> None:
    topic.publish(None, "m", None)
    (first,) = topic.take(30)

    topic.failed(first.message_id, "NotificationFailed", retry_in=10)

    (waiting,) = topic.undelivered()
    assert (waiting.attempts, waiting.last_error, waiting.next_attempt_at) == (
        1,
        "NotificationFailed",
        clock.now + 10,
    )
    assert topic.take(30) == []
    clock.advance(10)
    (second,) = topic.take(30)
    topic.delivered([second.message_id])
    assert topic.undelivered() == []
    assert topic.next_due() is None


def test_messages_are_taken_in_the_order_they_became_due(topic: LocalTopic, clock: FakeClock) -> None:
    for name in ("first", "second", "third"):
        topic.publish(None, name, None)
        clock.advance(1)
    taken = [topic.take(30) for _ in range(3)]
    assert [m.message for one in taken for m in one] == ["first", "second", "third"]


def test_a_batch_is_taken_in_one_go_and_delivered_in_one_go(topic: LocalTopic, clock: FakeClock) -> None:
    for name in ("first", "second", "third"):
        topic.publish(None, name, None)
        clock.advance(1)

    batch = topic.take(30, limit=2)

    assert [m.message for m in batch] == ["first", "second"]
    assert [m.message for m in topic.take(30, limit=5)] == ["third"]
    assert topic.take(30, limit=5) == []  # all three are held
    topic.delivered([m.message_id for m in batch])
    assert [m.message for m in topic.undelivered()] == ["third"]
    with pytest.raises(TypeError, match="not one id"):
        topic.delivered(batch[0].message_id)  # a str is a sequence of one-letter ids


# --- The delivery thread ------------------------------------------------------------------------


class Notifier:
    """A notifier function that records what it was given; ``fail`` makes it raise, ``hang`` makes
    it wait (a Slack that does not answer) until the event is set; ``entered`` is set on each call;
    ``reject`` names messages (by their topic message) to report as batch item failures."""

    def __init__(
        self, fail: int = 0, hang: threading.Event | None = None, reject: set[str] | None = None
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = fail
        self.hang = hang
        self.reject = reject or set()
        self.entered = threading.Event()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.entered.set()
        if self.hang is not None:
            self.hang.wait(30)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("Slack answered 500")
        self.events.append(event)
        failed = [r["messageId"] for r in event["Records"] if json.loads(r["body"])["Message"] in self.reject]
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

    def messages(self) -> list[list[str]]:
        """The topic messages of each batch it got."""
        return [[json.loads(r["body"])["Message"] for r in event["Records"]] for event in self.events]


def function(notifier: Notifier) -> LocalFunction:
    return LocalFunction("notify", notifier, exclusive=False)


def test_each_message_reaches_the_notifier_as_an_sqs_record_holding_the_sns_envelope(
    real_time_topic: LocalTopic,
) -> None:
    # Given the topic and its delivery thread, and a message published with a kind
    topic = real_time_topic
    notifier = Notifier()
    delivery = NoticeDelivery(topic, function(notifier), lease_seconds=30)
    delivery.start()
    try:
        topic.publish("Energy Auction: order rejected", '{"x": 1}', "order_rejected")
        delivery.wake()

        # When delivery settles
        assert delivery.settle(5) == 0
    finally:
        delivery.stop(1)

    # Then the notifier got the SQS event Lambda would get, its body the envelope SNS writes
    (event,) = notifier.events
    (record,) = event["Records"]
    assert (record["eventSource"], record["attributes"]["ApproximateReceiveCount"]) == ("aws:sqs", "1")
    envelope = json.loads(record["body"])
    assert (envelope["Type"], envelope["Subject"], envelope["Message"]) == (
        "Notification",
        "Energy Auction: order rejected",
        '{"x": 1}',
    )
    assert envelope["MessageAttributes"] == {"kind": {"Type": "String", "Value": "order_rejected"}}
    assert envelope["MessageId"] == record["messageId"]
    assert len(record["messageId"]) == 36  # a uuid, as SQS and SNS give
    assert envelope["Timestamp"].endswith("Z")
    assert topic.undelivered() == []


def test_messages_published_together_are_one_batch(real_time_topic: LocalTopic) -> None:
    # Given a burst of messages published within the batching window
    topic = real_time_topic
    for name in ("first", "second", "third"):
        topic.publish(None, name, None)
    notifier = Notifier()

    # When the due messages are delivered
    assert NoticeDelivery(topic, function(notifier), 30).deliver_due() == 3

    # Then the notifier got them in one batch, in the order they were published
    assert notifier.messages() == [["first", "second", "third"]]


def test_a_batch_holds_at_most_the_batch_size(real_time_topic: LocalTopic) -> None:
    for i in range(5):
        real_time_topic.publish(None, f"m{i}", None)
    notifier = Notifier()
    assert NoticeDelivery(real_time_topic, function(notifier), 30, batch_size=2).deliver_due() == 5
    assert [len(batch) for batch in notifier.messages()] == [2, 2, 1]


def test_the_thread_gathers_a_burst_over_its_window(real_time_topic: LocalTopic) -> None:
    # Given a delivery thread whose window is long (it ends early once a batch is full: 3 here)
    topic = real_time_topic
    notifier = Notifier()
    delivery = NoticeDelivery(topic, function(notifier), 30, window_seconds=60, batch_size=3)
    delivery.start()
    try:
        # When a burst is published one message at a time, the thread taking the first at once
        topic.publish(None, "first", None)
        delivery.wake()
        topic.publish(None, "second", None)
        topic.publish(None, "third", None)
        assert delivery.settle(30) == 0
    finally:
        delivery.stop(1)

    # Then it waited for the rest of the burst and delivered it as one batch
    assert notifier.messages() == [["first", "second", "third"]]


def test_a_batch_item_failure_stays_queued_and_the_rest_is_delivered(real_time_topic: LocalTopic) -> None:
    # Given a notifier that reports one message of the batch as failed
    topic = real_time_topic
    for name in ("ok-1", "bad", "ok-2"):
        topic.publish(None, name, None)
    notifier = Notifier(reject={"bad"})

    # When the batch is delivered
    assert NoticeDelivery(topic, function(notifier), 30).deliver_due() == 2

    # Then only that one waits, for a later attempt
    (waiting,) = topic.undelivered()
    assert (waiting.message, waiting.attempts, waiting.last_error) == ("bad", 1, "NotificationFailed")
    assert waiting.next_attempt_at > time.time()


def test_a_notifier_that_fails_leaves_the_whole_batch_queued_with_a_later_retry(
    real_time_topic: LocalTopic,
) -> None:
    topic = real_time_topic
    topic.publish(None, "m", None)
    topic.publish(None, "n", None)
    delivery = NoticeDelivery(topic, function(Notifier(fail=10**6)), 30)

    assert delivery.deliver_due() == 0

    waiting = topic.undelivered()
    assert [(m.attempts, m.last_error) for m in waiting] == [(1, "RuntimeError")] * 2
    assert all(m.next_attempt_at > time.time() for m in waiting)
    assert delivery.settle(1) == 2  # nothing due any more: it says what is left at once


@pytest.mark.parametrize(
    ("answer", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, {"m", "n"}),
        ({"batchItemFailures": [{"itemIdentifier": "not-in-the-batch"}]}, {"m", "n"}),
        ({"batchItemFailures": "all"}, {"m", "n"}),
        ("a string", {"m", "n"}),
    ],
    ids=["none", "empty", "no failures", "null id", "unknown id", "not a list", "not an object"],
)
def test_an_answer_is_read_as_lambda_reads_a_partial_batch_response(
    real_time_topic: LocalTopic, answer: Any, failed: set[str]
) -> None:
    real_time_topic.publish(None, "m", None)
    real_time_topic.publish(None, "n", None)
    delivery = NoticeDelivery(real_time_topic, function(lambda event, context: answer), 30)  # type: ignore[arg-type]
    delivery.deliver_due()
    assert {m.message for m in real_time_topic.undelivered()} == failed


def test_delivery_retries_until_the_notifier_succeeds(real_time_topic: LocalTopic) -> None:
    topic = real_time_topic
    notifier = Notifier(fail=1)
    delivery = NoticeDelivery(topic, function(notifier), 30)
    delivery.start()
    try:
        topic.publish(None, "m", None)
        delivery.wake()
        deadline = time.monotonic() + 10
        while topic.undelivered() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        delivery.stop(1)
    assert len(notifier.events) == 1
    assert topic.undelivered() == []


def test_stopping_does_not_wait_for_a_notifier_that_hangs(real_time_topic: LocalTopic) -> None:
    # Given a notifier stuck on a Slack that does not answer (for 30 s), with a message in delivery
    topic = real_time_topic
    hang = threading.Event()
    notifier = Notifier(hang=hang)
    delivery = NoticeDelivery(topic, function(notifier), 30)
    delivery.start()
    try:
        topic.publish(None, "m", None)
        delivery.wake()
        assert notifier.entered.wait(10)

        # When delivery stops with a one-second grace
        started = time.monotonic()
        delivery.stop(grace_seconds=1)

        # Then it returns after the grace, not after Slack's 30 s, and the message is still queued
        assert time.monotonic() - started < 15
        assert [m.message for m in topic.undelivered()] == ["m"]
    finally:
        hang.set()


def test_the_envelope_of_a_message_without_kind_or_subject_has_neither(topic: LocalTopic) -> None:
    topic.publish(None, "m", None)
    (message,) = topic.undelivered()
    envelope = json.loads(sqs_event([message])["Records"][0]["body"])
    assert "MessageAttributes" not in envelope
    assert "Subject" not in envelope


# --- The JSONL channel --------------------------------------------------------------------------


def notice(key: str | None) -> Notice:
    return Notice(kind=NoticeKind.OTHER, title="t", text="x", key=key)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_notice_with_a_key_is_written_once_whoever_writes_it_again(tmp_path: Path) -> None:
    # Given two processes' notifiers on the same file (the stack and run-pipeline)
    path = tmp_path / "notifications.jsonl"
    one, two = JsonlNotifier(path), JsonlNotifier(path)

    # When both deliver the same notice, and a retry delivers it again
    one.notify(notice("order_rejected/run-1/a"))
    two.notify(notice("order_rejected/run-1/a"))
    one.notify(notice("order_rejected/run-1/a"))
    two.notify(notice("order_rejected/run-1/b"))

    # Then each key is one line
    assert [line["key"] for line in lines(path)] == ["order_rejected/run-1/a", "order_rejected/run-1/b"]
    # And a notifier opened later knows the keys written before it
    JsonlNotifier(path).notify(notice("order_rejected/run-1/b"))
    assert len(lines(path)) == 2


def test_notices_without_a_key_are_all_written(tmp_path: Path) -> None:
    path = tmp_path / "notifications.jsonl"
    notifier = JsonlNotifier(path)
    notifier.notify(notice(None))
    notifier.notify(notice(None))
    assert len(lines(path)) == 2


def test_a_line_a_killed_process_left_unfinished_does_not_spoil_the_next(tmp_path: Path) -> None:
    # Given a file whose last line a process killed mid-write left without its end
    path = tmp_path / "notifications.jsonl"
    JsonlNotifier(path).notify(notice("k1"))
    with path.open("ab") as handle:
        handle.write(b'{"kind": "other", "tit')

    # When another notice is written
    JsonlNotifier(path).notify(notice("k2"))

    # Then it is a whole line of its own; the broken fragment stays a line apart
    *_, fragment, last = path.read_text().splitlines()
    assert fragment == '{"kind": "other", "tit'
    assert json.loads(last)["key"] == "k2"
