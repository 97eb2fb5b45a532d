"""The auction pipeline from a user's seat: orders over HTTP, a run, results and notifications on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .stack import LocalStack, OrderBody

pytestmark = pytest.mark.e2e

ORDERS: list[OrderBody] = [
    {"record_id": f"e2e-{i}", "parameter_1": f"lot-{i}", "parameter_2": i + 0.5} for i in range(12)
]


def test_run_pipeline_settles_orders_and_reports_them(stack: LocalStack) -> None:
    # Given orders submitted over HTTP
    token = stack.token()
    assert stack.post_orders(ORDERS, token).status == 201

    # When one pipeline run executes against the stack's data, with the market ready
    started = time.monotonic()
    done = stack.cli("run-pipeline", "--ready-probability", "1", "--accept-probability", "0.5", "--seed", "3")
    took = time.monotonic() - started
    summary = json.loads(done.stdout)

    # Then it reports what it did, and every order got an outcome
    assert summary["status"] == "SUCCEEDED"
    # in the execution's time and the whole command's, which is what the user waited for
    assert 0 < summary["duration_seconds"] < summary["command_seconds"] < took
    assert summary["attempts"] == 1
    assert summary["accepted"] + summary["rejected"] == len(ORDERS)
    assert 0 < summary["accepted"] < len(ORDERS)  # seed 3 gives a mix
    statuses = {o["record_id"]: stack.get_order(o["record_id"], token).json() for o in ORDERS}
    accepted = {k for k, v in statuses.items() if v["status"] == "accepted"}
    rejected = {k for k, v in statuses.items() if v["status"] == "rejected"}
    assert len(accepted) == summary["accepted"]
    assert len(rejected) == summary["rejected"]
    # an accepted order has its result file, mirroring the S3 key
    results = {p.stem: p for p in (stack.home / "results" / "orders").rglob("*.json")}
    assert set(results) == accepted
    some = next(iter(accepted))
    document = json.loads(results[some].read_text())
    assert document["order"]["record_id"] == some
    assert statuses[some]["outcome"]["result_key"] == str(results[some].relative_to(stack.home / "results"))
    # a rejected order has one notification
    lines = stack.wait_for_notices(
        lambda ns: len([n for n in ns if n["kind"] == "order_rejected"]) >= len(rejected)
    )
    assert sorted(n["fields"]["record_id"] for n in lines if n["kind"] == "order_rejected") == sorted(
        rejected
    )
    # and a processed order can no longer be changed
    conflict = stack.post_orders([{"record_id": some, "parameter_1": "x", "parameter_2": 1}], token)
    assert conflict.status == 409
    assert conflict.json()["record_ids"] == [some]


def test_run_pipeline_reports_a_market_that_is_never_ready(stack: LocalStack) -> None:
    token = stack.token()
    assert stack.post_orders(ORDERS[:2], token).status == 201

    done = stack.cli(
        "run-pipeline", "--ready-probability", "0", "--max-attempts", "2", "--retry-seconds", "0", check=False
    )

    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert (summary["status"], summary["error"], summary["attempts"]) == ("FAILED", "ResultsNotReady", 2)
    notices = stack.wait_for_notices(lambda ns: len(ns) >= 1)
    assert [n["kind"] for n in notices] == ["results_not_ready"]
    assert stack.get_order("e2e-0", token).json()["status"] == "pending"


def test_the_schedule_runs_the_pipeline(tmp_path: Path) -> None:
    # Given a stack whose schedule fires every second and whose market is always ready
    stack = LocalStack(
        home=tmp_path / "home",
        args=("--every", "1s"),
        env={
            "ENERGY_AUCTION_MARKET_READY_PROBABILITY": "1",
            "ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY": "1",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        },
    ).start()
    try:
        token = stack.token()
        assert stack.post_orders(ORDERS[:3], token).status == 201
        # When we wait for the schedule (bounded), the orders become accepted without any command
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(stack.get_order(o["record_id"], token).json()["status"] == "accepted" for o in ORDERS[:3]):
                break
            time.sleep(0.5)
        assert [stack.get_order(o["record_id"], token).json()["status"] for o in ORDERS[:3]] == [
            "accepted"
        ] * 3
        # and the stack logs each scheduled run's summary when it ends
        settled = stack.wait_for_log(
            lambda line: line["message"] == "scheduled pipeline run ended" and line.get("accepted") == 3,
            timeout=max(deadline - time.monotonic(), 1),
        )
        assert len(settled) == 1
        assert (settled[0]["status"], settled[0]["orders"], settled[0]["level"]) == ("SUCCEEDED", 3, "INFO")
    finally:
        stack.stop()
