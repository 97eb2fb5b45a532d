"""The pipeline's Lambda handlers (FetchResults with its batch actions, ProcessOrder) on the local
container, and which failures they turn into TransientFailure, the error name the state machine
retries."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from energy_auction import bootstrap, codec
from energy_auction.adapters.transient import is_transient
from energy_auction.bootstrap import Container
from energy_auction.errors import (
    ClaimLost,
    OrderRejected,
    OrdersAlreadyProcessed,
    StorageUnavailable,
    TransientFailure,
)
from energy_auction.handlers import fetch_results, process_order
from energy_auction.local.lambdas import LocalLambdaContext
from energy_auction.market import SimulatedMarket
from energy_auction.orders import OrderStatus, RunRecord
from energy_auction.settings import Settings
from tests import builders
from tests.builders import key, keys, pending_orders
from tests.fakes import MemoryWorkStore

from ..conftest import FakeClock
from ..metrics import published_metrics

RUN = "run-20270115T080000Z-cccc"


def client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


class FailingOrderStore:
    """The real store, except that the methods named in ``failing`` raise ``error``."""

    def __init__(self, inner: Any, error: BaseException, failing: Sequence[str]) -> None:
        self._inner = inner
        self._error = error
        self._failing = set(failing)

    def __getattr__(self, name: str) -> Any:
        if name in self._failing:

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise self._error

            return fail
        return getattr(self._inner, name)


class FailingResultStore:
    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        self.calls += 1
        raise self.error


def install(
    container: Container,
    *,
    market: Any = None,
    work: Any = None,
    settings: Settings | None = None,
    **components: Any,
) -> MemoryWorkStore:
    """Install, for the handlers, ``container`` with a market and a work store (and any other
    ``components``, or other ``settings``) of the test's; returns the work store."""
    work_store = work or MemoryWorkStore()
    given = {"order_store": container.order_store, **components}
    bootstrap.use(
        Container(
            settings or container.settings,
            container.clock,
            market=market or SimulatedMarket(1.0, 0.5, seed=3),
            work_store=work_store,
            **given,
        )
    )
    return work_store


def store_orders(container: Container, count: int) -> None:
    # Volumes with more digits than a float holds: the handlers must keep them exact.
    builders.store_orders(container, count, volume=lambda i: Decimal(f"{i}.1000000000000000000001"))


def invoke_fetch(run_id: str = RUN, attempt: int = 1) -> Any:
    return fetch_results.handler({"run_id": run_id, "attempt": attempt}, LocalLambdaContext("fetch-results"))


def invoke_action(action: str, run_id: str = RUN, **fields: Any) -> Any:
    """A FetchResults action as the state machine invokes it: its payload through JSON."""
    event = json.loads(codec.dumps({"action": action, "run_id": run_id, **fields}))
    return fetch_results.handler(event, LocalLambdaContext("fetch-results"))


def invoke_process(event: dict[str, Any]) -> Any:
    # Step Functions hands the handler JSON; Lambda's runtime parses its numbers as floats.
    parsed = json.loads(codec.dumps(event))
    return process_order.handler(parsed, LocalLambdaContext("process-order"))


def fetched_items(container: Container, count: int, market: SimulatedMarket) -> list[dict[str, Any]]:
    """Run FetchResults, then each staged batch's claim, through the handler; the results the
    batches answered (each the input of a ProcessOrder)."""
    store_orders(container, count)
    work = install(container, market=market)
    invoke_fetch()
    return [
        result
        for batch in work.written[RUN]
        for result in invoke_action("claim", batch=batch["batch"], keys=batch["keys"])["results"]
    ]


# --- FetchResults handler


def test_fetch_not_ready_answer_is_plain_json(local_container: Container) -> None:
    # Given a market that is not ready
    store_orders(local_container, 2)
    work = install(local_container, market=SimulatedMarket(ready_probability=0.0, seed=1))

    # When the handler runs
    answer = invoke_fetch(attempt=4)

    # Then its answer is the documented one and serialises with the standard json module
    assert json.loads(json.dumps(answer)) == {"results": False, "run_id": RUN, "attempt": 4}
    assert work.written == {}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"run_id": RUN, "attempt": 1}, {"ResultsNotReady": [1]}),
        ({"run_id": RUN, "action": "redeliver"}, {"NoticesRedelivered": [0]}),
        ({"run_id": RUN, "action": "claim", "batch": 0, "keys": []}, {"OrdersClaimed": [0]}),
        ({"run_id": RUN, "action": "tally", "batch": 0, "outcomes": []}, {"BatchesSettled": [1]}),
        (
            {"run_id": RUN, "action": "summarise", "started_at": "2027-01-15T08:00:00Z"},
            {"OrdersSettled": [0]},
        ),
    ],
    ids=["not-ready", "nothing-to-redeliver", "nothing-to-claim", "an-empty-batch", "nothing-settled"],
)
def test_every_fetch_results_action_publishes_a_metric_even_when_it_has_nothing_to_do(
    local_container: Container,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    event: dict[str, Any],
    expected: dict[str, list[int]],
) -> None:
    # Given a market that is not ready, no notice overdue, and nothing claimed or recorded for the run
    install(local_container, market=SimulatedMarket(ready_probability=0.0, seed=1))

    # When each action runs
    with published_metrics(monkeypatch, capsys) as published:
        fetch_results.handler(event, LocalLambdaContext("fetch-results"))

    # Then it publishes what it did (a zero is a data point), and Powertools warns of nothing
    assert published.metrics == expected
    assert published.warnings == []


