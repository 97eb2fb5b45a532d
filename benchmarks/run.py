"""``make bench``: measure the service and write a JSON report (never timed assertions in tests).

Sections:
- intake_http: POST /orders against the local stack (a real process) from a concurrent client;
- dynamodb_writes: DynamoDB write API calls per stored order (botocore event hooks, on moto);
- listing: GET /orders page latency on the local stack, and calls and read units per page on
  DynamoDB (``benchmarks/listing.py``);
- import_ms: import time of the handler modules in a fresh interpreter, in Lambda's environment
  (tracing on, the X-Ray SDK on its Lambda path);
- pipeline, pipeline_local, staging: the package's ASL on moto's interpreter (the AWS adapters on
  moto, and the local stack) and FetchResults' staging alone (``benchmarks/pipeline.py``).

``--only SECTION`` (``make bench ONLY=pipeline``) measures one section again and keeps the others
from the report; ``measured`` says when each section was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.stack import LocalStack  # noqa: E402

from benchmarks.pipeline import STEP_FUNCTIONS_PAYLOAD_LIMIT  # noqa: E402

TARGETS = {
    "dynamodb_write_calls_per_order_max": 0.05,
    "p99_ms_100_order_post_max": 100.0,
    "authorizer_import_ms_max": 150.0,
    "api_import_ms_max": 400.0,
    "pipeline_local_10k_seconds_max": 60.0,
}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bench_intake_http(requests: int, orders_per_request: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        stack = LocalStack(home=Path(home)).start()
        try:
            token = stack.token()

            def post(n: int) -> float:
                orders = [
                    {
                        "record_id": f"b{orders_per_request}-{n}-{i}",
                        "parameter_1": "bench",
                        "parameter_2": i + 0.5,
                    }
                    for i in range(orders_per_request)
                ]
                body = json.dumps(orders)
                start = time.perf_counter()
                response = stack.post_orders(None, token, raw=body)
                elapsed = time.perf_counter() - start
                if response.status != 201:
                    raise RuntimeError(f"POST failed: {response.status} {response.body[:200]!r}")
                return elapsed

            for n in range(10):  # warm-up
                post(-n - 1)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=workers) as pool:
                latencies = list(pool.map(post, range(requests)))
            wall = time.perf_counter() - started
        finally:
            stack.stop()
    return {
        "requests": requests,
        "orders_per_request": orders_per_request,
        "client_workers": workers,
        "orders_per_second": round(requests * orders_per_request / wall, 1),
        "requests_per_second": round(requests / wall, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


WRITE_OPERATIONS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def bench_dynamodb_writes(requests: int) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    import boto3
    from moto import mock_aws
    from tests.adapters.stores import create_orders_table

    from energy_auction.adapters.aws import DynamoDbOrderStore
    from energy_auction.intake import Caller, submit_orders
    from energy_auction.orders import Limits

    calls: dict[str, int] = {}

    def count(model: Any, **_: Any) -> None:
        calls[model.name] = calls.get(model.name, 0) + 1

    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_orders_table(client, "orders")
        client.meta.events.register("before-call.dynamodb.*", count)
        store = DynamoDbOrderStore(client, "orders")
        stored = 0
        for n in range(requests):
            orders = [{"record_id": f"w{n}-{i}", "parameter_1": "x", "parameter_2": i} for i in range(100)]
            receipt = submit_orders(json.dumps(orders), Caller("bench"), store, Limits(), time.time())
            stored += len(receipt.orders)
    writes = sum(v for k, v in calls.items() if k in WRITE_OPERATIONS)
    return {
        "requests": requests,
        "orders_per_request": 100,
        "orders_stored": stored,
        "write_calls": writes,
        "calls_by_operation": calls,
        "write_calls_per_order": round(writes / stored, 4),
    }


def lambda_environment() -> dict[str, str]:
    """The environment a handler imports in on Lambda, as far as the import depends on it.

    ``LAMBDA_TASK_ROOT`` makes the X-Ray SDK take its Lambda path (the sampling decision comes with
    the invocation); outside Lambda it builds two X-Ray API clients for centralized sampling at
    import, which no deployed function does. Tracing is on, as deployed (``infra/functions.py``
    sets no ``POWERTOOLS_TRACE_DISABLED``).
    """
    env = {k: v for k, v in os.environ.items() if k != "POWERTOOLS_TRACE_DISABLED"}
    env.update(
        LAMBDA_TASK_ROOT=str(ROOT / "src"),
        AWS_LAMBDA_FUNCTION_NAME="energy-auction-bench",
        AWS_REGION="eu-west-1",
        POWERTOOLS_SERVICE_NAME="energy-auction",
    )
    return env


def bench_import_ms(module: str, runs: int) -> dict[str, Any]:
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
    env = lambda_environment()
    samples = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
            ).stdout
        )
        for _ in range(runs)
    ]
    return {
        "module": module,
        "runs": runs,
        "min_ms": round(min(samples), 1),
        "median_ms": round(statistics.median(samples), 1),
        "max_ms": round(max(samples), 1),
        "instructions": import_instructions(module, env),
    }


def import_instructions(module: str, env: dict[str, str]) -> int | None:
    """Instructions the import executes (valgrind's callgrind, interpreter start subtracted).

    This machine's speed drifts by up to 1.6x between minutes, so milliseconds compare badly across
    runs and commits; an instruction count is the same every time for the same code. None where
    valgrind is not installed.
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None

    def count(code: str) -> int:
        out = subprocess.run(
            [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stderr
        return int(out.rsplit("Collected :", 1)[1].split()[0])

    return count(f"import {module}") - count("pass")


def _intake(scale: float) -> dict[str, Any]:
    return {
        "intake_http": [
            bench_intake_http(int(2000 * scale), 1, 8),
            bench_intake_http(int(300 * scale), 100, 8),
        ]
    }


def _dynamodb(scale: float) -> dict[str, Any]:
    return {"dynamodb_writes": bench_dynamodb_writes(int(20 * scale) or 1)}


def _listing(scale: float) -> dict[str, Any]:
    from benchmarks.listing import bench_listing_dynamodb, bench_listing_http

    return {
        "listing": {
            "http": bench_listing_http(per_trader=max(100, int(1000 * scale))),
            "dynamodb": bench_listing_dynamodb(per_trader=max(100, int(1000 * scale))),
        }
    }


def machine_reference_seconds() -> float:
    """The best of three runs of a fixed pure-Python loop (the sum of ten million squares), in
    this process: how fast the machine is at the moment. Beside a wall time it tells a slow moment
    of a shared machine from a slower program."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(10_000_000))
        timings.append(time.perf_counter() - started)
    return round(min(timings), 3)


def _pipeline(scale: float) -> dict[str, Any]:
    from benchmarks.pipeline import bench_pipeline, bench_pipeline_aws, bench_staging

    with contextlib.redirect_stdout(sys.stderr):  # the handlers' log and metric lines
        return {
            # The AWS adapters on moto: calls per order (what benchmarks/aws_model.py reads),
            # memory. Per-order counts do not depend on N, and moto's DynamoDB slows down with the
            # table: 1,000 orders (the model takes the entry nearest each N).
            "pipeline": [bench_pipeline_aws(max(10, int(1_000 * scale)))],
            # The local stack as a user runs it (SQLite, the default settings): wall time.
            # (each with the machine's reference loop timed just before it)
            "pipeline_local": [
                {
                    "machine_reference_seconds": machine_reference_seconds(),
                    **bench_pipeline(max(10, int(n * scale))),
                }
                for n in (1_000, 10_000)
            ],
            # FetchResults' staging alone at 10,000 to 1,000,000 orders: memory bounded, whatever N.
            "staging": [bench_staging(max(100, int(n * scale))) for n in (10_000, 100_000, 1_000_000)],
        }


def _imports(scale: float) -> dict[str, Any]:
    return {
        "import_ms": {
            "authorizer": bench_import_ms("energy_auction.handlers.authorizer", 11),
            "api": bench_import_ms("energy_auction.handlers.api", 11),
        }
    }


SECTIONS: dict[str, tuple[tuple[str, ...], Callable[[float], dict[str, Any]]]] = {
    "intake": (("intake_http",), _intake),
    "dynamodb": (("dynamodb_writes",), _dynamodb),
    "listing": (("listing",), _listing),
    "pipeline": (("pipeline", "pipeline_local", "staging"), _pipeline),
    "imports": (("import_ms",), _imports),
}
"""The report's sections (``--only``): the keys each writes, and what measures it."""


def verdict(report: dict[str, Any]) -> dict[str, bool]:
    """Each target, met or not, from the report's figures."""
    from energy_auction.adapters.aws import WORK_PART_BYTES

    hundred = report["intake_http"][1]
    return {
        "dynamodb_write_calls_per_order": report["dynamodb_writes"]["write_calls_per_order"]
        <= TARGETS["dynamodb_write_calls_per_order_max"],
        "p99_ms_100_order_post": hundred["p99_ms"] <= TARGETS["p99_ms_100_order_post_max"],
        "authorizer_import_ms": report["import_ms"]["authorizer"]["median_ms"]
        <= TARGETS["authorizer_import_ms_max"],
        "api_import_ms": report["import_ms"]["api"]["median_ms"] <= TARGETS["api_import_ms_max"],
        "pipeline_parent_history_independent_of_orders": len(
            {run["parent_history_events"] for run in report["pipeline"] + report["pipeline_local"]}
        )
        == 1,
        "pipeline_largest_payload_under_256kb": all(
            run["largest_state_payload_bytes"] < STEP_FUNCTIONS_PAYLOAD_LIMIT for run in report["pipeline"]
        ),
        "pipeline_local_10k_seconds": report["pipeline_local"][-1]["wall_seconds"]
        <= TARGETS["pipeline_local_10k_seconds_max"],
        # Staging buffers one multipart part (and its copy) at most, whatever the number of orders.
        "staging_memory_bounded_by_the_part_size": all(
            run["peak_memory_kib"] <= 2.5 * WORK_PART_BYTES / 1024 for run in report["staging"]
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "report.json")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="measure only this section (repeatable); the others are kept from the report in --out",
    )
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    chosen = args.only or list(SECTIONS)
    kept: dict[str, Any] = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    missing = [s for s in SECTIONS if s not in chosen and not all(k in kept for k in SECTIONS[s][0])]
    if missing:
        parser.error(f"{args.out} has no {', '.join(missing)} to keep: measure everything once first")

    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "targets": TARGETS,
    }
    for section, (keys, measure) in SECTIONS.items():
        if section not in chosen:
            report.update({key: kept[key] for key in keys})
            continue
        print(f"{section} ...", file=sys.stderr)
        report.update(measure(scale))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["measured"] = {**kept.get("measured", {}), **dict.fromkeys(chosen, now)}  # when, per section
    report["verdict"] = verdict(report)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
