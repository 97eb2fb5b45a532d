"""The cost and time model (benchmarks/aws_model.py): one estimate per N, growing with N, the first
limit following the assumptions it is given, and the measured counts of a report preferred."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from benchmarks import aws_model
from infra.capacity import (
    NOTICE_BATCHING_WINDOW_SECONDS,
    NOTIFIER_BATCH_SIZE,
    Assumptions,
    design_per_order,
    notices_per_notifier_invocation,
    units_per_order,
)
from infra.config import StageConfig

from energy_auction.digest import BATCH_SIZE

REQUIRED = {"orders", "settle_seconds", "cost_usd", "first_limit", "orchestration_usd", "cost"}
SERVICES = {"step_functions", "lambda", "dynamodb", "s3", "sns", "sqs"}


def _printed_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert aws_model.main(["--json", *argv]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed, list)
    return printed


def _report(orders: int, **measured: Any) -> dict[str, Any]:
    return {"pipeline": [{"orders": orders, "status": "SUCCEEDED", **measured}]}


def test_json_holds_one_estimate_per_n_with_cost_per_service(capsys: pytest.CaptureFixture[str]) -> None:
    estimates = _printed_json(capsys, "--no-report")

    assert [e["orders"] for e in estimates] == [10_000, 100_000, 1_000_000]
    for estimate in estimates:
        assert set(estimate) >= REQUIRED
        assert set(estimate["cost"]) == SERVICES
        assert estimate["cost_usd"] == pytest.approx(sum(estimate["cost"].values()), abs=1e-3)
        assert estimate["orchestration_usd"] == estimate["cost"]["step_functions"]
        assert estimate["first_limit"] in estimate["limits_orders_per_second"]


def test_time_and_cost_grow_with_the_orders() -> None:
    estimates = aws_model.model()

    settle = [e["settle_seconds"] for e in estimates]
    cost = [e["cost_usd"] for e in estimates]
    assert settle == sorted(settle)
    assert len(set(settle)) == len(settle)
    assert cost == sorted(cost)
    assert len(set(cost)) == len(cost)


def test_the_first_limit_follows_a_lowered_quota() -> None:
    def first_limit(**changed: Any) -> str:
        (estimate,) = aws_model.model(assumptions=replace(Assumptions(), **changed), orders=[100_000])
        return str(estimate["first_limit"])

    assert first_limit() == "map_concurrency"
    assert first_limit(lambda_concurrency=400) == "lambda_concurrency"
    assert first_limit(dynamodb_write_units=1_000) == "dynamodb_table"
    assert first_limit(s3_prefix_writes=100) == "s3_prefix_puts"


def test_a_run_past_its_limits_takes_more_runs() -> None:
    config = StageConfig(stage="model", pipeline_max_orders=100_000)

    (within, past) = aws_model.model(config, orders=[100_000, 250_000])

    assert (within["runs"], within["first_limit"]) == (1, "map_concurrency")
    assert (past["runs"], past["first_limit"], past["orders_per_run"]) == (3, "max_orders", 100_000)
    assert past["settle_seconds"] > 2 * within["settle_seconds"]


def test_a_reports_measured_counts_are_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (design,) = aws_model.model(orders=[100_000])
    calls = dict(design["per_order"]["aws_calls"], **{"s3.PutObject": 1.0, "dynamodb.UpdateItem": 3.0})
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            _report(
                100_000,
                aws_calls_per_order=calls,
                lambda_invocations_per_order={"fetch_results": 0.02, "process_order": 1.0},
                state_transitions_per_order={"parent": 0.02, "children": 3.0},
                child_executions_per_order=0.01,
            )
        )
    )

    (measured,) = _printed_json(capsys, "--report", str(report), "--orders", "100000")

    assert measured["per_order"]["counts"].startswith("report (100,000 orders")
    assert measured["per_order"]["aws_calls"]["s3.PutObject"] == 1.0
    assert measured["cost"]["s3"] > design["cost"]["s3"]
    assert measured["cost"]["dynamodb"] > design["cost"]["dynamodb"]
    assert measured["cost"]["step_functions"] > design["cost"]["step_functions"]  # 2 transitions per 100


def test_the_report_entry_nearest_n_is_used_and_an_older_shape_is_not() -> None:
    nearest = {
        "pipeline": [
            {"orders": 1_000, "child_executions_per_order": 0.5},
            {"orders": 100_000, "child_executions_per_order": 0.02},
            {"orders": 10_000, "lambda_invocations_per_order": 1.0002},  # the older, flat shape
        ]
    }

    (small, large) = aws_model.model(report=nearest, orders=[1_000, 1_000_000])
    (older,) = aws_model.model(report={"pipeline": nearest["pipeline"][2:]}, orders=[10_000])

    assert small["per_order"]["child_executions"] == 0.5
    assert large["per_order"]["child_executions"] == 0.02
    assert older["per_order"]["counts"] == "design"


def test_every_assumption_says_its_unit_and_source() -> None:
    rows = Assumptions.table()

    assert rows
    assert all(row["unit"] and row["source"] for row in rows)
    assert aws_model.render_assumptions().count("\n") == len(rows)


def test_the_design_claims_with_one_update_per_order_and_no_read_back() -> None:
    config = StageConfig(stage="model")
    shape, a = config.shape(), config.assumptions()

    per = design_per_order(100_000, shape, a)
    units = units_per_order(per.aws_calls, shape, a)

    # ClaimBatch: one eventually consistent batch read per 100 orders, one conditional update per
    # order; TallyBatch: a one-item transaction per batch; ProcessOrder: a read and an update
    batches = 1 / shape.batch_size
    assert per.aws_calls["dynamodb.BatchGetItem"] == pytest.approx(batches)
    assert per.aws_calls["dynamodb.TransactWriteItems"] == pytest.approx(batches)
    assert per.aws_calls["dynamodb.UpdateItem"] == pytest.approx(2)
    assert units.table_writes == pytest.approx(2 + 2 * batches)  # claim, completion, tally
    assert units.table_reads == pytest.approx(0.5 + 1, abs=1e-4)  # the batch read, ProcessOrder's


def test_the_notifier_takes_what_its_window_gathers_up_to_the_deployed_batch() -> None:
    window = NOTICE_BATCHING_WINDOW_SECONDS

    assert notices_per_notifier_invocation(10_000) == NOTIFIER_BATCH_SIZE == BATCH_SIZE
    assert notices_per_notifier_invocation(10) == 10 * window
    assert notices_per_notifier_invocation(0.01) == 1


def test_the_queue_is_read_ten_notices_a_request_whatever_the_notifiers_batch() -> None:
    (estimate,) = aws_model.model(orders=[1_000_000])
    notices = 1_000_000 * estimate["settings"]["rejected_share"]

    requests = notices + 2 * math.ceil(notices / Assumptions().sqs_messages_per_request)
    assert estimate["cost"]["sqs"] == pytest.approx(requests * Assumptions().sqs_request_usd, abs=1e-4)


def test_the_state_machines_own_calls_come_from_the_design_whatever_the_report_counted() -> None:
    # The benchmark counts the handlers' calls: a report holds no sns:publish task and no ItemReader
    (design,) = aws_model.model(orders=[100_000])
    handlers_only = {
        call: n
        for call, n in design["per_order"]["aws_calls"].items()
        if call not in ("sns.Publish", "s3.GetObject")
    }

    (measured,) = aws_model.model(
        report=_report(100_000, aws_calls_per_order=handlers_only), orders=[100_000]
    )

    # Then every rejection's notice is still published and paid for, and each part read once
    assert (
        measured["per_order"]["aws_calls"]["sns.Publish"] == design["per_order"]["aws_calls"]["sns.Publish"]
    )
    assert (
        measured["per_order"]["aws_calls"]["s3.GetObject"] == design["per_order"]["aws_calls"]["s3.GetObject"]
    )
    assert measured["cost"]["sns"] == pytest.approx(design["cost"]["sns"])
