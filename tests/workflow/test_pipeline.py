"""The pipeline as Step Functions runs it: the package's ASL file on moto's interpreter, real handlers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from energy_auction.adapters.local import FolderResultStore
from energy_auction.bootstrap import Container
from energy_auction.orders import OrderStatus
from tests.builders import key, record_ids, store_orders

from .conftest import ScriptedMarket, alerts, claimable, notifications, run_summaries, settings_for


def _container(
    home: Path, market: Any, components: dict[str, Any] | None = None, **overrides: Any
) -> Container:
    return Container(settings_for(home, **overrides), market=market, **(components or {}))


def _statuses(container: Container, record_ids: list[str]) -> dict[str, str]:
    statuses = {}
    for record_id in record_ids:
        order = container.order_store.get_order(key(record_id))
        assert order is not None
        statuses[record_id] = order.status.value
    return statuses


def _result_files(home: Path) -> dict[str, dict[str, Any]]:
    root = home / "results"
    return {p.stem: json.loads(p.read_text()) for p in root.rglob("*.json")} if root.exists() else {}


def test_results_ready_at_once_settle_every_order(home: Path, engine_for: Any) -> None:
    # Given three pending orders and a market that is ready at the first attempt
    container = _container(home, ScriptedMarket())
    ids = record_ids(store_orders(container, 3))
    engine = engine_for(container)

    # When one run executes
    summary = engine.run()

    # Then it succeeds after one attempt, every order is accepted and has a result file
    assert (summary.status, summary.attempts, summary.accepted, summary.rejected) == ("SUCCEEDED", 1, 3, 0)
    assert set(_statuses(container, ids).values()) == {"accepted"}
    files = _result_files(home)
    assert set(files) == set(ids)
    document = files["o1"]
    assert document["order"]["record_id"] == "o1"
    assert document["outcome"]["status"] == "accepted"
    assert document["run_id"] == summary.run_id
    assert "processed_at" in document
    assert alerts(home) == []
    # and one run summary notice says what the run did
    (run_summary,) = run_summaries(home)
    assert run_summary["fields"]["run_id"] == summary.run_id


def test_not_ready_twice_then_ready(home: Path, engine_for: Any) -> None:
    container = _container(home, ScriptedMarket(ready_after={"*": 3}), pipeline_max_attempts=5)
    ids = record_ids(store_orders(container, 2))
    engine = engine_for(container)

    summary = engine.run()

    assert (summary.status, summary.attempts, summary.accepted) == ("SUCCEEDED", 3, 2)
    assert set(_statuses(container, ids).values()) == {"accepted"}


def test_never_ready_gives_up_with_an_alert_after_max_attempts(home: Path, engine_for: Any) -> None:
    container = _container(home, ScriptedMarket(ready_after={"*": 99}), pipeline_max_attempts=3)
    ids = record_ids(store_orders(container, 2))
    engine = engine_for(container)

    summary = engine.run()

    assert summary.status == "FAILED"
    assert summary.error == "ResultsNotReady"
    assert summary.attempts == 3
    assert [n["kind"] for n in notifications(home)] == ["results_not_ready"]
    # and nothing was claimed or changed: the orders wait for the next run
    assert set(_statuses(container, ids).values()) == {"pending"}
    assert claimable(container) == sorted(ids)


def test_mixed_outcomes(home: Path, engine_for: Any) -> None:
    # Given orders the market will partly reject
    container = _container(home, ScriptedMarket(reject={"o0", "o3"}))
    ids = record_ids(store_orders(container, 5))
    engine = engine_for(container)

    summary = engine.run()

    # Then one result file per accepted order, one rejection notice per rejected order
    assert (summary.status, summary.accepted, summary.rejected, summary.failed) == ("SUCCEEDED", 3, 2, 0)
    assert set(_result_files(home)) == {"o1", "o2", "o4"}
    rejected = [n for n in notifications(home) if n["kind"] == "order_rejected"]
    assert sorted(n["fields"]["record_id"] for n in rejected) == ["o0", "o3"]
    assert {n["fields"]["reason"] for n in rejected} == {"test says no"}
    assert {n["fields"]["run_id"] for n in rejected} == {summary.run_id}
    statuses = _statuses(container, ids)
    assert statuses == {
        "o0": "rejected",
        "o1": "accepted",
        "o2": "accepted",
        "o3": "rejected",
        "o4": "accepted",
    }
    rejected_order = container.order_store.get_order(key("o3"))
    assert rejected_order is not None
    assert rejected_order.outcome is not None
    assert rejected_order.outcome["run_id"] == summary.run_id
    assert rejected_order.outcome["reason"] == "test says no"


def _s3_error(code: str, message: str, status: int) -> ClientError:
    """A ``ClientError`` of PutObject with the response metadata botocore always parses."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "RequestId": "0000000000000000",
                "HostId": "",
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        },
        "PutObject",
    )


