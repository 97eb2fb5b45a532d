"""The cost and time model of the auction pipeline on AWS: ``python -m benchmarks.aws_model``.

It is a model, not a measurement: per-order work (AWS calls, Lambda invocations, state transitions,
child executions) comes from ``make bench``'s report when one is given (``--report``, by default
``benchmarks/report.json`` if it exists) and from the design's own table otherwise
(``infra.capacity.design_per_order``); every quota, latency, size and price is a field of
``infra.capacity.Assumptions``, with its source (``--assumptions`` lists them). The pipeline's
settings are the current defaults, read from ``infra.config.StageConfig`` (and so from
``energy_auction.settings.Settings``).

Time to settle N ready orders, the market ready at the first attempt: RedeliverNotices, then
FetchResults (its pages of the pending-orders index and its multipart upload, one after the
other), then the Distributed Map at the least of the rate limits (``infra.capacity.LIMITS``) plus
one batch's run as it drains, then SummariseRun and the summary publish. Each not-ready attempt
adds ``pipeline_retry_seconds`` and a FetchResults call (``--not-ready``). What one run settles
is the most orders that fit ``pipeline_timeout_seconds`` after the longest wait for the market
(``pipeline_max_attempts`` - 1 retries), and at most ``pipeline_max_orders``; a larger N takes
more runs, modelled back to back.

Cost: every service the run and its notices use, without free tiers: Step Functions (the parent's
Standard transitions, one per child started; EXPRESS requests and duration), Lambda (requests and
Arm GB-seconds, each task billed for its whole pessimistic task time), DynamoDB (request units,
the indexes' writes included; the notifier's two writes per notice), S3 (requests), SNS
(publishes) and SQS (the notices' queue: a send, and a receive and a delete per ten). The notifier is
billed per batch the event source mapping hands it (what arrives in its batching window at the
run's rejection rate, at most the deployed batch size) and for its two writes per notice. Not
modelled: CloudWatch Logs and X-Ray (the state machine logs ALL and every function is traced),
the results' storage, the queue's empty polls, data transfer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from infra.capacity import (
    LIMITS,
    PARENT_STATES_PER_NOT_READY,
    Assumptions,
    PerOrder,
    Shape,
    batch_seconds,
    claim_and_tally_seconds,
    design_per_order,
    lambda_seconds_per_order,
    notices_per_notifier_invocation,
    pending_pages,
    process_order_billed_seconds,
    rate_limits,
    staged_part_bytes,
    staged_parts,
    units_per_order,
)
from infra.config import StageConfig

from energy_auction.adapters.aws import CLAIM_WORKERS, PENDING_SHARDS

ORDERS = (10_000, 100_000, 1_000_000)
DEFAULT_REPORT = Path(__file__).resolve().with_name("report.json")
NOTIFIER_WRITES_PER_NOTICE = 2
"""The notifier takes a notice's delivery on its order, then records it delivered (README,
"Exactly once, whatever dies": an outbox for rejection notices)."""
EXPRESS_BILLING_STEP_SECONDS = 0.1
"""EXPRESS duration is rounded up to the next 100 ms (Step Functions pricing)."""
MB_PER_GB = 1024


def stream_seconds(orders: int, a: Assumptions) -> float:
    """FetchResults' streaming read: the index's pages, then each part's upload, one at a time."""
    pages = pending_pages(orders, a)
    parts = staged_parts(orders, a)
    part_bytes = min(staged_part_bytes(orders, a), orders * a.staged_key_bytes)
    upload = parts * (a.s3_request_seconds + part_bytes / a.s3_upload_bytes_per_second)
    return pages * a.query_page_seconds + upload + 2 * a.s3_request_seconds  # create, complete


STATE_MACHINE_CALLS = ("sns.Publish", "s3.GetObject")
"""Calls the state machine makes itself (its sns:publish tasks, the Distributed Map's ItemReader):
the benchmark counts the handlers' calls only, so these always come from the design."""


