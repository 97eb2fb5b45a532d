"""Slack gets digests: a batch's order notices gathered per channel into one notice that lists a
bounded number and counts the rest; run summaries; notices from SNS envelopes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from energy_auction.adapters.local import SqliteOrderStore
from energy_auction.adapters.slack import slack_message
from energy_auction.digest import (
    ALERTS_CHANNEL,
    DIGEST_LIMIT,
    DIGESTED,
    Arrival,
    channel_of,
    deliver_batch,
    digest,
)
from energy_auction.errors import StorageUnavailable
from energy_auction.notifications import (
    LINE_LIMIT,
    MAX_LINES,
    RUN_SUMMARY_SUBJECT,
    TEXT_LIMIT,
    Notice,
    NoticeKind,
    notice_from_envelope,
    notice_from_message,
)
from energy_auction.orders import NoticeClaim, NoticeHold, OrderStatus
from tests.adapters.stores import pending
from tests.builders import key, keys

from ..sns import (
    TIMESTAMP,
    alarm_message,
    not_ready_message,
    processing_failed_message,
    rejected_message,
    run_summary_message,
    sns_record,
    sqs_record,
)

SLACK_BLOCKS = 50
"""Blocks Slack takes in one message."""
SLACK_SECTION_TEXT = 3000
"""Characters in a section's text."""
SLACK_MESSAGE_BUDGET = 12_000
"""Characters of all the blocks' text: Slack refuses a message with much more than about 13,000
(msg_blocks_too_long), though it documents no such limit."""


def rejection(record_id: str, run_id: str = "run-1", **changes: Any) -> Notice:
    return notice_from_message(rejected_message(record_id, run_id, **changes), "order_rejected", None)


def failure(record_id: str) -> Notice:
    return notice_from_message(processing_failed_message(record_id), "order_processing_failed", None)


def alert(run_id: str = "run-2") -> Notice:
    return notice_from_message(not_ready_message(run_id), "results_not_ready", None)


class Channel:
    """A channel that keeps what it was given; ``fail`` makes that many posts raise first."""

    def __init__(self, fail: int = 0) -> None:
        self.notices: list[Notice] = []
        self.fail = fail

    def notify(self, notice: Notice) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("Slack is down")
        self.notices.append(notice)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteOrderStore]:
    opened = SqliteOrderStore(tmp_path / "orders.sqlite3")
    yield opened
    opened.close()


def deliver(
    notices: list[Notice],
    store: SqliteOrderStore,
    channel: Channel,
    record: Channel | None = None,
    **options: Any,
) -> Any:
    arrivals = [Arrival(f"m{i}", notice) for i, notice in enumerate(notices)]
    return deliver_batch(
        arrivals,
        channels={ALERTS_CHANNEL: channel},
        record=record or Channel(),
        store=store,
        now=1_800_000_000,
        lease_seconds=300,
        **options,
    )


# --- One digest per channel and batch -----------------------------------------------------------


def test_a_batchs_order_notices_become_one_digest_and_the_others_stay_their_own(
    store: SqliteOrderStore,
) -> None:
    # Given a batch: an alert, rejections and a processing failure, then a run summary
    summary = notice_from_message(run_summary_message("run-1"), "run_summary", RUN_SUMMARY_SUBJECT)
    batch = [alert(), rejection("a"), failure("f"), rejection("b"), summary]
    channel, record = Channel(), Channel()

    # When it is delivered
    report = deliver(batch, store, channel, record)

    # Then each notice was recorded, and the channel got three posts, in the order each began
    assert record.notices == batch
    assert [n.kind for n in channel.notices] == [
        NoticeKind.RESULTS_NOT_READY,
        NoticeKind.DIGEST,
        NoticeKind.RUN_SUMMARY,
    ]
    assert channel.notices[1].title == "2 orders rejected, 1 order failed to process"
    assert channel.notices[1].lines == (
        "a (trader-1) rejected: price above the clearing price",
        "f (trader-1) failed to process: ClaimLost: run run-1 does not hold order f; it stays pending",
        "b (trader-1) rejected: price above the clearing price",
    )
    assert (report.posted, report.digested, report.skipped, report.failed) == (3, 3, 0, [])


