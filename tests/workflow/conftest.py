"""Workflow tests: the package's ASL file executed by moto's interpreter with the real handlers."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from energy_auction.bootstrap import Container
from energy_auction.local.engine import PipelineEngine
from energy_auction.market import OrderResult, SimulatedMarket
from energy_auction.orders import Order
from energy_auction.settings import Backend, Settings
from tests.builders import pending_orders

# Short waits and retries (moto's interpreter sleeps for real); same ASL file as on AWS.
FAST = {
    "pipeline_retry_seconds": 1,
    "pipeline_max_attempts": 3,
    "pipeline_task_retry_interval_seconds": 1,
    "pipeline_task_retry_max_attempts": 2,
    "pipeline_task_retry_backoff_rate": 1.0,
    "pipeline_max_concurrency": 10,
}


@dataclass
class ScriptedMarket:
    """A market whose readiness follows a script per run; outcomes by record_id suffix or a default."""

    ready_after: dict[str, int] = field(default_factory=dict)
    """run_id (or "*") -> the first attempt at which results are ready."""
    reject: set[str] = field(default_factory=set)
    inner: SimulatedMarket = field(default_factory=lambda: SimulatedMarket(1.0, 1.0, seed=7))

    def is_ready(self, run_id: str, attempt: int) -> bool:
        return attempt >= self.ready_after.get(run_id, self.ready_after.get("*", 1))

    def decide(self, orders: Sequence[Order], run_id: str, now: float) -> list[OrderResult]:
        results = self.inner.decide(orders, run_id, now)
        return [
            OrderResult(**{**r.__dict__, "status": "rejected", "power": Decimal(0), "reason": "test says no"})
            if r.record_id in self.reject
            else r
            for r in results
        ]


def settings_for(home: Path, **overrides: Any) -> Settings:
    return Settings(backend=Backend.LOCAL, home=home, jwt_secret="x" * 40, **{**FAST, **overrides})


def notifications(home: Path) -> list[dict[str, Any]]:
    """Every notice of the local stack, in order (its JSONL log)."""
    path = home / "notifications.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alerts(home: Path) -> list[dict[str, Any]]:
    """The notices but the run summaries (which every run that settled anything sends)."""
    return [n for n in notifications(home) if n["kind"] != "run_summary"]


def run_summaries(home: Path) -> list[dict[str, Any]]:
    return [n for n in notifications(home) if n["kind"] == "run_summary"]


def claimable(container: Container) -> list[str]:
    """The record ids of the orders a new run could claim now."""
    return sorted(o.record_id for o in pending_orders(container.order_store, int(container.clock())))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def engine_for(home: Path) -> Iterator[Any]:
    """Open an engine for a container (closed after the test)."""
    opened: list[PipelineEngine] = []

    def build(container: Container, **options: Any) -> PipelineEngine:
        engine = PipelineEngine(container, **options)
        engine.open()
        opened.append(engine)
        return engine

    yield build
    for engine in opened:
        engine.close()
