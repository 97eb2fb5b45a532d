"""The local stack's notice path: the durable topic (a SQLite queue standing in for SNS and Lambda's
asynchronous delivery), the delivery thread that drains it, and the JSONL channel that writes each
notice once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_auction.adapters.local import JsonlNotifier, LocalTopic
from energy_auction.local.delivery import NoticeDelivery, sns_event
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
    assert other.take(30) is not None
    other.close()


def test_a_taken_message_is_held_for_its_lease_then_offered_again(
    topic: LocalTopic, clock: FakeClock
) -> None:
    # Given a message taken by a delivery that never reports back (its process died)
    topic.publish(None, "m", None)
    assert topic.take(lease_seconds=30) is not None

    # Then no other delivery gets it during the lease, and the next one does after it
    assert topic.take(30) is None
    clock.advance(29)
    assert topic.take(30) is None
    clock.advance(1)
    again = topic.take(30)
    assert again is not None
    assert again.message == "m"


def test_a_failed_delivery_is_retried_later_and_a_delivered_one_is_gone(
    topic: LocalTopic, clock: FakeClock
) -> None:
    topic.publish(None, "m", None)
    first = topic.take(30)
    assert first is not None

    topic.failed(first.message_id, "NotificationFailed", retry_in=10)

    (waiting,) = topic.undelivered()
    assert (waiting.attempts, waiting.last_error, waiting.next_attempt_at) == (
        1,
        "NotificationFailed",
        clock.now + 10,
    )
    assert topic.take(30) is None
    clock.advance(10)
    second = topic.take(30)
    assert second is not None
    topic.delivered(second.message_id)
    assert topic.undelivered() == []
    assert topic.next_due() is None


def test_messages_are_taken_in_the_order_they_became_due(topic: LocalTopic, clock: FakeClock) -> None:
    for name in ("first", "second", "third"):
        topic.publish(None, name, None)
        clock.advance(1)
    taken = [topic.take(30) for _ in range(3)]
    assert [m.message for m in taken if m is not None] == ["first", "second", "third"]


# --- The delivery thread ------------------------------------------------------------------------


class Notifier:
    """A notifier function that records what it was given; ``fail`` makes it raise, ``hang`` makes
    it wait (a Slack that does not answer) until the event is set; ``entered`` is set on each call."""

    def __init__(self, fail: int = 0, hang: threading.Event | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = fail
        self.hang = hang
        self.entered = threading.Event()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, int]:
        self.entered.set()
        if self.hang is not None:
            self.hang.wait(30)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("Slack answered 500")
        self.events.append(event)
        return {"delivered": 1}


def test_each_message_reaches_the_notifier_as_an_sns_event(real_time_topic: LocalTopic) -> None:
    # Given the topic and its delivery thread, and a message published with a kind
    topic = real_time_topic
    notifier = Notifier()
    delivery = NoticeDelivery(topic, LocalFunction("notify", notifier, exclusive=False), lease_seconds=30)
    delivery.start()
    try:
        topic.publish("Energy Auction: order rejected", '{"x": 1}', "order_rejected")
        delivery.wake()

        # When delivery settles
        assert delivery.settle(5) == 0
    finally:
        delivery.stop(1)

    # Then the notifier got the SNS event Lambda would get, and the topic is empty
    (event,) = notifier.events
    sns = event["Records"][0]["Sns"]
    assert (sns["Subject"], sns["Message"]) == ("Energy Auction: order rejected", '{"x": 1}')
    assert sns["MessageAttributes"] == {"kind": {"Type": "String", "Value": "order_rejected"}}
    assert sns["MessageId"] == topic_message_id(event)
    assert sns["Timestamp"].endswith("Z")
    assert topic.undelivered() == []


def topic_message_id(event: dict[str, Any]) -> str:
    message_id: str = event["Records"][0]["Sns"]["MessageId"]
    assert len(message_id) == 36  # a uuid, as SNS gives
    return message_id


def test_a_notifier_that_fails_leaves_the_message_queued_with_a_later_retry(
    real_time_topic: LocalTopic,
) -> None:
    topic = real_time_topic
    topic.publish(None, "m", None)
    delivery = NoticeDelivery(topic, LocalFunction("notify", Notifier(fail=10**6), exclusive=False), 30)

    assert delivery.deliver_due() == 0

    (waiting,) = topic.undelivered()
    assert (waiting.attempts, waiting.last_error) == (1, "RuntimeError")
    assert waiting.next_attempt_at > time.time()
    assert delivery.settle(1) == 1  # nothing due any more: it says what is left at once


def test_delivery_retries_until_the_notifier_succeeds(real_time_topic: LocalTopic) -> None:
    topic = real_time_topic
    notifier = Notifier(fail=1)
    delivery = NoticeDelivery(topic, LocalFunction("notify", notifier, exclusive=False), 30)
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
    delivery = NoticeDelivery(topic, LocalFunction("notify", notifier, exclusive=False), 30)
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


def test_the_sns_event_of_a_message_without_kind_has_no_attributes(topic: LocalTopic) -> None:
    topic.publish("s", "m", None)
    (message,) = topic.undelivered()
    assert sns_event(message)["Records"][0]["Sns"]["MessageAttributes"] == {}


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