class _FlakyResults:
    """A result store whose first ``failures`` writes fail like S3 throttling (503 SlowDown)."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise _s3_error("SlowDown", "slow down", 503)
        return str(self.inner.put_result(key, document))


def test_an_s3_failure_is_retried_then_succeeds(home: Path, engine_for: Any) -> None:
    flaky = _FlakyResults(FolderResultStore(home / "results"), failures=1)
    container = _container(home, ScriptedMarket(), {"result_store": flaky})
    ids = record_ids(store_orders(container, 1))
    engine = engine_for(container)

    summary = engine.run()

    assert (summary.status, summary.accepted, summary.failed) == ("SUCCEEDED", 1, 0)
    assert flaky.calls == 2
    assert _statuses(container, ids) == {"o0": "accepted"}
    assert alerts(home) == []


def test_a_permanent_failure_leaves_the_order_pending_and_alerts(home: Path, engine_for: Any) -> None:
    flaky = _FlakyResults(FolderResultStore(home / "results"), failures=10**6)
    # The two orders fail at once (moto's retry counter raced on its first use: moto_compat fix 5).
    container = _container(home, ScriptedMarket(), {"result_store": flaky})
    ids = record_ids(store_orders(container, 2))
    engine = engine_for(container)

    summary = engine.run()

    assert summary.status == "SUCCEEDED"  # the run finishes; the failure is reported, not hidden
    assert (summary.accepted, summary.failed) == (0, 2)
    assert flaky.calls == 2 * 3  # first try + 2 retries per order
    failures = [n for n in notifications(home) if n["kind"] == "order_processing_failed"]
    assert len(failures) == 2
    # the orders are pending and claimable again by the next run
    assert set(_statuses(container, ids).values()) == {"pending"}
    assert claimable(container) == sorted(ids)


def test_overlapping_runs_process_each_order_once(home: Path, engine_for: Any) -> None:
    # Given a first run that waits for results while a second run starts and finds them ready
    market = ScriptedMarket(ready_after={"*": 2}, reject={"o1"})
    container = _container(home, market, pipeline_max_attempts=4)
    ids = record_ids(store_orders(container, 6))
    engine = engine_for(container)

    first = engine.start_run()
    market.ready_after[first] = 3
    second = engine.start_run()
    one, two = engine.wait(first), engine.wait(second)

    # Then both succeed, and every order was settled by exactly one of them
    assert (one.status, two.status) == ("SUCCEEDED", "SUCCEEDED")
    assert one.orders + two.orders == 6
    assert one.accepted + two.accepted == 5
    assert one.rejected + two.rejected == 1
    assert len([n for n in notifications(home) if n["kind"] == "order_rejected"]) == 1
    assert len(_result_files(home)) == 5
    assert sorted(_statuses(container, ids).values()) == ["accepted"] * 5 + ["rejected"]


def test_a_rerun_finds_nothing_to_do(home: Path, engine_for: Any) -> None:
    container = _container(home, ScriptedMarket())
    record_ids(store_orders(container, 2))
    engine = engine_for(container)
    assert engine.run().accepted == 2

    again = engine.run()

    assert (again.status, again.orders) == ("SUCCEEDED", 0)


def test_statuses_show_in_the_order_view(home: Path, engine_for: Any) -> None:
    container = _container(home, ScriptedMarket(reject={"o1"}))
    record_ids(store_orders(container, 2))
    engine_for(container).run()

    accepted, rejected = (
        container.order_store.get_order(key("o0")),
        container.order_store.get_order(key("o1")),
    )
    assert accepted is not None
    assert rejected is not None
    view = accepted.public_view()
    assert view["status"] == OrderStatus.ACCEPTED
    assert view["outcome"]["result_key"].startswith("orders/")
    assert "claim_run_id" not in view
    assert rejected.public_view()["outcome"]["status"] == "rejected"


class _BrokenWorkStore:
    """Staging the run's batches fails for good (say, the bucket policy denies the write)."""

    def write_batches(self, run_id: str, batches: Any) -> dict[str, str]:
        raise _s3_error("AccessDenied", "denied", 403)


def test_a_failed_fetch_claims_nothing_and_alerts(home: Path, engine_for: Any) -> None:
    # Given pending orders, a ready market, and a work location FetchResults cannot write to
    container = _container(home, ScriptedMarket(), {"work_store": _BrokenWorkStore()})
    ids = record_ids(store_orders(container, 3))
    engine = engine_for(container)

    # When a run executes and FetchResults fails
    summary = engine.run()

    # Then the run fails with an alert, and the orders, never claimed, are free for the next run
    assert (summary.status, summary.error) == ("FAILED", "FetchResultsFailed")
    assert [n["kind"] for n in notifications(home)] == ["fetch_failed"]
    assert claimable(container) == sorted(ids)
    assert set(_statuses(container, ids).values()) == {"pending"}
