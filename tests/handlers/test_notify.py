"""The notifier Lambda: SQS batches of the topic's messages through the local backend, to
notifications.jsonl (every notice) and a fake Slack (digests and notices of their own)."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_auction import bootstrap
from energy_auction.adapters.channels import LogNotifier
from energy_auction.adapters.local import SqliteOrderStore
from energy_auction.adapters.slack import MIN_POST_INTERVAL_SECONDS, SlackWebhookNotifier
from energy_auction.digest import DIGEST_LIMIT, POST_RESERVE_SECONDS
from energy_auction.handlers import notify
from energy_auction.local.lambdas import LocalLambdaContext
from energy_auction.orders import OrderStatus
from energy_auction.settings import Backend, Settings
from tests.builders import key, keys

from ..adapters.stores import pending
from ..fake_slack import (
    SECRET_PATH,
    FakeSlack,
    Pacing,
    Reply,
    kind_of,
    listed_lines,
    rejections_counted,
    rejections_listed,
)
from ..metrics import published_metrics
from ..sns import (
    TIMESTAMP,
    alarm_message,
    not_ready_message,
    notices_event,
    processing_failed_message,
    rejected_message,
    run_summary_message,
    sns_record,
    sqs_event,
    sqs_record,
)

REJECTED = ("order_rejected", "Energy Auction: order rejected")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def pacing() -> Pacing:
    return Pacing()


def install(home: Path, webhook: str | None, pacing: Pacing | None = None) -> Path:
    """The local backend with this webhook, as the handler's container; returns the JSONL file.
    With ``pacing``, the Slack notifier's waits move its clock instead of taking time."""
    settings = Settings(backend=Backend.LOCAL, home=home, slack_webhook_url=webhook)
    components: dict[str, object] = {}
    if pacing is not None:
        components["notifier"] = SlackWebhookNotifier(
            lambda: webhook, LogNotifier(), post=pacing.post, sleep=pacing.sleep, clock=pacing.clock
        )
    bootstrap.use(bootstrap.Container(settings, time.time, **components))
    return settings.notifications_file


def invoke(event: dict[str, Any], timeout_seconds: float = 180) -> list[str]:
    """Run the handler; returns the ids of the batch item failures it reported."""
    answer: dict[str, Any] = notify.handler(event, LocalLambdaContext("notify", timeout_seconds))
    assert set(answer) == {"batchItemFailures"}
    return [failure["itemIdentifier"] for failure in answer["batchItemFailures"]]


def ids(event: dict[str, Any]) -> list[str]:
    return [record["messageId"] for record in event["Records"]]