def measured_per_order(report: Mapping[str, Any], orders: int, design: PerOrder) -> tuple[PerOrder, str]:
    """The design's per-order work with what the report measured in its place: the report entry
    nearest ``orders`` (on a log scale) among those that measured any of it."""
    entries = [e for e in report.get("pipeline") or [] if isinstance(e, dict) and e.get("orders")]
    usable = [e for e in entries if _measured_fields(e)]
    if not usable:
        return design, "design"
    entry = min(usable, key=lambda e: abs(math.log(float(e["orders"]) / orders)))
    measured = _measured_fields(entry)
    transitions = entry.get("state_transitions_per_order")
    parent = transitions.get("parent") if "parent_transitions" in measured and transitions else None
    result = PerOrder(
        aws_calls=(
            {
                **{call: design.aws_calls[call] for call in STATE_MACHINE_CALLS if call in design.aws_calls},
                **entry["aws_calls_per_order"],
            }
            if "aws_calls" in measured
            else design.aws_calls
        ),
        lambda_invocations=(
            entry["lambda_invocations_per_order"]
            if "lambda_invocations" in measured
            else design.lambda_invocations
        ),
        parent_transitions=float(parent) if parent is not None else design.parent_transitions,
        child_executions=(
            float(entry["child_executions_per_order"])
            if "child_executions" in measured
            else design.child_executions
        ),
    )
    return (
        result,
        f"report ({int(entry['orders']):,} orders: {', '.join(sorted(measured))}; the rest: design)",
    )


def _measured_fields(entry: Mapping[str, Any]) -> set[str]:
    """Which of the per-order figures a report entry holds in the shape the model reads."""
    found = set()
    if isinstance(entry.get("aws_calls_per_order"), dict):
        found.add("aws_calls")
    if isinstance(entry.get("lambda_invocations_per_order"), dict):
        found.add("lambda_invocations")
    transitions = entry.get("state_transitions_per_order")
    if isinstance(transitions, dict) and isinstance(transitions.get("parent"), int | float):
        found.add("parent_transitions")
    if isinstance(entry.get("child_executions_per_order"), int | float):
        found.add("child_executions")
    return found


