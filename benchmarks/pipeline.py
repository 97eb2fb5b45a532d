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

from energy_auction.bootstrap import Container
from energy_auction.orders import Limits, new_orders, parse_orders
from energy_auction.settings import Backend, Settings

STEP_FUNCTIONS_PAYLOAD_LIMIT = 256 * 1024
HISTORY_LIMIT = 25_000


@contextmanager
def _recorded_events() -> Iterator[dict[int, list[tuple[str, int, str | None]]]]:
    """Per event history (one per execution): (event type, largest input/output bytes, state name)."""
    from moto.stepfunctions.parser.asl.eval.event import event_manager

    histories: dict[int, list[tuple[str, int, str | None]]] = defaultdict(list)
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
            histories[id(self)].append((str(getattr(event_type, "value", event_type)), size, name))
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
        )  # the service's default pipeline settings (MaxConcurrency 8), as a user runs it
        container = Container(settings)
        for start in range(0, orders, 100):
            batch = [
                {"record_id": f"b{i}", "parameter_1": "lot", "parameter_2": i + 0.5}
                for i in range(start, min(orders, start + 100))
            ]
            container.order_store.put_orders(
                new_orders(parse_orders(json.dumps(batch), Limits()), time.time(), "bench"), int(time.time())
            )
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
