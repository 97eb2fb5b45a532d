"""The notifier Lambda: SNS events through the local backend to notifications.jsonl and a fake Slack."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_auction import bootstrap
from energy_auction.adapters.local import SqliteOrderStore
from energy_auction.handlers import notify
from energy_auction.local.lambdas import LocalLambdaContext
from energy_auction.notifications import NotificationFailed
from energy_auction.orders import OrderStatus
from energy_auction.settings import Backend, Settings
from tests.builders import key, keys

from ..adapters.stores import pending
from ..fake_slack import SECRET_PATH, FakeSlack, Reply
from ..sns import (
    TIMESTAMP,
    alarm_message,
    not_ready_message,
    rejected_message,
    sns_event,
    sns_record,
)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def install(home: Path, webhook: str | None) -> Path:
    """The local backend with this webhook, as the handler's container; returns the JSONL file."""
    settings = Settings(backend=Backend.LOCAL, home=home, slack_webhook_url=webhook)
    bootstrap.use(bootstrap.Container(settings))
    return settings.notifications_file


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = notify.handler(event, LocalLambdaContext("notify"))
    return answer


def written(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_message_is_written_to_the_jsonl_file_and_posted_to_slack(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Given the local stack with a Slack webhook
    jsonl = install(tmp_path, slack.url)
    event = sns_event(
        sns_record(rejected_message("unique_id_1"), "order_rejected", "Energy Auction: order rejected"),
        sns_record(not_ready_message("run-2", 10), "results_not_ready", "Energy Auction: results not ready"),
        sns_record(
            alarm_message("energy-auction-notify-errors"), None, 'ALARM: "energy-auction-notify-errors"'
        ),
    )

    # When the notifier Lambda gets the event
    answer = invoke(event)

    # Then every message is a line of the file and a post to Slack, in order
    assert answer == {"delivered": 3, "skipped": 0}
    lines = written(jsonl)
    assert [line["kind"] for line in lines] == ["order_rejected", "results_not_ready", "alarm"]
    assert lines[0]["title"] == "Order unique_id_1 of trader-1 rejected"
    assert lines[0]["fields"]["record_id"] == "unique_id_1"
    posts = slack.posts()
    assert [post["blocks"][0]["text"]["text"] for post in posts] == [line["title"] for line in lines]
    assert [post["text"] for post in posts] == [line["text"] for line in lines]
    assert {r.path for r in slack.received} == {SECRET_PATH}


def test_a_message_without_its_own_time_takes_the_sns_timestamp(tmp_path: Path, slack: FakeSlack) -> None:
    jsonl = install(tmp_path, slack.url)
    invoke(sns_event(sns_record(not_ready_message("run-2", 10), "results_not_ready")))
    [line] = written(jsonl)
    assert line["occurred_at"] == TIMESTAMP


def test_an_unreadable_message_is_delivered_as_a_generic_notice(tmp_path: Path, slack: FakeSlack) -> None:
    # Given a message that is not JSON and has no kind
    jsonl = install(tmp_path, slack.url)

    # When it arrives
    invoke(sns_event(sns_record("\x00 not json {", None, None)))

    # Then it is still written and posted
    [line] = written(jsonl)
    assert line["kind"] == "other"
    assert len(slack.posts()) == 1


def test_without_a_webhook_the_notice_is_still_written(tmp_path: Path) -> None:
    # Given the local stack without a Slack webhook
    jsonl = install(tmp_path, None)

    # When a rejection arrives
    answer = invoke(sns_event(sns_record(rejected_message("unique_id_9"), "order_rejected")))

    # Then the file has it and the invocation succeeds (the notice was logged instead of posted)
    assert answer == {"delivered": 1, "skipped": 0}
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["unique_id_9"]


def test_when_slack_stays_down_the_handler_fails_but_the_file_has_the_notice(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Given Slack keeps answering 503 (asking to come back at once, so the test does not wait)
    jsonl = install(tmp_path, slack.url)
    slack.otherwise = Reply(503, "service_unavailable", {"Retry-After": "0"})

    # When a rejection arrives
    with pytest.raises(NotificationFailed) as raised:
        invoke(sns_event(sns_record(rejected_message("unique_id_1"), "order_rejected")))

    # Then the invocation fails, so SNS delivers it again, after all attempts at Slack
    assert "1 of 1 notices were not delivered" in str(raised.value)
    assert isinstance(raised.value.__cause__, NotificationFailed)
    assert len(slack.posts()) == 5
    # and the notice is in the file all the same
    assert [line["kind"] for line in written(jsonl)] == ["order_rejected"]


def test_every_record_is_tried_before_the_handler_fails(tmp_path: Path, slack: FakeSlack) -> None:
    # Given Slack refuses the first post and accepts the second
    jsonl = install(tmp_path, slack.url)
    slack.answer(Reply(400, "invalid_blocks"), Reply(200))
    event = sns_event(
        sns_record(rejected_message("unique_id_1"), "order_rejected"),
        sns_record(rejected_message("unique_id_2"), "order_rejected"),
    )

    # When both arrive in one event
    with pytest.raises(NotificationFailed, match="1 of 2 notices were not delivered"):
        invoke(event)

    # Then the second was still delivered
    assert [post["blocks"][0]["text"]["text"] for post in slack.posts()] == [
        "Order unique_id_1 of trader-1 rejected",
        "Order unique_id_2 of trader-1 rejected",
    ]
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["unique_id_1", "unique_id_2"]


def test_a_message_with_a_lone_surrogate_is_delivered_to_every_channel(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Given a rejection whose reason holds a lone surrogate: legal in JSON ("\udc00"), not in UTF-8
    jsonl = install(tmp_path, slack.url)
    message = rejected_message("unique_id_1", reason="bad \udc00 byte")
    assert "\\udc00" in message

    # When it arrives
    answer = invoke(sns_event(sns_record(message, "order_rejected")))

    # Then it is delivered at once, to the file and to Slack, the surrogate shown as U+FFFD
    assert answer == {"delivered": 1, "skipped": 0}
    [line] = written(jsonl)
    assert line["fields"]["reason"] == "bad \ufffd byte"
    [post] = slack.posts()
    assert "bad \ufffd byte" in post["text"]


def test_a_delivery_pipeline_failure_shows_when_it_failed_not_when_it_was_published(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Given the delivery pipeline's failure event, published to the topic later than it happened
    jsonl = install(tmp_path, slack.url)
    message = json.dumps(
        {
            "kind": "pipeline_failed",
            "pipeline": "energy-auction-delivery",
            "execution_id": "0c1d2e3f",
            "state": "FAILED",
            "time": "2027-01-15T07:58:00Z",
            "region": "eu-west-1",
        }
    )

    # When it arrives (no kind attribute: an EventBridge rule cannot set one)
    invoke(sns_event(sns_record(message, None)))

    # Then its time is the event's, in the file and in Slack's date token
    [line] = written(jsonl)
    assert line["kind"] == "pipeline_failed"
    assert line["occurred_at"] == "2027-01-15T07:58:00Z" != TIMESTAMP
    [post] = slack.posts()
    assert "|2027-01-15T07:58:00Z>" in post["blocks"][2]["elements"][0]["text"]


# --- A rejection is notified once ---------------------------------------------------------------


@pytest.fixture
def stores() -> Iterator[list[SqliteOrderStore]]:
    opened: list[SqliteOrderStore] = []
    yield opened
    for store in opened:
        store.close()


def rejected_order(
    home: Path, record_id: str, stores: list[SqliteOrderStore], run_id: str = "run-1"
) -> SqliteOrderStore:
    """An order ``run_id`` rejected, its notice owed (as ProcessOrder leaves it), in the home's store."""
    store = SqliteOrderStore(home / "orders.sqlite3")
    stores.append(store)
    now = int(time.time())
    store.put_orders([pending(record_id, submitted=now)], now=now)
    store.claim_orders(keys([record_id]), run_id, now, 600)
    outcome = {"status": "rejected", "power": 0, "run_id": run_id}
    store.complete_order(key(record_id), run_id, OrderStatus.REJECTED, outcome, notice_due_at=now + 900)
    return store


def test_a_rejection_delivered_twice_reaches_slack_and_the_file_once(
    tmp_path: Path, slack: FakeSlack, stores: list[SqliteOrderStore]
) -> None:
    # Given an owed rejection notice, published by the state machine and again by a redelivery
    jsonl = install(tmp_path, slack.url)
    store = rejected_order(tmp_path, "unique_id_1", stores)
    copy = sns_record(rejected_message("unique_id_1", "run-1"), "order_rejected")

    # When both copies reach the notifier (two events, as SNS delivers them)
    first = invoke(sns_event(copy))
    second = invoke(sns_event(sns_record(rejected_message("unique_id_1", "run-1"), "order_rejected")))

    # Then the first was delivered and the second skipped: one post, one line, nothing owed
    assert (first, second) == ({"delivered": 1, "skipped": 0}, {"delivered": 0, "skipped": 1})
    assert len(slack.posts()) == 1
    assert len(slack.posted()) == 1
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["unique_id_1"]
    assert store.get_order(key("unique_id_1")).notice_due_at is None  # type: ignore[union-attr]


def test_a_failed_delivery_is_given_back_so_the_retry_delivers_it(
    tmp_path: Path, slack: FakeSlack, stores: list[SqliteOrderStore]
) -> None:
    # Given an owed rejection notice and a Slack that is down for the first delivery
    jsonl = install(tmp_path, slack.url)
    store = rejected_order(tmp_path, "unique_id_1", stores)
    slack.answer(*[Reply(503, "down", {"Retry-After": "0"})] * 5)
    event = sns_event(sns_record(rejected_message("unique_id_1", "run-1"), "order_rejected"))

    # When the first delivery fails and SNS delivers the event again
    with pytest.raises(NotificationFailed):
        invoke(event)
    still_owed = store.get_order(key("unique_id_1"))
    assert still_owed is not None
    assert (still_owed.notice_due_at is not None, still_owed.notice_lease_until) == (True, None)
    assert invoke(event) == {"delivered": 1, "skipped": 0}

    # Then Slack accepted it once, when it was up; the file has it once (from the first attempt)
    assert [post["blocks"][0]["text"]["text"] for post in slack.posted()] == [
        "Order unique_id_1 of trader-1 rejected"
    ]
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["unique_id_1"]
    assert store.get_order(key("unique_id_1")).notice_due_at is None  # type: ignore[union-attr]


def test_a_rejection_the_store_does_not_track_is_still_delivered(tmp_path: Path, slack: FakeSlack) -> None:
    # A notice for an order that is gone (expired and deleted): better delivered than lost
    jsonl = install(tmp_path, slack.url)
    assert invoke(sns_event(sns_record(rejected_message("gone", "run-7"), "order_rejected"))) == {
        "delivered": 1,
        "skipped": 0,
    }
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["gone"]