def estimate(
    orders: int,
    config: StageConfig,
    assumptions: Assumptions | None = None,
    report: Mapping[str, Any] | None = None,
    not_ready: int = 0,
) -> dict[str, Any]:
    """Time to settle and cost of ``orders`` ready orders for a stage, and what bounds them.

    ``assumptions`` replaces the whole table, quotas included; by default it is the stage's
    (``StageConfig.assumptions``: the defaults with the stage's quotas)."""
    a = assumptions or config.assumptions()
    shape = config.shape()
    design = design_per_order(orders, shape, a)
    per, counts = measured_per_order(report, orders, design) if report else (design, "design")
    available = a.lambda_concurrency - config.lambda_concurrency_reserve
    limits = rate_limits(shape, a, available, per.aws_calls)
    first = min(limits, key=lambda name: limits[name])
    throughput = limits[first]
    batch = batch_seconds(shape, a)

    def run_seconds(n: int, attempts_not_ready: int) -> float:
        polling = attempts_not_ready * (config.pipeline_retry_seconds + a.lambda_task_seconds)
        redeliver = a.lambda_task_seconds + PENDING_SHARDS * a.item_call_seconds
        fetch = a.lambda_task_seconds + stream_seconds(n, a)
        settle = n / throughput + batch if n else 0.0
        summarise = 2 * a.lambda_task_seconds + a.item_call_seconds  # SummariseRun, the publish
        return polling + redeliver + fetch + settle + summarise

    # The most orders one run settles: after the longest wait for the market, within the timeout.
    waits = config.pipeline_max_attempts - 1
    low, high = 0, 10 * max(orders, config.pipeline_max_orders)
    while low < high:
        middle = (low + high + 1) // 2
        if run_seconds(middle, waits) <= config.pipeline_timeout_seconds:
            low = middle
        else:
            high = middle - 1
    per_run = min(config.pipeline_max_orders, low)
    feasible = batch <= a.express_seconds and per_run > 0
    if not feasible:
        first, runs = "express_child_duration" if batch > a.express_seconds else "execution_timeout", 0
        settle_seconds = None
    elif orders > per_run:
        first = "max_orders" if config.pipeline_max_orders <= low else "execution_timeout"
        runs = math.ceil(orders / per_run)
        last = orders - (runs - 1) * per_run
        settle_seconds = (runs - 1) * run_seconds(per_run, not_ready) + run_seconds(last, not_ready)
    else:
        runs = 1
        settle_seconds = run_seconds(orders, not_ready)

    cost = _cost(orders, a=a, shape=shape, per=per, batch=batch, not_ready=not_ready, throughput=throughput)
    units = units_per_order(per.aws_calls, shape, a)
    total = sum(cost.values())
    return {
        "orders": orders,
        "settle_seconds": None if settle_seconds is None else round(settle_seconds, 1),
        "cost_usd": round(total, 4),
        "first_limit": first,
        "bound_by": LIMITS.get(first, _ENDS.get(first, "")),
        "throughput_orders_per_second": round(throughput, 1),
        "limits_orders_per_second": {name: round(value, 1) for name, value in limits.items()},
        "seconds": {
            "stream_keys": round(stream_seconds(orders, a), 1),
            "settle_orders": round(orders / throughput, 1),
            "batch": round(batch, 2),
            "not_ready_wait": not_ready * config.pipeline_retry_seconds,
            "longest_market_wait": waits * config.pipeline_retry_seconds,
        },
        "orders_per_run": per_run,
        "orders_within_timeout": low,
        "runs": runs,
        "cost": {name: round(value, 4) for name, value in cost.items()},
        "orchestration_usd": round(cost["step_functions"], 4),
        "cost_per_million_orders_usd": round(total / orders * 1e6, 2),
        "peak": {
            "lambda_concurrency": round(throughput * lambda_seconds_per_order(shape, a)),
            "lambda_concurrency_available": available,
            "dynamodb_write_units_per_second": round(throughput * units.table_writes),
            "dynamodb_read_units_per_second": round(throughput * units.table_reads),
            "s3_puts_per_second": round(throughput * per.aws_calls.get("s3.PutObject", 0.0)),
            "sns_publishes_per_second": round(throughput * shape.rejected_share),
        },
        "per_order": {
            "counts": counts,
            "aws_calls": {name: round(value, 6) for name, value in sorted(per.aws_calls.items())},
            "lambda_invocations": dict(per.lambda_invocations),
            "parent_transitions": round(per.parent_transitions, 6),
            "child_executions": round(per.child_executions, 6),
            "dynamodb_units": {
                "table_writes": round(units.table_writes, 4),
                "table_reads": round(units.table_reads, 4),
                "index_writes": round(units.index_writes, 4),
                "index_reads": round(units.index_reads, 4),
            },
        },
        "settings": {
            "pipeline_max_concurrency": shape.max_concurrency,
            "pipeline_batch_size": shape.batch_size,
            "pipeline_batch_concurrency": shape.batch_concurrency,
            "pipeline_max_orders": config.pipeline_max_orders,
            "pipeline_timeout_seconds": config.pipeline_timeout_seconds,
            "rejected_share": round(shape.rejected_share, 4),
            "lambda_concurrency_quota": a.lambda_concurrency,
            "lambda_concurrency_reserve": config.lambda_concurrency_reserve,
            "dynamodb_write_units_per_second": a.dynamodb_write_units,
            "dynamodb_read_units_per_second": a.dynamodb_read_units,
        },
    }


