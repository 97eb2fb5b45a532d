"""The pipeline's Lambda handlers (FetchResults, ProcessOrder) on the local container, and which
failures they turn into TransientFailure, the error name the state machine retries."""

from __future__ import annotations

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
from energy_auction.orders import Order, OrderStatus
from tests import builders
from tests.builders import key

from ..metrics import published_metrics

RUN = "run-20270115T080000Z-cccc"


def client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


class MemoryWorkStore:
    def __init__(self, error: BaseException | None = None) -> None:
        self.written: dict[str, list[dict[str, Any]]] = {}
        self.error = error

    def write_items(self, run_id: str, items: Sequence[dict[str, Any]]) -> dict[str, str]:
        if self.error is not None:
            raise self.error
        self.written[run_id] = list(items)
        return {"bucket": "work-bucket", "key": f"work/runs/{run_id}/results.json"}


class FailingOrderStore:
    """The real store, except that listing pending orders raises ``error``."""

    def __init__(self, inner: Any, error: BaseException) -> None:
        self._inner = inner
        self._error = error

    def pending_orders(self, now: int, run_id: str | None = None) -> list[Order]:
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class FailingResultStore:
    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        self.calls += 1
        raise self.error


def install(
    container: Container, *, market: Any = None, work: Any = None, **components: Any
) -> MemoryWorkStore:
    """Install, for the handlers, ``container`` with a market and a work store (and any other
    ``components``) of the test's; returns the work store."""
    work_store = work or MemoryWorkStore()
    given = {"order_store": container.order_store, **components}
    bootstrap.use(
        Container(
            container.settings,
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


def invoke_process(event: dict[str, Any]) -> Any:
    # Step Functions hands the handler JSON; Lambda's runtime parses its numbers as floats.
    parsed = json.loads(codec.dumps(event))
    return process_order.handler(parsed, LocalLambdaContext("process-order"))


def fetched_items(container: Container, count: int, market: SimulatedMarket) -> list[dict[str, Any]]:
    """Run FetchResults through its handler and return the items it staged."""
    store_orders(container, count)
    work = install(container, market=market)
    invoke_fetch()
    return work.written[RUN]


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
        ({"run_id": RUN, "action": "release_run"}, {"OrdersReleased": [0]}),
    ],
    ids=["not-ready", "nothing-to-redeliver", "nothing-to-release"],
)
def test_every_fetch_results_action_publishes_a_metric_even_when_it_has_nothing_to_do(
    local_container: Container,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    event: dict[str, Any],
    expected: dict[str, list[int]],
) -> None:
    # Given a market that is not ready, no notice overdue, and no order claimed by the run
    install(local_container, market=SimulatedMarket(ready_probability=0.0, seed=1))

    # When each action runs
    with published_metrics(monkeypatch, capsys) as published:
        fetch_results.handler(event, LocalLambdaContext("fetch-results"))

    # Then it publishes what it did (a zero is a data point), and Powertools warns of nothing
    assert published.metrics == expected
    assert published.warnings == []


def test_fetch_ready_answer_is_plain_json_without_decimals(local_container: Container) -> None:
    # Given pending orders with exact (Decimal) volumes, and a ready market
    store_orders(local_container, 10)
    work = install(local_container, market=SimulatedMarket(1.0, 0.5, seed=3))

    # When the handler runs
    answer = invoke_fetch()

    # Then the answer serialises with the standard json module (no Decimal leaks into it)
    assert json.loads(json.dumps(answer)) == answer
    assert answer["results"] is True
    assert answer["count"] == 10
    assert answer["accepted"] + answer["rejected"] == 10
    assert answer["items"] == {"bucket": "work-bucket", "key": f"work/runs/{RUN}/results.json"}
    # And the exact numbers went to the work items instead
    assert len(work.written[RUN]) == 10
    assert {Decimal(item["parameter_2"]) for item in work.written[RUN]} == {
        Decimal(f"{i}.1000000000000000000001") for i in range(len(work.written[RUN]))
    }


def test_fetch_with_nothing_pending_answers_count_zero(local_container: Container) -> None:
    install(local_container, market=SimulatedMarket(1.0, 1.0, seed=3))
    answer = invoke_fetch()
    assert json.loads(json.dumps(answer)) == {"results": True, "run_id": RUN, "attempt": 1, "count": 0}


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
    install(local_container, work=MemoryWorkStore(error))

    # When the handler runs
    with pytest.raises(TransientFailure) as raised:
        invoke_fetch()

    # Then it raises the error name the state machine retries, chained to the cause
    assert type(raised.value).__name__ == "TransientFailure"
    assert raised.value.__cause__ is error


def test_fetch_turns_storage_unavailable_into_transient_failure(local_container: Container) -> None:
    # Given the order store kept failing
    unavailable = StorageUnavailable()
    install(local_container, order_store=FailingOrderStore(local_container.order_store, unavailable))

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
    install(local_container, work=MemoryWorkStore(error))

    # When the handler runs
    with pytest.raises(ClientError) as raised:
        invoke_fetch()

    # Then the ClientError itself propagates, so the state machine does not retry it
    assert raised.value is error
    assert not isinstance(raised.value, TransientFailure)


# --- ProcessOrder handler


def test_process_accepted_returns_the_result_key(local_container: Container) -> None:
    # Given an accepted result staged by FetchResults
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
    # Given a rejected result staged by FetchResults
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
    assert local_container.order_store.pending_orders(now) == []

    # When the state machine asks to release it
    answer = invoke_process({"action": "release", "result": item, "run_id": RUN})

    # Then it is pending and unclaimed again
    assert answer == {"record_id": "o0", "status": "released"}
    assert [o.record_id for o in local_container.order_store.pending_orders(now)] == ["o0"]


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
