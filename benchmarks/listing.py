"""``make bench``'s listing section: GET /orders page latency on the local stack, and what a page
costs on DynamoDB.

- ``bench_listing_http``: 10 traders with 1,000 orders each on the local stack (a real process);
  every trader walks their whole listing (default page of 50), and an operator walks everyone's.
  Client-side latency per page, p50 and p99.
- ``bench_listing_dynamodb``: the same book in the DynamoDB store on moto. Calls per page are
  counted (botocore events); read units are modelled from the bytes each call reads, with
  DynamoDB's published rules, as moto reports none:
  * a Query is charged for the total size of the items it reads, rounded up to 4 KB; a
    BatchGetItem for each item's size rounded up to 4 KB
    (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html);
  * both are eventually consistent here (an index cannot be read any other way; the page's batch
    read is asked for so): 0.5 read unit per 4 KB;
  * item size: the UTF-8 lengths of attribute names and values; a number as (significant digits
    / 2 + 1) bytes (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.e2e.stack import LocalStack

TRADERS = 10
ORDERS_PER_TRADER = 1_000


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _book(trader: int, count: int) -> list[list[dict[str, Any]]]:
    orders = [
        {"record_id": f"t{trader}-{i:04}", "parameter_1": "lot", "parameter_2": i + 0.5} for i in range(count)
    ]
    return [orders[i : i + 100] for i in range(0, count, 100)]


def _walk(stack: LocalStack, token: str) -> tuple[list[float], int]:
    latencies: list[float] = []
    listed = 0
    query: dict[str, str] = {}
    while True:
        target = "/orders" + (f"?{urlencode(query)}" if query else "")
        start = time.perf_counter()
        answer = stack.request("GET", target, headers={"Authorization": f"Bearer {token}"})
        latencies.append(time.perf_counter() - start)
        if answer.status != 200:
            raise RuntimeError(f"GET /orders failed: {answer.status} {answer.body[:200]!r}")
        page = answer.json()
        listed += len(page["orders"])
        if page["next_cursor"] is None:
            return latencies, listed
        query = {"cursor": page["next_cursor"]}


def bench_listing_http(traders: int = TRADERS, per_trader: int = ORDERS_PER_TRADER) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        stack = LocalStack(home=Path(home)).start()
        try:
            tokens = [stack.token("--sub", f"trader-{t}") for t in range(traders)]
            for t, token in enumerate(tokens):
                for batch in _book(t, per_trader):
                    if stack.post_orders(batch, token).status != 201:
                        raise RuntimeError("POST /orders failed")
            trader_pages: list[float] = []
            for token in tokens:
                latencies, listed = _walk(stack, token)
                assert listed == per_trader, listed
                trader_pages += latencies
            operator_pages, listed = _walk(stack, stack.token("--sub", "ops", "--role", "operator"))
            assert listed == traders * per_trader, listed
        finally:
            stack.stop()

    def summary(latencies: list[float]) -> dict[str, Any]:
        return {
            "pages": len(latencies),
            "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
            "mean_ms": round(statistics.mean(latencies) * 1000, 2),
        }

    return {
        "traders": traders,
        "orders_per_trader": per_trader,
        "page_size": 50,
        "trader_pages": summary(trader_pages),
        "operator_pages": summary(operator_pages),
    }


def _value_size(value: dict[str, Any]) -> int:
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        digits = raw.lstrip("-").replace(".", "").lstrip("0") or "0"
        return len(digits) // 2 + 2
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in raw.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in raw)
    return 1


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item (attribute names plus values), in bytes."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def bench_listing_dynamodb(traders: int = TRADERS, per_trader: int = ORDERS_PER_TRADER) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    import boto3
    from moto import mock_aws
    from tests.adapters.stores import create_orders_table, fast_moto_transactions

    from energy_auction.adapters.aws import DynamoDbOrderStore
    from energy_auction.orders import Limits, OrderQuery, new_orders, parse_orders

    units: dict[str, float] = {"query": 0.0, "batch_get": 0.0}
    calls: dict[str, int] = {}

    def charge(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        calls[model.name] = calls.get(model.name, 0) + 1
        if model.name == "Query":
            size = sum(item_size(i) for i in parsed.get("Items", []))
            units["query"] += 0.5 * max(1, math.ceil(size / 4096))
        elif model.name == "BatchGetItem":
            for items in parsed.get("Responses", {}).values():
                units["batch_get"] += sum(0.5 * max(1, math.ceil(item_size(i) / 4096)) for i in items)

    now = time.time()
    with mock_aws(), fast_moto_transactions():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_orders_table(client, "orders")
        store = DynamoDbOrderStore(client, "orders")
        for t in range(traders):
            for batch in _book(t, per_trader):
                requests = parse_orders(json.dumps(batch), Limits())
                store.put_orders(new_orders(requests, now, f"trader-{t}"), int(now))
        client.meta.events.register("after-call.dynamodb.*", charge)

        def walk(trader: str | None) -> tuple[int, int]:
            pages = listed = 0
            before = None
            while True:
                page = store.list_orders(OrderQuery(now=now + 1, trader=trader, before=before))
                pages += 1
                listed += len(page.orders)
                if page.next_before is None:
                    return pages, listed
                before = page.next_before

        results = {}
        for who, trader in (("trader", "trader-0"), ("operator", None)):
            units.update(query=0.0, batch_get=0.0)
            calls.clear()
            pages, listed = walk(trader)
            results[who] = {
                "pages": pages,
                "orders_listed": listed,
                "queries_per_page": round(calls.get("Query", 0) / pages, 2),
                "batch_gets_per_page": round(calls.get("BatchGetItem", 0) / pages, 2),
                "scans": calls.get("Scan", 0),
                "read_units_per_page": round((units["query"] + units["batch_get"]) / pages, 2),
                "read_units_per_page_index": round(units["query"] / pages, 2),
                "read_units_per_page_items": round(units["batch_get"] / pages, 2),
            }
    return {"traders": traders, "orders_per_trader": per_trader, "page_size": 50, **results}