_ENDS = {
    "max_orders": "pipeline_max_orders: one run takes no more; the rest wait for the next run",
    "execution_timeout": "pipeline_timeout_seconds, after the longest wait for the market",
    "express_child_duration": "a batch runs past an EXPRESS child's 5 minutes",
}


def notifier_seconds(notices: float, invocations: int, a: Assumptions) -> float:
    """The notifier's billed time: each invocation's digest, and its notices' two conditional
    writes each on their orders: all the batch's claims, then all its records, ``CLAIM_WORKERS``
    at a time (``OrderStore.claim_notices``, ``finish_notices``)."""
    if invocations <= 0:
        return 0.0
    round_trips = math.ceil(notices / invocations / CLAIM_WORKERS) * NOTIFIER_WRITES_PER_NOTICE
    return invocations * (a.notifier_invocation_seconds + round_trips * a.item_call_seconds)


def _cost(
    orders: int,
    *,
    a: Assumptions,
    shape: Shape,
    per: PerOrder,
    batch: float,
    not_ready: int,
    throughput: float,
) -> dict[str, float]:
    n = orders
    calls = {name: value * n for name, value in per.aws_calls.items()}
    children = per.child_executions * n
    transitions = per.parent_transitions * n + not_ready * PARENT_STATES_PER_NOT_READY
    express_seconds = math.ceil(batch / EXPRESS_BILLING_STEP_SECONDS) * EXPRESS_BILLING_STEP_SECONDS
    step_functions = (
        transitions * a.sfn_transition_usd
        + children * a.express_request_usd
        + children * express_seconds * a.express_memory_mb / MB_PER_GB * a.express_gb_second_usd
    )

    notices = n * shape.rejected_share
    per_invocation = notices_per_notifier_invocation(throughput * shape.rejected_share)
    notifier_invocations = math.ceil(notices / per_invocation)
    invocations = n * sum(per.lambda_invocations.values()) + not_ready + notifier_invocations
    fetch_tasks = 3 + not_ready  # RedeliverNotices, FetchResults, SummariseRun; retries of FetchResults
    gb_seconds = (
        n
        * per.lambda_invocations.get("process_order", 0.0)
        * process_order_billed_seconds(shape, a)
        * a.process_order_memory_mb
        + (children * claim_and_tally_seconds(shape, a) + fetch_tasks * a.lambda_task_seconds)
        * a.fetch_results_memory_mb
        + stream_seconds(n, a) * a.fetch_results_memory_mb
        + notifier_seconds(notices, notifier_invocations, a) * a.notifier_memory_mb
    ) / MB_PER_GB
    lambda_ = invocations * a.lambda_request_usd + gb_seconds * a.lambda_gb_second_usd

    units = units_per_order(per.aws_calls, shape, a)
    notifier_writes = notices * NOTIFIER_WRITES_PER_NOTICE * math.ceil(a.order_item_kib)
    dynamodb = (n * (units.table_writes + units.index_writes) + notifier_writes) * a.dynamodb_wru_usd + n * (
        units.table_reads + units.index_reads
    ) * a.dynamodb_rru_usd

    puts = sum(
        calls.get(name, 0.0)
        for name in (
            "s3.PutObject",
            "s3.CreateMultipartUpload",
            "s3.UploadPart",
            "s3.CompleteMultipartUpload",
        )
    )
    s3 = puts * a.s3_put_usd + calls.get("s3.GetObject", 0.0) * a.s3_get_usd

    sns = calls.get("sns.Publish", 0.0) * a.sns_publish_usd + notices * a.sns_to_sqs_delivery_usd
    # Every notice is sent to the queue (counted as a request, pessimistically), then received and
    # deleted at most ten a request, however large the notifier's batch.
    sqs = (notices + 2 * math.ceil(notices / a.sqs_messages_per_request)) * a.sqs_request_usd
    return {
        "step_functions": step_functions,
        "lambda": lambda_,
        "dynamodb": dynamodb,
        "s3": s3,
        "sns": sns,
        "sqs": sqs,
    }