def test_a_digest_lists_its_limit_and_counts_the_rest_by_kind() -> None:
    notices = [rejection(f"r{i}") for i in range(DIGEST_LIMIT + 3)] + [failure("f0"), failure("f1")]

    made = digest(notices)

    assert made.kind is NoticeKind.DIGEST
    assert len(made.lines) == DIGEST_LIMIT
    assert made.lines[0].startswith("r0 (trader-1) rejected: ")
    assert made.title == f"{DIGEST_LIMIT + 3} orders rejected, 2 orders failed to process"
    assert made.text.endswith(
        f": the first {DIGEST_LIMIT} below, and 5 more: 3 orders rejected, 2 orders failed to process."
    )
    assert made.severity == "error", "a processing failure is an error, a rejection a warning"


def test_one_notice_is_its_own_digest_and_the_limit_is_checked() -> None:
    one = rejection("a")
    assert digest([one]) is one
    with pytest.raises(ValueError, match="at least one"):
        digest([])
    with pytest.raises(ValueError, match="lists 1 to"):
        digest([one, one], limit=MAX_LINES + 1)
    assert DIGEST_LIMIT <= MAX_LINES


def test_a_thousand_rejections_in_one_batch_are_one_message(store: SqliteOrderStore) -> None:
    channel = Channel()

    report = deliver([rejection(f"r{i}") for i in range(1000)], store, channel)

    (posted,) = channel.notices
    assert len(posted.lines) == DIGEST_LIMIT
    assert f"and {1000 - DIGEST_LIMIT:,} more: {1000 - DIGEST_LIMIT:,} orders rejected." in posted.text
    assert (report.posted, report.digested) == (1, 1000)


def test_notices_are_digested_per_channel(store: SqliteOrderStore) -> None:
    # Given a routing that sends processing failures to a channel of their own
    alerts, operations = Channel(), Channel()

    def route(notice: Notice) -> str:
        return "operations" if notice.kind is NoticeKind.ORDER_PROCESSING_FAILED else ALERTS_CHANNEL

    batch = [rejection("a"), failure("f0"), rejection("b"), failure("f1")]
    deliver_batch(
        [Arrival(str(i), n) for i, n in enumerate(batch)],
        channels={ALERTS_CHANNEL: alerts, "operations": operations},
        record=Channel(),
        store=store,
        now=1_800_000_000,
        lease_seconds=300,
        route=route,
    )

    # Then each channel got one digest of its own notices
    assert [n.title for n in alerts.notices] == ["2 orders rejected"]
    assert [n.title for n in operations.notices] == ["2 orders failed to process"]
    assert all(channel_of(n) == ALERTS_CHANNEL for n in batch), "today every notice has one channel"


def test_a_copy_in_the_same_batch_is_skipped(store: SqliteOrderStore) -> None:
    channel = Channel()
    report = deliver([rejection("a"), rejection("a"), rejection("b")], store, channel)
    assert channel.notices[0].lines[0].startswith("a ")
    assert len(channel.notices[0].lines) == 2
    assert report.skipped == 1


def test_a_failed_post_reports_its_notices_and_only_those(store: SqliteOrderStore) -> None:
    # Given a channel whose first post (the alert) fails
    channel = Channel(fail=1)

    report = deliver([alert(), rejection("a"), rejection("b")], store, channel)

    assert report.failed == ["m0"]
    assert [n.kind for n in channel.notices] == [NoticeKind.DIGEST]


def test_a_notice_that_cannot_be_recorded_is_reported_and_not_posted(store: SqliteOrderStore) -> None:
    channel, record = Channel(), Channel(fail=1)
    report = deliver([alert(), alert("run-3")], store, channel, record)
    assert report.failed == ["m0"]
    assert [n.title for n in channel.notices] == [alert("run-3").title]