def written(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def rejections(*record_ids: str, run_id: str = "run-1") -> list[tuple[str, str | None, str | None]]:
    return [(rejected_message(r, run_id), *REJECTED) for r in record_ids]


def test_rejections_are_one_digest_and_other_notices_are_posted_each_on_its_own(
    tmp_path: Path, slack: FakeSlack, pacing: Pacing
) -> None:
    # Given a batch with three rejections between a not-ready alert and an alarm
    jsonl = install(tmp_path, slack.url, pacing)
    event = notices_event(
        (not_ready_message("run-2", 10), "results_not_ready", "Energy Auction: results not ready"),
        *rejections("unique_id_1", "unique_id_2", "unique_id_3"),
        (alarm_message("energy-auction-notify-errors"), None, 'ALARM: "energy-auction-notify-errors"'),
    )

    # When the notifier gets it
    failed = invoke(event)

    # Then every notice is a line of the file, in order
    assert failed == []
    lines = written(jsonl)
    assert [line["kind"] for line in lines] == ["results_not_ready", *["order_rejected"] * 3, "alarm"]
    # And Slack got three messages: the alert, one digest of the rejections, the alarm
    posts = slack.posts()
    assert [kind_of(post) for post in posts] == ["results_not_ready", "digest", "alarm"]
    assert posts[1]["blocks"][0]["text"]["text"] == "3 orders rejected"
    assert rejections_listed(posts[1]) == ["unique_id_1", "unique_id_2", "unique_id_3"]
    assert listed_lines(posts[1])[0] == "• unique_id_1 (trader-1) rejected: price above the clearing price"
    assert {r.path for r in slack.received} == {SECRET_PATH}


def test_a_digest_lists_up_to_its_limit_and_counts_the_rest_by_kind(
    tmp_path: Path, slack: FakeSlack, pacing: Pacing
) -> None:
    # Given more rejections than a digest lists, and two processing failures at the end
    jsonl = install(tmp_path, slack.url, pacing)
    record_ids = [f"r{i}" for i in range(DIGEST_LIMIT + 5)]
    failures = [(processing_failed_message(f"f{i}"), "order_processing_failed", None) for i in range(2)]
    event = notices_event(*rejections(*record_ids), *failures)

    # When they arrive in one batch
    assert invoke(event) == []

    # Then one message lists the first ones and counts the rest, by kind
    (post,) = slack.posts()
    assert (
        post["blocks"][0]["text"]["text"] == f"{DIGEST_LIMIT + 5} orders rejected, 2 orders failed to process"
    )
    assert rejections_listed(post) == record_ids[:DIGEST_LIMIT]
    assert rejections_counted(post) == 5
    assert len(listed_lines(post)) == DIGEST_LIMIT
    assert post["text"] == (
        f"{DIGEST_LIMIT + 5} orders rejected, 2 orders failed to process: the first {DIGEST_LIMIT} below, "
        "and 7 more: 5 orders rejected, 2 orders failed to process."
    )
    # And the file has every one of them, listed or not
    assert [line["fields"]["record_id"] for line in written(jsonl)] == [*record_ids, "f0", "f1"]


def test_a_lone_rejection_is_posted_as_the_notice_itself(tmp_path: Path, slack: FakeSlack) -> None:
    # Given the stack's own notifier (paced, but a first post does not wait)
    install(tmp_path, slack.url)

    assert invoke(notices_event(*rejections("unique_id_1"))) == []

    (post,) = slack.posts()
    assert post["blocks"][0]["text"]["text"] == "Order unique_id_1 of trader-1 rejected"
    assert kind_of(post) == "order_rejected"


def test_posts_to_the_channel_keep_the_minimum_interval(
    tmp_path: Path, slack: FakeSlack, pacing: Pacing
) -> None:
    # Given a batch that makes three messages, then another batch of one
    install(tmp_path, slack.url, pacing)
    invoke(
        notices_event(
            (not_ready_message("run-2", 10), "results_not_ready", None),
            *rejections("a", "b"),
            (run_summary_message("run-1"), "run_summary", "Energy Auction: run summary"),
        )
    )
    invoke(notices_event((alarm_message(), None, None)))

    # Then each post came at least the minimum interval after the one before, across invocations
    assert len(pacing.posted_at) == 4
    assert all(gap >= MIN_POST_INTERVAL_SECONDS for gap in pacing.gaps())


def test_a_message_without_its_own_time_takes_the_sns_timestamp(tmp_path: Path, slack: FakeSlack) -> None:
    jsonl = install(tmp_path, slack.url)
    invoke(notices_event((not_ready_message("run-2", 10), "results_not_ready", None)))
    [line] = written(jsonl)
    assert line["occurred_at"] == TIMESTAMP


def test_an_unreadable_message_is_delivered_as_a_generic_notice(tmp_path: Path, slack: FakeSlack) -> None:
    # Given a topic message that is not JSON, and a queue message that is not even an SNS envelope
    jsonl = install(tmp_path, slack.url, Pacing())
    garbled = sqs_record(sns_record("\x00 not json {", None, None))
    event = sqs_event(garbled, {**garbled, "messageId": "m-2", "body": "not an envelope"})

    # When they arrive
    assert invoke(event) == []

    # Then both are still written and posted, each keyed by its own id
    lines = written(jsonl)
    assert [line["kind"] for line in lines] == ["other", "other"]
    assert lines[1]["text"] == "not an envelope"
    assert lines[1]["key"] == "m-2"
    assert len(slack.posts()) == 2


def test_without_a_webhook_the_notices_are_still_written(tmp_path: Path) -> None:
    # Given the local stack without a Slack webhook
    jsonl = install(tmp_path, None)

    # When rejections arrive
    failed = invoke(notices_event(*rejections("unique_id_9", "unique_id_10")))

    # Then the file has them and nothing failed (the digest was logged instead of posted)
    assert failed == []
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["unique_id_9", "unique_id_10"]


def test_when_slack_stays_down_every_notice_of_the_digest_is_reported_failed(
    tmp_path: Path, slack: FakeSlack, pacing: Pacing
) -> None:
    # Given Slack keeps answering 503 (asking to come back at once)
    jsonl = install(tmp_path, slack.url, pacing)
    slack.otherwise = Reply(503, "service_unavailable", {"Retry-After": "0"})
    event = notices_event(*rejections("unique_id_1", "unique_id_2"))

    # When the batch arrives
    failed = invoke(event)

    # Then both messages are batch item failures (SQS delivers them again), after all attempts
    assert failed == ids(event)
    assert len(slack.posts()) == 5
    # and the notices are in the file all the same
    assert [line["kind"] for line in written(jsonl)] == ["order_rejected", "order_rejected"]


def test_only_the_notices_of_a_post_that_failed_are_reported(
    tmp_path: Path, slack: FakeSlack, pacing: Pacing
) -> None:
    # Given Slack refuses the first post for good and accepts the next
    install(tmp_path, slack.url, pacing)
    slack.answer(Reply(400, "invalid_blocks"), Reply(200))
    event = notices_event(
        (alarm_message(), None, None), (not_ready_message("run-2"), "results_not_ready", None)
    )

    # When both arrive in one batch
    failed = invoke(event)

    # Then the first is reported failed, and the second was still posted
    assert failed == ids(event)[:1]
    assert [kind_of(post) for post in slack.posted()] == ["results_not_ready"]


def test_a_post_that_cannot_finish_in_the_time_left_is_not_started(
    tmp_path: Path, slack: FakeSlack, stores: list[SqliteOrderStore]
) -> None:
    # Given an owed rejection, and an invocation with less time left than a post may need
    install(tmp_path, slack.url)
    store = rejected_order(tmp_path, "unique_id_1", stores)
    event = notices_event(*rejections("unique_id_1"))

    # When it runs
    failed = invoke(event, timeout_seconds=POST_RESERVE_SECONDS - 1)

    # Then nothing is posted, the message comes back, and the notice is free for that attempt
    assert failed == ids(event)
    assert slack.posts() == []
    owed = store.get_order(key("unique_id_1"))
    assert owed is not None
    assert (owed.notice_due_at is not None, owed.notice_lease_until) == (True, None)


def test_a_message_with_a_lone_surrogate_is_delivered_to_every_channel(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Given a rejection whose reason holds a lone surrogate: legal in JSON ("\udc00"), not in UTF-8
    jsonl = install(tmp_path, slack.url)
    message = rejected_message("unique_id_1", reason="bad \udc00 byte")
    assert "\\udc00" in message

    # When it arrives
    assert invoke(notices_event((message, *REJECTED))) == []

    # Then it is delivered at once, to the file and to Slack, the surrogate shown as U+FFFD
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
    invoke(notices_event((message, None, None)))

    # Then its time is the event's, in the file and in Slack's date token
    [line] = written(jsonl)
    assert line["kind"] == "pipeline_failed"
    assert line["occurred_at"] == "2027-01-15T07:58:00Z" != TIMESTAMP
    [post] = slack.posts()
    assert "|2027-01-15T07:58:00Z>" in post["blocks"][2]["elements"][0]["text"]


def test_a_run_summary_is_posted_on_its_own_with_its_counts(
    tmp_path: Path, slack: FakeSlack, pacing: Pacing
) -> None:
    jsonl = install(tmp_path, slack.url, pacing)
    summary = (run_summary_message("run-7"), "run_summary", "Energy Auction: run summary")

    assert invoke(notices_event(*rejections("a", "b", run_id="run-7"), summary)) == []

    digest, post = slack.posts()
    assert kind_of(digest) == "digest"
    assert post["blocks"][0]["text"]["text"] == "Run run-7: 1,000 orders settled, 200 left for the next run"
    assert "700 accepted, 290 rejected, 10 failed" in post["text"]
    assert written(jsonl)[-1]["key"] == "run_summary/run-7"


def test_every_invocation_publishes_its_metrics(
    tmp_path: Path,
    slack: FakeSlack,
    pacing: Pacing,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a batch of two rejections (one a copy of the other) and an alarm, then an empty batch
    install(tmp_path, slack.url, pacing)
    copy = rejected_message("a")
    event = notices_event(
        (copy, *REJECTED), (copy, *REJECTED), *rejections("b"), (alarm_message(), None, None)
    )

    # When each is handled
    with published_metrics(monkeypatch, capsys) as busy:
        invoke(event)
    with published_metrics(monkeypatch, capsys) as idle:
        invoke(sqs_event())

    # Then each published all four, zeros included, and Powertools never warned of none
    assert busy.metrics == {
        "NoticesDigested": [2],
        "SlackMessagesPosted": [2],
        "DuplicateNoticesSkipped": [1],
        "NotificationsFailed": [0],
    }
    assert idle.metrics == {name: [0] for name in busy.metrics}
    assert busy.warnings == idle.warnings == []


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
    tmp_path: Path, slack: FakeSlack, pacing: Pacing, stores: list[SqliteOrderStore]
) -> None:
    # Given an owed rejection notice, published by the state machine and again by a redelivery
    jsonl = install(tmp_path, slack.url, pacing)
    store = rejected_order(tmp_path, "unique_id_1", stores)

    # When both copies reach the notifier, in two batches
    first = invoke(notices_event(*rejections("unique_id_1")))
    second = invoke(notices_event(*rejections("unique_id_1")))

    # Then the first was delivered and the second skipped: one post, one line, nothing owed
    assert (first, second) == ([], [])
    assert len(slack.posted()) == 1
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["unique_id_1"]
    assert store.get_order(key("unique_id_1")).notice_due_at is None  # type: ignore[union-attr]


def test_a_copy_delivered_already_is_not_listed_in_the_next_digest(
    tmp_path: Path, slack: FakeSlack, pacing: Pacing, stores: list[SqliteOrderStore]
) -> None:
    # Given two owed rejections; one of them reaches Slack first, then both come in one batch
    install(tmp_path, slack.url, pacing)
    for record_id in ("unique_id_1", "unique_id_2"):
        rejected_order(tmp_path, record_id, stores)
    invoke(notices_event(*rejections("unique_id_1")))

    invoke(notices_event(*rejections("unique_id_1", "unique_id_2")))

    # Then the second post names only the one not delivered before
    assert [rejections_listed(post) for post in slack.posted()] == [["unique_id_1"], ["unique_id_2"]]


def test_a_failed_digest_is_given_back_so_the_retry_delivers_it(
    tmp_path: Path, slack: FakeSlack, pacing: Pacing, stores: list[SqliteOrderStore]
) -> None:
    # Given two owed rejection notices and a Slack that is down for the first delivery
    jsonl = install(tmp_path, slack.url, pacing)
    store = rejected_order(tmp_path, "unique_id_1", stores)
    rejected_order(tmp_path, "unique_id_2", stores)
    slack.answer(*[Reply(503, "down", {"Retry-After": "0"})] * 5)
    event = notices_event(*rejections("unique_id_1", "unique_id_2"))

    # When the first delivery fails, then SQS delivers the failed messages again
    assert invoke(event) == ids(event)
    still_owed = store.get_order(key("unique_id_1"))
    assert still_owed is not None
    assert (still_owed.notice_due_at is not None, still_owed.notice_lease_until) == (True, None)
    assert invoke(event) == []

    # Then Slack accepted them once, in one digest, when it was up; the file has each once
    (post,) = slack.posted()
    assert rejections_listed(post) == ["unique_id_1", "unique_id_2"]
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["unique_id_1", "unique_id_2"]
    for record_id in ("unique_id_1", "unique_id_2"):
        assert store.get_order(key(record_id)).notice_due_at is None  # type: ignore[union-attr]


def test_a_rejection_the_store_does_not_track_is_still_delivered(tmp_path: Path, slack: FakeSlack) -> None:
    # A notice for an order that is gone (expired and deleted): better delivered than lost
    jsonl = install(tmp_path, slack.url)
    assert invoke(notices_event(*rejections("gone", run_id="run-7"))) == []
    assert [line["fields"]["record_id"] for line in written(jsonl)] == ["gone"]
    assert len(slack.posted()) == 1


# --- A burst against a Slack that pushes back ---------------------------------------------------

BURST = 1000
QUEUE_BATCH = 100
"""Messages per invocation in the burst test (fewer than the deployed batch size, so the queue
hands the notifier several batches and redelivers failed ones among later ones)."""


@pytest.fixture
def fast_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home folder on a RAM disk when the machine has one: the real SQLite store, without the
    cost of 3,000 synced transactions on a disk."""
    ram = Path("/dev/shm")  # noqa: S108 (a private folder of the test's own is made inside it)
    if ram.is_dir() and os.access(ram, os.W_OK):
        with tempfile.TemporaryDirectory(dir=ram) as folder:
            yield Path(folder)
    else:
        yield tmp_path_factory.mktemp("home")


def rejected_orders(home: Path, count: int, run_id: str = "run-1") -> tuple[SqliteOrderStore, list[str]]:
    """``count`` orders ``run_id`` rejected, their notices owed, as ProcessOrder leaves them."""
    store = SqliteOrderStore(home / "orders.sqlite3")
    now = int(time.time())
    record_ids = [f"r{i:04d}" for i in range(count)]
    for start in range(0, count, 100):
        store.put_orders([pending(r, submitted=now) for r in record_ids[start : start + 100]], now=now)
    store.claim_orders(keys(record_ids), run_id, now, 600)
    outcome = {"status": "rejected", "power": 0, "run_id": run_id}
    for record_id in record_ids:
        store.complete_order(key(record_id), run_id, OrderStatus.REJECTED, outcome, notice_due_at=now + 900)
    return store, record_ids


def test_a_thousand_rejections_reach_slack_in_few_paced_digests_with_none_lost(
    fast_home: Path, slack: FakeSlack, pacing: Pacing
) -> None:
    # Given 1,000 owed rejection notices on the queue, 50 of them twice (a redelivery crossed the
    # first publish), and a Slack that answers 429 now and then and is down for one whole post
    jsonl = install(fast_home, slack.url, pacing)
    store, record_ids = rejected_orders(fast_home, BURST)
    queue = [sqs_record(sns_record(rejected_message(r, "run-1"), *REJECTED)) for r in record_ids]
    queue += [sqs_record(sns_record(rejected_message(r, "run-1"), *REJECTED)) for r in record_ids[::20]]
    slack.answer(
        Reply(429, "rate_limited", {"Retry-After": "1"}),
        Reply(200),
        Reply(429, "rate_limited", {"Retry-After": "5"}),
        *[Reply(503, "down", {"Retry-After": "0"})] * 5,  # a post that fails for good
        Reply(200),
        Reply(429, "rate_limited", {"Retry-After": "2"}),
    )

    # When the queue hands them to the notifier a batch at a time, redelivering what failed
    invocations = 0
    try:
        while queue and invocations < 50:
            batch, queue = queue[:QUEUE_BATCH], queue[QUEUE_BATCH:]
            failed = set(invoke(sqs_event(*batch)))
            queue += [record for record in batch if record["messageId"] in failed]
            invocations += 1

        # Then every rejection was listed or counted once, and each is recorded delivered
        posted = slack.posted()
        listed = [r for post in posted for r in rejections_listed(post)]
        counted = sum(rejections_counted(post) for post in posted)
        assert queue == []
        assert len(listed) == len(set(listed))
        assert set(listed) <= set(record_ids)
        assert len(listed) + counted == BURST
        owed = [r for r in record_ids if store.get_order(key(r)).notice_due_at is not None]  # type: ignore[union-attr]
        assert owed == []
    finally:
        store.close()
    # And Slack got a digest a batch, far fewer than one message per listed page of rejections
    assert all(kind_of(post) == "digest" for post in posted)
    assert len(posted) <= math.ceil(BURST / DIGEST_LIMIT)
    assert len(posted) == invocations - 1, "one batch's post failed for good; its notices came back"
    # And no two requests to Slack came closer than the minimum interval, retries included
    assert len(pacing.posted_at) == len(slack.received)
    assert min(pacing.gaps()) >= MIN_POST_INTERVAL_SECONDS
    # And the file has each rejection once
    assert sorted(line["fields"]["record_id"] for line in written(jsonl)) == record_ids