def load_report(path: Path | None) -> dict[str, Any] | None:
    """The benchmark report at ``path``, or None when there is none."""
    if path is None or not path.is_file():
        return None
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else None


def model(
    config: StageConfig | None = None,
    assumptions: Assumptions | None = None,
    report: Mapping[str, Any] | None = None,
    orders: Sequence[int] = ORDERS,
    not_ready: int = 0,
) -> list[dict[str, Any]]:
    """One estimate per N, for a stage (default: the defaults, stage ``model``)."""
    stage = config or StageConfig(stage="model")
    return [estimate(n, stage, assumptions, report, not_ready) for n in orders]


def render(estimates: Sequence[Mapping[str, Any]]) -> str:
    """A readable table of the estimates."""
    lines = []
    first = estimates[0]["settings"]
    lines.append(
        "Pipeline on AWS (modelled): "
        + ", ".join(
            f"{key}={value:,}" if isinstance(value, int) else f"{key}={value}" for key, value in first.items()
        )
    )
    lines.append(f"per-order work: {estimates[0]['per_order']['counts']}")
    lines.append("")
    header = (
        f"{'orders':>10} {'settle s':>9} {'orders/s':>9} {'first limit':<20} "
        f"{'cost $':>9} {'$/1M':>8} {'orch. $':>9}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for e in estimates:
        settle = "-" if e["settle_seconds"] is None else f"{e['settle_seconds']:,.0f}"
        lines.append(
            f"{e['orders']:>10,} {settle:>9} {e['throughput_orders_per_second']:>9,.0f} "
            f"{e['first_limit']:<20} {e['cost_usd']:>9.2f} {e['cost_per_million_orders_usd']:>8.2f} "
            f"{e['orchestration_usd']:>9.3f}"
        )
    last = estimates[-1]
    lines.append("")
    lines.append(f"cost of {last['orders']:,} orders by service (USD):")
    for name, value in last["cost"].items():
        lines.append(f"  {name:<16} {value:>9.3f}")
    lines.append("")
    lines.append("rate limits (orders/s; the least binds):")
    for name, value in sorted(last["limits_orders_per_second"].items(), key=lambda item: item[1]):
        lines.append(f"  {name:<22} {value:>12,.0f}  {LIMITS[name]}")
    lines.append("")
    lines.append(
        f"one run settles at most {last['orders_per_run']:,} orders (pipeline_max_orders, or what fits "
        "pipeline_timeout_seconds after the longest wait for the market); "
        f"a batch runs {last['seconds']['batch']} s"
    )
    return "\n".join(lines)


def render_assumptions() -> str:
    lines = [f"{'name':<34} {'value':>14}  unit; source"]
    for row in Assumptions.table():
        lines.append(f"{row['name']:<34} {row['value']!s:>14}  {row['unit']}; {row['source']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per N")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help=f"make bench's report, for per-order counts (default: {DEFAULT_REPORT.name} if it exists)",
    )
    parser.add_argument("--no-report", action="store_true", help="use the design's per-order counts only")
    parser.add_argument(
        "--not-ready", type=int, default=0, help="not-ready attempts before the market is ready"
    )
    parser.add_argument("--orders", type=int, nargs="+", default=list(ORDERS), help="the N to model")
    parser.add_argument("--assumptions", action="store_true", help="list every assumption with its source")
    args = parser.parse_args(argv)
    if args.assumptions:
        print(render_assumptions())
        return 0
    if args.report is not None and not args.report.is_file():
        parser.error(f"no report at {args.report}")
    report = None if args.no_report else load_report(args.report or DEFAULT_REPORT)
    estimates = model(report=report, orders=args.orders, not_ready=args.not_ready)
    print(json.dumps(estimates, indent=2) if args.json else render(estimates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