class CountedStore:
    """The store with its notice calls kept (kind, the holds' keys, delivered); ``fail_claims``
    makes taking notices fail, as when the table cannot be reached."""

    def __init__(
        self, store: SqliteOrderStore, fail_claims: bool = False, fails_on: frozenset[str] = frozenset()
    ) -> None:
        self.store = store
        self.fail_claims = fail_claims
        self.fails_on = fails_on
        self.calls: list[tuple[str, list[str], bool | None]] = []

    def claim_notices(
        self, holds: Sequence[NoticeHold], now: int, lease_seconds: int
    ) -> list[NoticeClaim | None]:
        self.calls.append(("claim", [hold.key for hold in holds], None))
        if self.fail_claims:
            raise StorageUnavailable("the order table is unavailable")
        answers = self.store.claim_notices(holds, now, lease_seconds)
        return [None if hold.key in self.fails_on else a for hold, a in zip(holds, answers, strict=True)]

    def finish_notices(self, holds: Sequence[NoticeHold], *, delivered: bool) -> None:
        self.calls.append(("finish", [hold.key for hold in holds], delivered))
        self.store.finish_notices(holds, delivered=delivered)


def test_a_batchs_rejections_are_taken_in_one_call(store: SqliteOrderStore) -> None:
    counted, channel = CountedStore(store), Channel()

    report = deliver([rejection(f"r{i}") for i in range(1000)], counted, channel)  # type: ignore[arg-type]

    assert (report.digested, report.failed) == (1000, [])
    # (none of them is owed in this store: each is delivered untracked, and none is finished)
    assert [(kind, len(keys)) for kind, keys, _ in counted.calls] == [("claim", 1000)]


def owed(store: SqliteOrderStore, count: int) -> list[str]:
    """``count`` orders run-1 rejected, their notices owed (as ProcessOrder leaves them)."""
    now = 1_800_000_000 - 60
    record_ids = [f"r{i:04d}" for i in range(count)]
    store.put_orders([pending(r, submitted=now) for r in record_ids], now=now)
    store.claim_orders(keys(record_ids), "run-1", now, 600)
    outcome = {"status": "rejected", "power": 0, "run_id": "run-1"}
    for record_id in record_ids:
        store.complete_order(key(record_id), "run-1", OrderStatus.REJECTED, outcome, notice_due_at=now + 900)
    return record_ids


def test_a_batchs_owed_rejections_are_taken_in_one_call_and_recorded_in_one(store: SqliteOrderStore) -> None:
    counted, channel = CountedStore(store), Channel()
    record_ids = owed(store, 50)

    report = deliver([rejection(r) for r in record_ids], counted, channel)  # type: ignore[arg-type]

    assert (report.digested, report.failed) == (50, [])
    assert [(kind, len(keys), delivered) for kind, keys, delivered in counted.calls] == [
        ("claim", 50, None),
        ("finish", 50, True),
    ]
    assert store.overdue_notices(2_000_000_000, 100) == []  # none owed any more


def test_a_rejection_the_store_fails_on_is_reported_and_given_back_and_the_others_posted(
    store: SqliteOrderStore,
) -> None:
    # Given three owed rejections, and a store that cannot take the second
    first, second, third = owed(store, 3)
    counted, channel = CountedStore(store, fails_on=frozenset({key(second)})), Channel()

    report = deliver([rejection(r) for r in (first, second, third)], counted, channel)  # type: ignore[arg-type]

    # Then the other two are posted and recorded; the second comes back from the queue, given back
    assert report.failed == ["m1"]
    assert [line.split()[0] for line in channel.notices[0].lines] == [first, third]
    assert counted.calls[1:] == [("finish", [key(second)], False), ("finish", [key(first), key(third)], True)]
    assert [o.record_id for o in store.overdue_notices(2_000_000_000, 100)] == [second]


def test_rejections_that_cannot_be_taken_are_reported_given_back_and_not_posted(
    store: SqliteOrderStore,
) -> None:
    # Given a store that cannot take notices on their orders
    counted, channel = CountedStore(store, fail_claims=True), Channel()

    # When a batch of an alert and two rejections is delivered
    report = deliver([alert(), rejection("a"), rejection("b")], counted, channel)  # type: ignore[arg-type]

    # Then the alert is posted; the rejections come back from the queue, and whatever the failed
    # call may have taken is given back
    assert [n.kind for n in channel.notices] == [NoticeKind.RESULTS_NOT_READY]
    assert report.failed == ["m1", "m2"]
    (claimed, given_back) = counted.calls
    assert given_back == ("finish", claimed[1], False)
    assert len(claimed[1]) == 2


