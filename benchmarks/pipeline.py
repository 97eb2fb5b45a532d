"""Pipeline benchmark: the package's ASL on moto's interpreter with N ready orders.

Counts come from the interpreter's own event histories (parent and every child execution), read
by wrapping moto's ``EventManager.add_event`` for the duration of the run — instrumentation for
this benchmark only.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.capacity import Assumptions

from energy_auction.bootstrap import Container
from energy_auction.orders import Limits, new_orders, parse_orders
from energy_auction.settings import Backend, Settings

STEP_FUNCTIONS_PAYLOAD_LIMIT = Assumptions().state_payload_bytes
HISTORY_LIMIT = 25_000


@contextmanager
def _recorded_events() -> Iterator[dict[Any, list[tuple[str, int, str | None]]]]:
    """Per event history (one per execution, keyed by its event manager, which the dict keeps
    alive): (event type, largest input/output bytes, state name)."""
    from moto.stepfunctions.parser.asl.eval.event import event_manager

    histories: dict[Any, list[tuple[str, int, str | None]]] = defaultdict(list)
    lock = threading.Lock()
    original = event_manager.EventManager.add_event

    def add_event(self: Any, context: Any, event_type: Any, event_details: Any = None, **kwargs: Any) -> int:
        size, name = 0, None
        for details in (event_details or {}).values():
            if isinstance(details, dict):
                name = details.get("name", name)
                for key in ("input", "output"):
                    if isinstance(details.get(key), str):
                        size = max(size, len(details[key].encode()))
        with lock:
            histories[self].append((str(getattr(event_type, "value", event_type)), size, name))
        return int(original(self, context, event_type, event_details, **kwargs))

    event_manager.EventManager.add_event = add_event  # type: ignore[method-assign]
    try:
        yield histories
    finally:
        event_manager.EventManager.add_event = original  # type: ignore[method-assign]


def bench_pipeline(orders: int, accept_probability: float = 0.7, **settings_overrides: Any) -> dict[str, Any]:
    from energy_auction.handlers import fetch_results, notify, process_order
    from energy_auction.local.engine import PipelineEngine

    invocations = {"fetch_results": 0, "process_order": 0}

    def counted(name: str, handler: Any) -> Any:
        def wrapper(event: dict[str, Any], context: Any) -> Any:
            invocations[name] += 1
            return handler(event, context)

        return wrapper

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(
            backend=Backend.LOCAL,
            home=Path(home),
            jwt_secret="x" * 40,
            market_ready_probability=1.0,
            market_accept_probability=accept_probability,
            market_seed=1,
            **settings_overrides,
        )  # the service's default pipeline settings, as a user runs it
        container = Container(settings)
        _store(container, orders)
        with (
            _recorded_events() as histories,
            PipelineEngine(
                container,
                fetch_results=counted("fetch_results", fetch_results.handler),
                process_order=counted("process_order", process_order.handler),
                notify=notify.handler,
            ) as engine,
        ):
            started = time.perf_counter()
            summary = engine.run()
            wall = time.perf_counter() - started
            parent_events = len(engine.history(summary.run_id))

    parent = next(h for h in histories.values() if any(t == "MapRunStarted" for t, _, _ in h))
    children = [event for h in histories.values() if h is not parent for event in h]
    entered: dict[str, int] = defaultdict(int)
    for event_type, _, name in children:
        if event_type.endswith("StateEntered"):
            entered[str(name)] += 1
    parent_entered = sum(1 for t, _, _ in parent if t.endswith("StateEntered"))
    transitions = parent_entered + sum(entered.values())
    accepted, rejected = summary.accepted, summary.rejected
    # A child enters ProcessOrder once per order; a rejected one also enters NotifyOrderRejected.
    return {
        "orders": orders,
        "status": summary.status,
        "accepted": accepted,
        "rejected": rejected,
        "failed": summary.failed,
        "wall_seconds": round(wall, 2),
        "parent_history_events": parent_events,
        "parent_history_limit": HISTORY_LIMIT,
        "largest_state_payload_bytes": max(size for h in histories.values() for _, size, _ in h),
        "payload_limit_bytes": STEP_FUNCTIONS_PAYLOAD_LIMIT,
        "lambda_invocations": invocations,
        "lambda_invocations_per_order": round(sum(invocations.values()) / orders, 4),
        "state_transitions": transitions,
        "state_transitions_parent": parent_entered,
        "child_states_entered": dict(entered),
        "state_transitions_per_order": round(transitions / orders, 4),
        "state_transitions_per_accepted_order": round(
            (entered["ProcessOrder"] - rejected) / max(1, accepted), 4
        ),
        "state_transitions_per_rejected_order": round(
            (rejected + entered["NotifyOrderRejected"]) / max(1, rejected), 4
        ),
    }


ORDERS_TABLE, RESULTS_BUCKET, REGION = "bench-orders", "bench-results", "eu-west-1"


def _aws_container(home: Path, accept_probability: float, **settings_overrides: Any) -> Container:
    """The AWS backend against moto: the orders table and results bucket made as the stack makes them."""
    import boto3
    from tests.adapters.stores import create_orders_table

    from energy_auction.local.engine import TOPIC

    create_orders_table(boto3.client("dynamodb", region_name=REGION), ORDERS_TABLE)
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=RESULTS_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    settings = Settings(
        backend=Backend.AWS,
        home=home,
        region=REGION,
        orders_table=ORDERS_TABLE,
        results_bucket=RESULTS_BUCKET,
        notification_topic_arn=f"arn:aws:sns:{REGION}:123456789012:{TOPIC}",
        jwt_secret="x" * 40,
        market_ready_probability=1.0,
        market_accept_probability=accept_probability,
        market_seed=1,
        **settings_overrides,
    )
    return Container(settings)


def _store(container: Container, orders: int) -> None:
    for start in range(0, orders, 100):
        batch = [
            {"record_id": f"b{i}", "parameter_1": "lot", "parameter_2": i + 0.5}
            for i in range(start, min(orders, start + 100))
        ]
        container.order_store.put_orders(
            new_orders(parse_orders(json.dumps(batch), Limits()), time.time(), "bench"), int(time.time())
        )


def bench_pipeline_aws(orders: int, accept_probability: float = 0.7) -> dict[str, Any]:
    """A whole run on the AWS adapters (DynamoDB, S3) on moto, with every AWS call the pipeline's
    handlers make counted by operation, and each task's peak memory (tracemalloc, per invocation:
    the engine runs one invocation at a time). The notifier is left out (modelled on its own)."""
    import tracemalloc

    from moto import mock_aws
    from tests.adapters.stores import fast_moto_transactions
    from tests.aws_calls import record_aws_calls

    from energy_auction.handlers import fetch_results, process_order
    from energy_auction.local.engine import PipelineEngine

    invocations: dict[str, int] = defaultdict(int)
    peaks: dict[str, int] = defaultdict(int)

    def measured(name: str, handler: Any) -> Any:
        def wrapper(event: dict[str, Any], context: Any) -> Any:
            task = f"{name}:{event.get('action', 'stage' if name == 'fetch_results' else 'settle')}"
            invocations[name] += 1
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            try:
                return handler(event, context)
            finally:
                peaks[task] = max(peaks[task], tracemalloc.get_traced_memory()[1] - before)

        return wrapper

    def silent(event: dict[str, Any], context: Any) -> dict[str, int]:
        return {"delivered": 0}

    with tempfile.TemporaryDirectory() as home, mock_aws(), fast_moto_transactions():
        container = _aws_container(Path(home), accept_probability)
        _store(container, orders)
        tracemalloc.start()
        try:
            with (
                _recorded_events() as histories,
                PipelineEngine(
                    container,
                    fetch_results=measured("fetch_results", fetch_results.handler),
                    process_order=measured("process_order", process_order.handler),
                    notify=silent,
                ) as engine,
                record_aws_calls() as calls,
            ):
                started = time.perf_counter()
                summary = engine.run(timeout=3600)
                wall = time.perf_counter() - started
        finally:
            tracemalloc.stop()
    by_operation: dict[str, int] = defaultdict(int)
    for call in calls:
        if call.function in {"fetch_results", "process_order"}:
            by_operation[f"{call.service}.{call.operation}"] += 1
    parent = next(h for h in histories.values() if any(t == "MapRunStarted" for t, _, _ in h))
    parent_entered = sum(1 for t, _, _ in parent if t.endswith("StateEntered"))
    children = [h for h in histories.values() if h is not parent and h]
    child_entered = sum(1 for h in children for t, _, _ in h if t.endswith("StateEntered"))
    return {
        "orders": orders,
        "backend": "dynamodb (moto)",
        "status": summary.status,
        "accepted": summary.accepted,
        "rejected": summary.rejected,
        "wall_seconds": round(wall, 2),
        "aws_calls_per_order": {op: round(n / orders, 4) for op, n in sorted(by_operation.items())},
        "lambda_invocations_per_order": {f: round(n / orders, 4) for f, n in sorted(invocations.items())},
        "state_transitions_per_order": {
            "parent": round(parent_entered / orders, 4),
            "children": round(child_entered / orders, 4),
        },
        # One child per batch, and each child starts with ClaimBatch (moto records every child's
        # events with the Map run's event manager, so there is no history per child to count).
        "child_executions_per_order": round(
            sum(1 for h in children for t, _, n in h if t.endswith("StateEntered") and n == "ClaimBatch")
            / orders,
            4,
        ),
        "parent_history_events": len(parent),
        "largest_state_payload_bytes": max(size for h in histories.values() for _, size, _ in h),
        "peak_memory_kib_by_task": {task: round(peak / 1024) for task, peak in sorted(peaks.items())},
    }


class _DiscardingS3:
    """Takes the batches file as S3 would and keeps none of it: the memory measured is the
    function's own (moto's S3 would hold the whole object in this process)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.bytes = 0

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["s3.PutObject"] += 1
        self.bytes += len(kwargs["Body"])
        return {}

    def create_multipart_upload(self, **_: Any) -> dict[str, Any]:
        self.calls["s3.CreateMultipartUpload"] += 1
        return {"UploadId": "bench"}

    def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["s3.UploadPart"] += 1
        self.bytes += len(kwargs["Body"])
        return {"ETag": str(kwargs["PartNumber"])}

    def complete_multipart_upload(self, **_: Any) -> dict[str, Any]:
        self.calls["s3.CompleteMultipartUpload"] += 1
        return {}

    def abort_multipart_upload(self, **_: Any) -> dict[str, Any]:
        self.calls["s3.AbortMultipartUpload"] += 1
        return {}


