"""What dies, from outside: the pipeline as real processes, killed with SIGKILL at random points,
stopped by its execution timeout, or the stack stopped while Slack hangs; then a rerun once the
claims lapse. Every order ends settled once, every rejection is notified once, no result object
contradicts its order, nothing stays stuck. Also: a Slack that answers 500, and a disk that fills.

These use the shortest lease and timeout the settings allow (11 s and 10 s), so a test waits one
lease at most.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_auction.adapters.local import SqliteOrderStore
from energy_auction.bootstrap import Container
from energy_auction.digest import DIGEST_LIMIT
from energy_auction.orders import OrderStatus
from energy_auction.settings import Backend, Settings
from tests.builders import key, record_ids, store_orders
from tests.fake_slack import FakeSlack, Reply, rejections_counted, rejections_listed

from .stack import LocalStack, OrderBody

pytestmark = pytest.mark.e2e

LEASE = 11
SHORT = {
    "ENERGY_AUCTION_PIPELINE_TIMEOUT_SECONDS": "10",
    "ENERGY_AUCTION_CLAIM_LEASE_SECONDS": str(LEASE),
    "ENERGY_AUCTION_NOTICE_REDELIVERY_SECONDS": "1",
    "ENERGY_AUCTION_NOTICE_DELIVERY_LEASE_SECONDS": "2",
    "ENERGY_AUCTION_MARKET_READY_PROBABILITY": "1",
    "ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY": "0.6",
    "ENERGY_AUCTION_PIPELINE_TASK_RETRY_INTERVAL_SECONDS": "1",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
}
"""A run that dies leaves its orders for the next run after 11 s, its owed notices after 1 s."""
RERUN = {
    **SHORT,
    "ENERGY_AUCTION_PIPELINE_TIMEOUT_SECONDS": "240",
    "ENERGY_AUCTION_CLAIM_LEASE_SECONDS": "241",
}
"""The rerun that must finish: a long timeout, so it is not cut short on a slow machine."""


def seed_orders(home: Path, count: int) -> list[str]:
    container = Container(Settings(backend=Backend.LOCAL, home=home, jwt_secret="x" * 40))
    ids = record_ids(store_orders(container, count))
    container.order_store.close()  # type: ignore[attr-defined]
    return ids


def cli(
    home: Path, env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "energy_auction.cli", *args],
        env={**os.environ, "ENERGY_AUCTION_HOME": str(home), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def start_run(home: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "energy_auction.cli", "run-pipeline", "--seed", "11", "--notice-wait", "0"],
        env={**os.environ, "ENERGY_AUCTION_HOME": str(home), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def progress(home: Path) -> tuple[int, int]:
    """(orders claimed by some run, orders settled) as the database says right now."""
    try:
        with sqlite3.connect(f"file:{home / 'orders.sqlite3'}?mode=ro", uri=True, timeout=5) as db:
            claimed, settled = db.execute(
                "SELECT SUM(claim_run_id IS NOT NULL), SUM(status != 'pending') FROM orders"
            ).fetchone()
    except sqlite3.Error:
        return 0, 0
    return int(claimed or 0), int(settled or 0)


def kill_when(process: subprocess.Popen[str], home: Path, settled_at_least: int) -> tuple[int, int]:
    """SIGKILL the run once ``settled_at_least`` orders are settled (0: once it has claimed orders)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        claimed, settled = progress(home)
        if (settled_at_least == 0 and claimed) or (settled_at_least and settled >= settled_at_least):
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before the point it was to be killed at"
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    return progress(home)


def notices(home: Path) -> list[dict[str, Any]]:
    path = home / "notifications.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_settled_exactly_once(home: Path, ids: list[str]) -> list[str]:
    """Checks the home; returns the record_ids of its rejected orders."""
    store = SqliteOrderStore(home / "orders.sqlite3")
    orders = {r: store.get_order(key(r)) for r in ids}
    store.close()
    assert all(o is not None for o in orders.values())
    statuses = {r: o.status for r, o in orders.items() if o is not None}
    stuck = [r for r, status in statuses.items() if status is OrderStatus.PENDING]
    assert stuck == [], f"{len(stuck)} orders were never settled"
    assert all(o.claim_run_id is None for o in orders.values() if o is not None)
    accepted = {r for r, s in statuses.items() if s is OrderStatus.ACCEPTED}
    rejected = {r for r, s in statuses.items() if s is OrderStatus.REJECTED}
    assert accepted
    assert rejected
    # A result object exactly for each accepted order, agreeing with it
    objects = {p.stem: json.loads(p.read_text()) for p in (home / "results").rglob("*.json")}
    assert set(objects) == accepted
    for record_id in accepted:
        order = orders[record_id]
        assert order is not None
        assert objects[record_id]["outcome"]["status"] == "accepted"
        assert objects[record_id]["run_id"] == (order.outcome or {})["run_id"]
    # One rejection notice per rejected order, naming the run that rejected it
    sent = [n for n in notices(home) if n["kind"] == "order_rejected"]
    assert sorted(n["fields"]["record_id"] for n in sent) == sorted(rejected)
    for notice in sent:
        order = orders[notice["fields"]["record_id"]]
        assert order is not None
        assert notice["fields"]["run_id"] == (order.outcome or {})["run_id"]
    assert all(o.notice_due_at is None for o in orders.values() if o is not None)
    # And nothing waits for delivery
    waiting = json.loads(cli(home, SHORT, "notices").stdout)
    assert (waiting["undelivered"], waiting["overdue_rejections"]) == (0, 0)
    return sorted(rejected)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def rejections_posted(slack: FakeSlack) -> tuple[list[str], int]:
    """The record_ids of the rejections Slack accepted, sorted (a duplicate shows twice), and how
    many more its digests counted without listing them."""
    posted = slack.posted()
    listed = sorted(r for post in posted for r in rejections_listed(post))
    return listed, sum(rejections_counted(post) for post in posted)