def test_without_time_left_nothing_is_posted(store: SqliteOrderStore) -> None:
    channel = Channel()
    report = deliver([alert(), rejection("a")], store, channel, time_left=lambda: 1.0)
    assert (channel.notices, report.failed) == ([], ["m0", "m1"])


kinds_of_notice = st.sampled_from(["rejection", "failure", "alert", "copy"])


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(st.tuples(kinds_of_notice, st.integers(0, 40)), max_size=80),
    failing_posts=st.integers(0, 3),
)
def test_every_notice_of_a_batch_is_posted_counted_skipped_or_reported(
    tmp_path_factory: pytest.TempPathFactory, batch: list[tuple[str, int]], failing_posts: int
) -> None:
    # Given any batch of notices (copies among them) and a channel whose first posts fail
    notices = []
    for kind, number in batch:
        notices.append(
            rejection(f"r{number}")
            if kind in {"rejection", "copy"}
            else failure(f"f{number}")
            if kind == "failure"
            else alert(f"run-{number}")
        )
    channel = Channel(fail=failing_posts)
    opened = SqliteOrderStore(tmp_path_factory.mktemp("store") / "orders.sqlite3")
    try:
        report = deliver(notices, opened, channel)
    finally:
        opened.close()

    # Then each one is in exactly one place: in a posted message, a skipped copy, or a failed item
    in_posts = sum(len(_covered(n)) for n in channel.notices)
    assert in_posts + report.skipped + len(report.failed) == len(notices)
    assert len(set(report.failed)) == len(report.failed)
    assert report.digested == sum(len(_covered(n)) for n in channel.notices if n.kind in DIGESTED or n.lines)


def _covered(posted: Notice) -> list[str]:
    """The notices a posted notice stands for: a digest's listed and counted ones, or itself."""
    if posted.kind is not NoticeKind.DIGEST:
        return [posted.title]
    more = posted.text.rsplit(" below, and ", 1)
    counted = int(more[1].split(" more", 1)[0].replace(",", "")) if len(more) == 2 else 0
    return [*posted.lines, *[""] * counted]


# --- What Slack is sent -------------------------------------------------------------------------


def test_the_largest_digest_fits_slacks_limits() -> None:
    # Given a digest of many notices with the longest, most escaped reasons and trader names
    worst = [rejection(f"r{i}", trader="&" * 300, reason="<&>" * 1000) for i in range(DIGEST_LIMIT * 3)]

    # When it is rendered for Slack
    payload = slack_message(digest(worst))

    # Then Slack's own SDK accepts each block, and every limit holds
    parsed = [Block.parse(block) for block in payload["blocks"]]
    assert [b.to_dict() if b else None for b in parsed] == payload["blocks"]
    assert len(payload["blocks"]) <= SLACK_BLOCKS
    texts = [b["text"]["text"] for b in payload["blocks"] if b["type"] in {"section", "header"}]
    assert all(len(text) <= SLACK_SECTION_TEXT for text in texts)
    assert sum(len(text) for text in texts) <= SLACK_MESSAGE_BUDGET
    assert len(payload["text"]) <= TEXT_LIMIT
    # and each listed notice is one line of the list, cut to the line limit
    lines = "\n".join(texts[2:]).split("\n")
    assert len(lines) == DIGEST_LIMIT
    assert all(line.startswith("• r") for line in lines)


def test_a_notice_with_more_lines_than_it_may_hold_says_how_many_it_left_out() -> None:
    notice = Notice(NoticeKind.OTHER, "t", "x", lines=tuple(f"line {i}" for i in range(MAX_LINES + 10)))
    assert len(notice.lines) == MAX_LINES
    assert notice.lines[-1] == "… 11 more lines"
    long = Notice(NoticeKind.OTHER, "t", "x", lines=("word " * 200,), line="a\nb")
    assert len(long.lines[0]) == LINE_LIMIT
    assert long.line == "a b"
    assert "lines" not in Notice(NoticeKind.OTHER, "t", "x").as_dict()


# --- The run summary ----------------------------------------------------------------------------