def bench_staging(orders: int) -> dict[str, Any]:
    """FetchResults' staging alone at ``orders``: its peak memory (tracemalloc) and the calls it
    makes, to show neither grows with the number of orders beyond the paginated read streamed to S3.

    The orders are in the SQLite store, whose pages (1,000 keys) live in SQLite's own memory; the
    batches file goes to a stand-in S3 that keeps nothing. On DynamoDB moto would build each
    query's answer from every matching item in this process, which tracemalloc would count as the
    function's; that the DynamoDB store reads one page per query at a time is shown by its tests
    (tests/adapters/test_order_store_pipeline.py)."""
    import tracemalloc

    from energy_auction.adapters.aws import S3WorkStore
    from energy_auction.market import SimulatedMarket
    from energy_auction.pipeline import fetch_results

    with tempfile.TemporaryDirectory() as home:
        container = Container(Settings(backend=Backend.LOCAL, home=Path(home), jwt_secret="x" * 40))
        s3 = _DiscardingS3()
        _store(container, orders)
        tracemalloc.start()
        started = time.perf_counter()
        answer = fetch_results(
            "run-bench",
            1,
            store=container.order_store,
            market=SimulatedMarket(1.0, 1.0, seed=1),
            work=S3WorkStore(s3, "bench-work"),  # type: ignore[arg-type]
            now=time.time(),
            batch_size=container.settings.pipeline_batch_size,
            max_orders=container.settings.pipeline_max_orders,
        )
        wall = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {
        "orders": orders,
        "store": "sqlite; the batches file to a stand-in S3",
        "staged": answer["count"],
        "batches": answer["batches"],
        "file_bytes": s3.bytes,
        "wall_seconds": round(wall, 2),
        "peak_memory_kib": round(peak / 1024),
        "s3_calls": dict(sorted(s3.calls.items())),
    }