def test_a_ready_fetch_with_nothing_pending_publishes_that_it_staged_none(
    local_container: Container, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(local_container, market=SimulatedMarket(ready_probability=1.0, seed=1))

    with published_metrics(monkeypatch, capsys) as published:
        invoke_fetch()

    assert published.metrics == {"OrdersStaged": [0]}
    assert published.warnings == []


def test_fetch_ready_answer_is_plain_json_and_names_the_batches_file(local_container: Container) -> None:
    # Given pending orders with exact (Decimal) volumes, and a ready market
    store_orders(local_container, 10)
    work = install(local_container, market=SimulatedMarket(1.0, 0.5, seed=3))

    # When the handler runs
    answer = invoke_fetch()

    # Then the answer serialises with the standard json module, and says what was staged where
    assert json.loads(json.dumps(answer)) == answer
    assert answer == {
        "results": True,
        "run_id": RUN,
        "attempt": 1,
        "count": 10,
        "batches": 1,
        "left": 0,
        "items": {"bucket": "work-bucket", "key": f"work/runs/{RUN}/batches.json"},
    }
    assert work.written[RUN] == [{"batch": 0, "keys": keys([f"o{i}" for i in range(10)])}]


def test_fetch_stages_with_the_settings_batch_size_and_limit(local_container: Container) -> None:
    # Given ten pending orders, and settings of three orders a batch and seven a run
    store_orders(local_container, 10)
    settings = dataclasses.replace(local_container.settings, pipeline_batch_size=3, pipeline_max_orders=7)
    work = install(local_container, market=SimulatedMarket(1.0, 0.5, seed=3), settings=settings)

    # When the handler runs
    answer = invoke_fetch()

    # Then it staged seven in three batches, and left three
    assert (answer["count"], answer["batches"], answer["left"]) == (7, 3, 3)
    assert [len(batch["keys"]) for batch in work.written[RUN]] == [3, 3, 1]


def test_fetch_with_nothing_pending_answers_count_zero(local_container: Container) -> None:
    install(local_container, market=SimulatedMarket(1.0, 1.0, seed=3))
    answer = invoke_fetch()
    assert json.loads(json.dumps(answer)) == {
        "results": True,
        "run_id": RUN,
        "attempt": 1,
        "count": 0,
        "batches": 0,
        "left": 0,
    }


@pytest.mark.parametrize(
    "error",
    [
        client_error("ThrottlingException", 400, "Query"),
        client_error("SlowDown", 503),
        client_error("SomethingNew", 503),
        EndpointConnectionError(endpoint_url="https://s3.eu-west-1.amazonaws.com"),
    ],
    ids=["throttling", "slow-down-503", "any-503", "connection"],
)
def test_fetch_turns_a_transient_work_store_failure_into_transient_failure(
    local_container: Container, error: Exception
) -> None:
    # Given the work store fails with a transient AWS error
    store_orders(local_container, 2)
    install(local_container, work=MemoryWorkStore([error]))

    # When the handler runs
    with pytest.raises(TransientFailure) as raised:
        invoke_fetch()

    # Then it raises the error name the state machine retries, chained to the cause
    assert type(raised.value).__name__ == "TransientFailure"
    assert raised.value.__cause__ is error


def test_fetch_turns_storage_unavailable_into_transient_failure(local_container: Container) -> None:
    # Given the order store kept failing
    unavailable = StorageUnavailable()
    failing = FailingOrderStore(local_container.order_store, unavailable, ["pending_keys"])
    install(local_container, order_store=failing)

    # When the handler runs
    with pytest.raises(TransientFailure) as raised:
        invoke_fetch()

    # Then it is retried by the state machine
    assert raised.value.__cause__ is unavailable


@pytest.mark.parametrize(
    "error",
    [client_error("AccessDenied", 403), client_error("ValidationException", 400, "Query")],
    ids=["access-denied", "validation"],
)
def test_fetch_lets_a_permanent_failure_propagate_unchanged(
    local_container: Container, error: ClientError
) -> None:
    # Given the work store fails in a way retrying cannot help (refused access, a bad request)
    store_orders(local_container, 2)
    install(local_container, work=MemoryWorkStore([error]))

    # When the handler runs
    with pytest.raises(ClientError) as raised:
        invoke_fetch()

    # Then the ClientError itself propagates, so the state machine does not retry it
    assert raised.value is error
    assert not isinstance(raised.value, TransientFailure)


# --- FetchResults' batch actions: claim, tally, summarise


def test_claim_answer_is_plain_json_with_exact_numbers_and_holds_the_orders_for_the_lease(
    local_container: Container,
) -> None:
    # Given ten staged orders with exact (Decimal) volumes, and a lease of 600 seconds
    store_orders(local_container, 10)
    settings = dataclasses.replace(local_container.settings, claim_lease_seconds=600)
    work = install(local_container, market=SimulatedMarket(1.0, 0.5, seed=3), settings=settings)
    invoke_fetch()
    (batch,) = work.written[RUN]

    # When the batch's claim runs
    answer = invoke_action("claim", batch=batch["batch"], keys=batch["keys"])

    # Then its answer serialises with the standard json module (no Decimal leaks into it) and
    # carries the exact numbers as strings
    assert json.loads(json.dumps(answer)) == answer
    assert (answer["run_id"], answer["batch"], len(answer["results"])) == (RUN, 0, 10)
    assert {Decimal(r["parameter_2"]) for r in answer["results"]} == {
        Decimal(f"{i}.1000000000000000000001") for i in range(10)
    }
    # And the orders are this run's for the lease
    now = int(local_container.clock())
    for order in local_container.order_store.get_orders(batch["keys"]):
        assert (order.claim_run_id, order.claim_expires_at) == (RUN, now + 600)


def test_claim_turns_storage_unavailable_into_transient_failure(local_container: Container) -> None:
    store_orders(local_container, 1)
    unavailable = StorageUnavailable()
    install(
        local_container,
        order_store=FailingOrderStore(local_container.order_store, unavailable, ["get_orders"]),
    )

    with pytest.raises(TransientFailure) as raised:
        invoke_action("claim", batch=0, keys=[key("o0")])

    assert raised.value.__cause__ is unavailable
    assert local_container.order_store.get_order(key("o0")).claim_run_id is None  # type: ignore[union-attr]


def test_tally_records_the_batch_once_and_the_summary_reads_it(
    local_container: Container, clock: FakeClock
) -> None:
    # Given a run that staged three orders, whose batch's orders ended two ways
    install(local_container)
    local_container.order_store.begin_run(RUN, 3, 0, int(clock.now))
    outcomes = [{"status": "accepted"}, {"status": "rejected"}, {"status": "accepted"}]

    # When the batch is tallied, twice (a retried task), and the run summarised a minute later
    first = invoke_action("tally", batch=0, outcomes=outcomes)
    again = invoke_action("tally", batch=0, outcomes=outcomes)
    clock.advance(60)
    summary = invoke_action("summarise", started_at="2027-01-15T08:00:00.000Z")

    # Then the tally answers the batch's counts, and the summary counts the batch once
    assert first == again == {"run_id": RUN, "batch": 0, "accepted": 2, "rejected": 1, "failed": 0}
    assert json.loads(json.dumps(summary)) == summary
    assert summary == {
        "run_id": RUN,
        "staged": 3,
        "orders": 3,
        "accepted": 2,
        "rejected": 1,
        "failed": 0,
        "left": 0,
        "started_at": "2027-01-15T08:00:00Z",
        "duration_seconds": 60.0,
    }


@pytest.mark.parametrize(
    ("action", "fields", "method"),
    [
        ("tally", {"batch": 0, "outcomes": [{"status": "accepted"}]}, "record_batch"),
        ("summarise", {"started_at": "2027-01-15T08:00:00Z"}, "run_record"),
    ],
)
def test_tally_and_summary_turn_storage_unavailable_into_transient_failure(
    local_container: Container, action: str, fields: dict[str, Any], method: str
) -> None:
    unavailable = StorageUnavailable()
    install(
        local_container, order_store=FailingOrderStore(local_container.order_store, unavailable, [method])
    )

    with pytest.raises(TransientFailure) as raised:
        invoke_action(action, **fields)

    assert raised.value.__cause__ is unavailable


def test_a_tally_of_an_unknown_outcome_is_not_retried(local_container: Container) -> None:
    install(local_container)

    with pytest.raises(ValueError, match="expected one of") as raised:
        invoke_action("tally", batch=0, outcomes=[{"status": "lost"}])

    assert not isinstance(raised.value, TransientFailure)
    assert local_container.order_store.run_record(RUN) == RunRecord()


# --- ProcessOrder handler


def test_process_accepted_returns_the_result_key(local_container: Container) -> None:
    # Given an accepted result a batch claimed
    (item,) = fetched_items(local_container, 1, SimulatedMarket(1.0, 1.0, seed=3))

    # When ProcessOrder runs for it
    answer = invoke_process({"result": item, "run_id": RUN})

    # Then it answers with the record, its status and where its result is
    location = f"orders/{item['auction_date']}/{key('o0')}.json"
    assert answer == {"record_id": "o0", "status": "accepted", "result_key": location}
    assert json.loads(json.dumps(answer)) == answer
    assert (local_container.settings.results_dir / location).is_file()
    order = local_container.order_store.get_order(key("o0"))
    assert order is not None
    assert order.status is OrderStatus.ACCEPTED


def test_process_rejected_raises_order_rejected(local_container: Container) -> None:
    # Given a rejected result a batch claimed
    (item,) = fetched_items(local_container, 1, SimulatedMarket(1.0, 0.0, seed=3))

    # When ProcessOrder runs for it
    with pytest.raises(OrderRejected) as raised:
        invoke_process({"result": item, "run_id": RUN})

    # Then the Lambda error type is exactly the name the state machine catches
    assert type(raised.value).__name__ == "OrderRejected"
    assert str(raised.value) == "Order status is rejected! record_id=o0"
    order = local_container.order_store.get_order(key("o0"))
    assert order is not None
    assert order.status is OrderStatus.REJECTED


def test_process_release_gives_the_order_back(local_container: Container) -> None:
    # Given an order this run claimed
    (item,) = fetched_items(local_container, 1, SimulatedMarket(1.0, 1.0, seed=3))
    now = int(local_container.clock())
    assert pending_orders(local_container.order_store, now) == []

    # When the state machine asks to release it
    answer = invoke_process({"action": "release", "result": item, "run_id": RUN})

    # Then it is pending and unclaimed again
    assert answer == {"record_id": "o0", "status": "released"}
    assert [o.record_id for o in pending_orders(local_container.order_store, now)] == ["o0"]


def test_process_turns_a_slow_down_from_the_result_store_into_transient_failure(
    local_container: Container,
) -> None:
    # Given an accepted result, and a results bucket answering SlowDown (503)
    (item,) = fetched_items(local_container, 1, SimulatedMarket(1.0, 1.0, seed=3))
    slow_down = client_error("SlowDown", 503)
    failing = FailingResultStore(slow_down)
    install(local_container, result_store=failing)

    # When ProcessOrder runs
    with pytest.raises(TransientFailure) as raised:
        invoke_process({"result": item, "run_id": RUN})

    # Then the state machine will retry it, and the order is still held by this run, not settled
    assert raised.value.__cause__ is slow_down
    assert failing.calls == 1
    order = local_container.order_store.get_order(key("o0"))
    assert order is not None
    assert (order.status, order.claim_run_id) == (OrderStatus.PENDING, RUN)


def test_process_lets_a_lost_claim_propagate(local_container: Container) -> None:
    # Given a result for an order another run holds
    (item,) = fetched_items(local_container, 1, SimulatedMarket(1.0, 1.0, seed=3))

    # When a different run processes it
    with pytest.raises(ClaimLost):
        invoke_process({"result": item, "run_id": "run-other"})


# --- is_transient


@pytest.mark.parametrize(
    "error",
    [
        StorageUnavailable(),
        EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://s3.eu-west-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://s3.eu-west-1.amazonaws.com"),
        client_error("ThrottlingException", 400),
        client_error("ProvisionedThroughputExceededException", 400),
        client_error("RequestLimitExceeded", 400),
        client_error("TransactionConflict", 400),
        client_error("SlowDown", 503),
        client_error("InternalServerError", 500),
        client_error("ServiceUnavailable", 503),
        client_error("RequestTimeout", 400),
        client_error("UnheardOfCode", 500),
        client_error("UnheardOfCode", 504),
    ],
    ids=lambda e: (
        type(e).__name__ + (f"-{e.response['Error']['Code']}" if isinstance(e, ClientError) else "")
    ),
)
def test_transient_errors(error: BaseException) -> None:
    assert is_transient(error) is True


@pytest.mark.parametrize(
    "error",
    [
        client_error("AccessDenied", 403),
        client_error("ValidationException", 400),
        client_error("ConditionalCheckFailedException", 400),
        client_error("NoSuchBucket", 404),
        client_error("UnheardOfCode", 499),
        ClientError({"Error": {"Code": "Odd"}}, "PutObject"),  # no ResponseMetadata at all
        ValueError("bad input"),
        ClaimLost("lost"),
        OrdersAlreadyProcessed(["a"]),
        OrderRejected("a"),
    ],
    ids=lambda e: (
        type(e).__name__ + (f"-{e.response['Error']['Code']}" if isinstance(e, ClientError) else "")
    ),
)
def test_permanent_errors(error: BaseException) -> None:
    assert is_transient(error) is False