def test_a_run_summary_shows_its_counts_per_outcome_and_duration() -> None:
    notice = notice_from_message(run_summary_message("run-9"), "run_summary", RUN_SUMMARY_SUBJECT)

    assert notice.kind is NoticeKind.RUN_SUMMARY
    assert notice.title == "Run run-9: 1,000 orders settled, 200 left for the next run"
    assert notice.text == (
        "Run run-9 settled 1,000 orders in 42.3 s: 700 accepted, 290 rejected, 10 failed. "
        "The failed ones are back to pending for the next run. 200 left for the next run."
    )
    assert dict(notice.fields) == {
        "run_id": "run-9",
        "orders": "1000",
        "accepted": "700",
        "rejected": "290",
        "failed": "10",
        "left": "200",
        "staged": "1200",
        "started_at": "2027-01-15T08:00:00Z",
        "duration": "42.3 s",
    }
    assert notice.severity == "warning"
    assert notice.key == "run_summary/run-9"


def test_a_clean_run_summary_is_information_and_says_nothing_of_what_is_left() -> None:
    message = run_summary_message(
        "run-1", orders=1, accepted=1.0, rejected=0, failed=0, left=0, duration_seconds=754
    )
    notice = notice_from_message(message, "run_summary", None)
    assert notice.title == "Run run-1: 1 order settled"
    assert notice.text == "Run run-1 settled 1 order in 12 min 34 s: 1 accepted, 0 rejected, 0 failed."
    assert notice.severity == "info"
    assert "left for the next run" not in slack_message(notice)["text"]


@pytest.mark.parametrize(
    "message",
    [
        json.dumps({"orders": 3}),  # no run id
        json.dumps({"run_id": "run-1", "orders": "many"}),
        json.dumps({"run_id": "run-1", "orders": -1}),
        json.dumps({"run_id": "run-1", "orders": 2.5}),
        "not json at all",
    ],
    ids=["no run_id", "orders not a number", "negative", "a fraction", "not JSON"],
)
def test_a_malformed_run_summary_is_still_a_readable_notice(message: str) -> None:
    notice = notice_from_message(message, "run_summary", RUN_SUMMARY_SUBJECT)
    assert notice.kind is NoticeKind.OTHER
    assert notice.title == RUN_SUMMARY_SUBJECT
    assert notice.text
    json.dumps(slack_message(notice))


def test_a_run_summary_count_that_is_not_one_is_left_out() -> None:
    message = run_summary_message("run-1", rejected=None, failed=True, duration_seconds="soon")
    notice = notice_from_message(message, "run_summary", None)
    assert notice.text == "Run run-1 settled 1,000 orders: 700 accepted. 200 left for the next run."
    assert {"rejected", "failed", "duration"}.isdisjoint(dict(notice.fields))


# --- Notices from the queue's SNS envelopes -----------------------------------------------------


def envelope_of(message: str, kind: str | None, subject: str | None) -> str:
    body: str = sqs_record(sns_record(message, kind, subject))["body"]
    return body


def test_an_envelope_gives_the_notice_of_its_message_with_its_time_and_id() -> None:
    body = envelope_of(not_ready_message("run-3"), "results_not_ready", "Energy Auction: results not ready")

    notice = notice_from_envelope(body, "sqs-id")

    assert notice.kind is NoticeKind.RESULTS_NOT_READY
    assert notice.occurred_at == TIMESTAMP
    assert notice.key == json.loads(body)["MessageId"]


def test_an_envelope_keeps_the_notices_own_key_and_time() -> None:
    notice = notice_from_envelope(envelope_of(rejected_message("a", "run-4"), "order_rejected", None))
    assert notice.key is not None
    assert notice.key.startswith("order_rejected/run-4/")
    assert notice.occurred_at == "2027-01-15T08:04:59Z"


def test_an_alarm_envelope_without_a_kind_is_known_by_its_shape() -> None:
    notice = notice_from_envelope(envelope_of(alarm_message(), None, 'ALARM: "x"'))
    assert notice.kind is NoticeKind.ALARM


@pytest.mark.parametrize("body", ["", "not json", "[1, 2]", json.dumps({"Message": 3}), "\udc00"])
def test_a_body_that_is_no_envelope_is_read_as_the_message_itself(body: str) -> None:
    notice = notice_from_envelope(body, "sqs-id")
    assert notice.kind is NoticeKind.OTHER
    assert notice.key == "sqs-id"
    assert notice.text