def rejections_reaching_slack(slack: FakeSlack) -> int:
    listed, counted = rejections_posted(slack)
    return len(listed) + counted


def test_runs_killed_at_random_points_then_rerun_settle_every_order_once(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Given three homes of 200 orders each, and a run in each killed with SIGKILL: once it has
    # claimed its orders (nothing settled), and at two random points while it settles them
    count = 200
    points = [0, *random.Random(7).sample(range(5, count - 5), 2)]
    homes = [tmp_path / f"home-{i}" for i in range(len(points))]
    ids = {home: seed_orders(home, count) for home in homes}
    env = {**SHORT, "SLACK_WEBHOOK_URL": slack.url}
    killed_at = []
    for home, point in zip(homes, points, strict=True):
        killed_at.append(kill_when(start_run(home, env), home, point))
    first, *later = (settled for _, settled in killed_at)
    assert first == 0
    assert all(0 < settled < count for settled in later), killed_at

    # When a new run starts in each home once the dead runs' claims have lapsed
    time.sleep(LEASE + 1)
    rejected: list[str] = []
    for home in homes:
        done = cli(home, {**RERUN, "SLACK_WEBHOOK_URL": slack.url}, "run-pipeline", "--seed", "12")
        assert done.returncode == 0, done.stderr

        # Then every order is settled once, with one notice per rejection and no stray result
        rejected += assert_settled_exactly_once(home, ids[home])
    # And Slack got every rejection, listed in a digest or counted in its "more"; a kill can cut
    # one delivery between Slack's answer and its record, so at most one digest per killed run was
    # posted twice (Slack's webhook has no idempotency)
    listed, counted = rejections_posted(slack)
    assert set(listed) <= set(rejected)
    excess = len(listed) + counted - len(rejected)
    sizes = sorted(len(rejections_listed(p)) + rejections_counted(p) for p in slack.posted())
    assert 0 <= excess <= sum(sizes[-len(homes) :])


def test_a_run_cut_off_by_its_execution_timeout_leaves_nothing_lost(tmp_path: Path) -> None:
    # Given 300 orders and a run that stalls partway: another process holds the database's write
    # lock, so every marking waits and fails, retried until the 10-second execution timeout
    home = tmp_path / "home"
    ids = seed_orders(home, 300)
    run = subprocess.Popen(
        [sys.executable, "-m", "energy_auction.cli", "run-pipeline", "--seed", "11", "--notice-wait", "0"],
        env={**os.environ, "ENERGY_AUCTION_HOME": str(home), **SHORT},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while progress(home)[1] < 20 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.01)
    blocker = sqlite3.connect(home / "orders.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        # When it runs, it is cut off by its timeout
        out, _ = run.communicate(timeout=120)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    summary = json.loads(out)
    assert (run.returncode, summary["status"]) == (1, "TIMED_OUT")
    assert 0 < progress(home)[1] < 300

    # Then the next run after the lease settles the rest, and every rejection is notified once
    time.sleep(LEASE + 1)
    done = cli(home, RERUN, "run-pipeline", "--seed", "12")
    assert done.returncode == 0, done.stderr
    assert_settled_exactly_once(home, ids)


def test_stopping_the_stack_while_slack_hangs_is_prompt_and_loses_no_notice(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Given a stack whose schedule settles 30 orders while Slack never answers
    home = tmp_path / "home"
    ids = seed_orders(home, 30)
    slack.otherwise = Reply(delay=600)
    env = {**SHORT, "SLACK_WEBHOOK_URL": slack.url}
    stack = LocalStack(home=home, env=env, args=("--every", "1s")).start()
    deadline = time.monotonic() + 60
    while progress(home)[1] < 30 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert progress(home)[1] == 30
    while not slack.received and time.monotonic() < deadline:
        time.sleep(0.1)  # a delivery is hanging on Slack right now
    assert slack.received

    # When it is stopped (SIGTERM), it exits without waiting out Slack (it waited 200 s before)
    started = time.monotonic()
    assert stack.stop() == 0
    assert time.monotonic() - started < 60

    # Then, with Slack back, the next start delivers every rejection, each once
    slack.otherwise = Reply()
    time.sleep(2.5)  # the delivery the stop cut short holds its notice for the 2-second lease
    again = LocalStack(home=home, env=env, args=("--no-schedule",)).start()
    try:
        store = SqliteOrderStore(home / "orders.sqlite3")
        rejected = sorted(r for r in ids if store.get_order(key(r)).status is OrderStatus.REJECTED)  # type: ignore[union-attr]
        while rejections_reaching_slack(slack) < len(rejected) and time.monotonic() < deadline + 60:
            time.sleep(0.2)
        assert rejected
        assert rejections_reaching_slack(slack) == len(rejected)
        while (
            json.loads(cli(home, SHORT, "notices").stdout)["undelivered"] and time.monotonic() < deadline + 90
        ):
            time.sleep(0.2)  # the copies still queued are skipped as delivered, not posted again
    finally:
        again.stop()
    listed, counted = rejections_posted(slack)
    assert (len(listed) + counted, len(set(listed))) == (len(rejected), len(listed))
    assert set(listed) <= set(rejected)
    assert_settled_exactly_once(home, ids)


def test_a_slack_that_answers_500_does_not_hold_up_a_run_and_is_shown(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Given 40 orders and a Slack that answers every post with 500
    home = tmp_path / "home"
    ids = seed_orders(home, 40)
    slack.otherwise = Reply(500, "internal_error")
    env = {**SHORT, "SLACK_WEBHOOK_URL": slack.url, "ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY": "0.3"}

    # When a run settles them
    started = time.monotonic()
    done = cli(home, env, "run-pipeline", "--seed", "11", "--notice-wait", "1")
    took = time.monotonic() - started

    # Then it finishes without waiting on Slack (each notice alone takes ~15 s of retries, one after
    # the other before), says how many notices are undelivered, and the notices command lists them
    summary = json.loads(done.stdout)
    assert (done.returncode, summary["status"]) == (0, "SUCCEEDED")
    rejected = summary["rejected"]
    assert rejected >= 10
    assert took < rejected * 15 / 2
    # (the rejections, and the run's summary)
    assert summary["notices_undelivered"] == rejected + 1
    assert "notices are not delivered yet" in done.stderr
    waiting = json.loads(cli(home, env, "notices").stdout)
    assert waiting["undelivered"] == rejected + 1
    assert {n["kind"] for n in waiting["notices"]} == {"order_rejected", "run_summary"}

    # When Slack is back and the operator delivers what waits
    slack.otherwise = Reply()
    time.sleep(2.5)  # past the delivery lease of the one the run was trying when it ended
    delivered = json.loads(cli(home, env, "notices", "--deliver").stdout)

    # Then each rejection reaches Slack once, in one digest (listed or counted), and nothing waits
    assert (delivered["delivered"], delivered["undelivered"]) == (rejected + 1, 0)
    listed, counted = rejections_posted(slack)
    assert len(slack.posted()) == 2  # the digest, and the run's summary
    assert (len(listed), counted) == (min(rejected, DIGEST_LIMIT), rejected - min(rejected, DIGEST_LIMIT))
    assert len(set(listed)) == len(listed)
    assert_settled_exactly_once(home, ids)


def test_a_full_disk_answers_503_with_retry_after_and_loses_no_acknowledged_order(tmp_path: Path) -> None:
    # Given a stack on a disk that fills up after a few hundred kilobytes
    home = tmp_path / "home"
    stack = LocalStack(home=home, file_size_limit=400 * 1024).start()
    token = stack.token()
    acknowledged: list[str] = []
    answer = None
    try:
        # When traders keep submitting until the disk is full
        for batch in range(200):
            orders: list[OrderBody] = [
                {"record_id": f"b{batch}-{i}", "parameter_1": "x" * 200, "parameter_2": i} for i in range(100)
            ]
            answer = stack.post_orders(orders, token)
            if answer.status != 201:
                break
            acknowledged += [o["record_id"] for o in orders]

        # Then the answer is 503 storage_unavailable with Retry-After, and the failure is logged
        assert answer is not None
        assert answer.status == 503, answer.body
        assert answer.json()["error"] == "storage_unavailable"
        assert answer.headers["Retry-After"] == "1"
        assert stack.wait_for_log(lambda line: line["message"] == "the order database failed")
    finally:
        stack.stop()

    # And after a restart with room again, every acknowledged order is there
    assert acknowledged
    again = LocalStack(home=home).start()
    try:
        token = again.token()
        for record_id in (acknowledged[0], acknowledged[-1]):
            assert again.get_order(record_id, token).status == 200
    finally:
        again.stop()
