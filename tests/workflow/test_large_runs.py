"""Large runs: a Map of thousands of items on moto's interpreter (its Map workers recursed once
per item and died after ~970 items before local/moto_compat), items retrying at once (their
retry counters raced on moto's first use of a component's heap key: moto_compat fix 5), and runs
of 20 and 2,000 orders with the default settings, whose parent histories are the same length."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from energy_auction.bootstrap import Container
from energy_auction.local import moto_compat
from energy_auction.orders import OrderStatus
from energy_auction.settings import Backend, Settings
from tests.builders import key, record_ids, store_orders

from .conftest import ScriptedMarket, claimable, notifications


def test_a_map_worker_evaluates_thousands_of_items_in_one_loop() -> None:
    # Given the interpreter with the engine's fixes, and an inline Map of 3,000 items on one worker
    moto_compat.apply()
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": 1,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Item",
                    "States": {"Item": {"Type": "Pass", "End": True}},
                },
                "End": True,
            }
        },
    }
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name="eu-west-1")
        arn = sfn.create_state_machine(
            name="many", definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/x"
        )["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"items": list(range(3000))}))

        # When it runs (bounded: without the fix it never ends)
        deadline = time.monotonic() + 120
        while (
            status := sfn.describe_execution(executionArn=execution["executionArn"])["status"]
        ) == "RUNNING":
            assert time.monotonic() < deadline, "the Map never finished"
            time.sleep(0.2)

        # Then it succeeds with every item's output
        described = sfn.describe_execution(executionArn=execution["executionArn"])
    assert status == "SUCCEEDED"
    assert json.loads(described["output"]) == list(range(3000))


def test_threads_asking_a_component_for_its_heap_key_at_once_all_get_one_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the interpreter with the engine's fixes, and a component whose key is not made yet,
    # made slowly (so that every thread asks before the first has made it)
    moto_compat.apply()
    from moto.stepfunctions.parser.asl.component import eval_component
    from moto.stepfunctions.parser.asl.component.common.retry.max_attempts_decl import MaxAttemptsDecl

    made = iter(range(10**6))

    def slow_uid() -> str:
        time.sleep(0.01)
        return f"key-{next(made)}"

    monkeypatch.setattr(eval_component, "long_uid", slow_uid)
    component = MaxAttemptsDecl(2)
    start = threading.Barrier(8)

    def ask() -> str:
        start.wait()
        return component.heap_key

    # When eight threads ask for it at once (two Map items retrying their first failure)
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: ask(), range(8)))

    # Then it was made once: each item keeps its attempt number under the one key
    assert keys == {"key-0"}


def test_history_is_the_same_at_20_and_2000_orders_with_the_default_settings(
    tmp_path: Path, engine_for: Any
) -> None:
    # Given the service's default pipeline settings, and runs of 20 and of 2,000 pending orders,
    # every 100th of which the market rejects
    lengths = []
    for count in (20, 2000):
        home = tmp_path / f"home-{count}"
        rejected = {f"o{i}" for i in range(0, count, 100)}
        container = Container(
            Settings(backend=Backend.LOCAL, home=home, jwt_secret="x" * 40),
            market=ScriptedMarket(reject=rejected),
        )
        ids = record_ids(store_orders(container, count))
        engine = engine_for(container)

        # When one run executes
        summary = engine.run(timeout=900)

        # Then it settles every order, one notice per rejection
        assert (summary.status, summary.orders) == ("SUCCEEDED", count)
        assert (summary.accepted, summary.rejected, summary.failed) == (
            count - len(rejected),
            len(rejected),
            0,
        )
        assert claimable(container) == []
        assert {container.order_store.get_order(key(r)).status for r in rejected} == {OrderStatus.REJECTED}  # type: ignore[union-attr]
        assert container.order_store.get_order(key(ids[-1])).status is OrderStatus.ACCEPTED  # type: ignore[union-attr]
        notices = [n["fields"]["record_id"] for n in notifications(home) if n["kind"] == "order_rejected"]
        assert sorted(notices) == sorted(rejected)
        lengths.append(len(engine.history(summary.run_id)))
        engine.close()

    # And the parent's history is as long for 2,000 orders as for 20
    assert lengths[0] == lengths[1]
