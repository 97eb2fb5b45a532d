"""What bounds one auction pipeline run on AWS, and what it costs.

Every AWS number the pipeline's defaults depend on (quotas, latencies, prices, sizes) is declared
once here, in :class:`Assumptions`, with its unit and its source; and so are the few formulas that
turn the pipeline's shape (batches of ``pipeline_batch_size`` orders, ``pipeline_max_concurrency``
batches at once, ``pipeline_batch_concurrency`` orders at once in a batch) into a settle rate and
per-order work. Two readers: the synth-time checks of :class:`infra.config.StageConfig`, and the cost
and time model, ``python -m benchmarks.aws_model``. Nothing here imports CDK.

Latencies are the pessimistic (slow) end of each range. Prices are on-demand list prices without
free tiers, for US East (N. Virginia) unless a field says otherwise, as the stored pricing pages
showed them when looked up on 2026-12-01; the stack's default Region is eu-west-1 (Europe
(Ireland)), where Step Functions and Lambda Arm charge the same and the other services' Ireland
prices were not in the stored pages. Quotas that differ by Region are eu-west-1's.

The pipeline modelled (issue 10): a parent (STANDARD) runs Initialise, RedeliverNotices and
FetchResults, which streams the keys of the pending orders (the pending-orders index, 1 MB pages) into
one S3 object (a multipart upload) of batches; a Distributed Map runs one EXPRESS child per batch:
ClaimBatch (one eventually consistent BatchGetItem per 100 orders, then one conditional UpdateItem
per order, ``CLAIM_WORKERS`` at a time, each answering the claimed order), an inline Map of
ProcessOrder per order (GetItem, PutObject for an accepted order, UpdateItem; a rejected order's
notice is an sns:publish task in the same iteration), TallyBatch (a one-item TransactWriteItems on
the run's record); then SummariseRun and one summary publish. The notifier takes the rejections'
notices from the queue in batches (``energy_auction.digest.BATCH_SIZE``, gathered for
``NOTICE_BATCHING_WINDOW_SECONDS``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from energy_auction.adapters.aws import (
    CLAIM_WORKERS,
    EXPIRES_ATTRIBUTE,
    ORDERS_KEY,
    PENDING_SHARD_ATTRIBUTE,
    PENDING_SHARDS,
)
from energy_auction.digest import BATCH_SIZE
from energy_auction.orders import RECORD_ID_MAX_LENGTH, TRADER_KEY_LENGTH
from energy_auction.settings import MAX_ORDERS_CEILING

CALL_ITEMS = MAX_ORDERS_CEILING
"""The most keys one BatchGetItem reads, and the most items one TransactWriteItems call writes (the
limit that also caps an API request at 100 orders)."""
NOTIFIER_BATCH_SIZE = BATCH_SIZE
"""Notices the notifier's event source mapping hands it at most at once (as deployed)."""
NOTICE_BATCHING_WINDOW_SECONDS = 5
"""How long the notifier's event source mapping gathers notices before it invokes the notifier,
unless a batch of ``NOTIFIER_BATCH_SIZE`` fills first (deployed by infra/notifications.py)."""
ORDER_KEY_MAX_BYTES = TRADER_KEY_LENGTH + 1 + RECORD_ID_MAX_LENGTH
"""``<trader key>/<record_id>`` at its longest: what a batch carries per order."""
PENDING_ENTRY_BYTES = (
    len(ORDERS_KEY)
    + ORDER_KEY_MAX_BYTES
    + len(PENDING_SHARD_ATTRIBUTE)
    + 1
    + len(EXPIRES_ATTRIBUTE)
    + 21
    + 100
)
"""A pending-orders index entry (keys only) at its longest, with 100 bytes taken for overhead."""
PARENT_STATES = 8
"""States a ready run's parent enters besides the children: Initialise, RedeliverNotices,
FetchResults, the readiness Choice, ProcessOrders (the Distributed Map), SummariseRun, the summary
publish and the final Succeed. Each not-ready attempt adds three (FetchResults, Choice, Wait)."""
PARENT_STATES_PER_NOT_READY = 3
MIB = 1024 * 1024

# Sources, by the title of the page (and its address) they were read from.
_ISSUE = "issue 10 (the measured-and-modelled assumptions it gives)"
_LAMBDA_QUOTAS = (
    "AWS Lambda Developer Guide, Lambda quotas, https://docs.aws.amazon.com/lambda/latest/dg/"
    "gettingstarted-limits.html; AWS Lambda Operator Guide, Scaling and concurrency: 'All AWS accounts "
    "start with a default concurrent limit of 1000 per Region'"
)
_DDB_ON_DEMAND = (
    "Amazon DynamoDB Developer Guide, Initial throughput for on-demand capacity mode: new on-demand "
    "tables serve 'up to 4,000 write request units or 12,000 read request units, or any linear "
    "combination of the two', https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/"
    "HowItWorks.ReadWriteCapacityMode.html"
)
_DDB_PARTITION = (
    "Amazon DynamoDB Developer Guide, Best practices for designing and using partition keys "
    "(3,000 RCU and 1,000 WCU per partition), https://docs.aws.amazon.com/amazondynamodb/latest/"
    "developerguide/bp-partition-key-design.html"
)
_DDB_UNITS = (
    "Amazon DynamoDB pricing, on-demand, key terms (a strongly consistent read of up to 4 KB is one "
    "RRU, eventually consistent half; a standard write of up to 1 KB one WRU, transactional two), "
    "https://aws.amazon.com/dynamodb/pricing/on-demand/"
)
_DDB_QUERY = (
    "Amazon DynamoDB API Reference, Query: 'A single Query operation can retrieve a maximum of 1 MB "
    "of data', https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Query.html"
)
_DDB_LATENCY = (
    "Amazon DynamoDB Developer Guide, On-demand capacity mode: tables 'deliver the same single-digit "
    "millisecond latency', https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/"
    "on-demand-capacity-mode.html (10 ms: the end of single digits)"
)
_S3_PREFIX = (
    "Amazon S3 User Guide, Best practices design patterns: optimizing Amazon S3 performance (at least "
    "3,500 PUT/COPY/POST/DELETE or 5,500 GET/HEAD requests per second per partitioned prefix), "
    "https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html"
)
_S3_MULTIPART = (
    "Amazon S3 User Guide, Amazon S3 multipart upload limits (parts of 5 MiB to 5 GiB, at most "
    "10,000), https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html"
)
_S3_LATENCY = (
    "Best Practices Design Patterns: Optimizing Amazon S3 Performance, Timeouts and Retries for "
    "Latency-Sensitive Applications (requests under 512 KB: median latency in the tens of "
    "milliseconds), https://docs.aws.amazon.com/whitepapers/latest/s3-optimizing-performance-best-"
    "practices/timeouts-and-retries-for-latency-sensitive-applications.html; 200 ms taken"
)
_SFN_MAP = (
    "AWS Step Functions Developer Guide, Map state: Inline mode 'supports up to 40 concurrent "
    "iterations'; Distributed mode 'up to 10,000 parallel child workflow executions', "
    "https://docs.aws.amazon.com/step-functions/latest/dg/state-map.html"
)
_SFN_QUOTAS = (
    "AWS Step Functions Developer Guide, Step Functions service quotas (execution time, payload "
    "size, state transition throttling), https://docs.aws.amazon.com/step-functions/latest/dg/"
    "service-quotas.html"
)
_SNS_QUOTAS = (
    "AWS General Reference, Amazon Simple Notification Service endpoints and quotas (Publish API "
    "throttling per account), https://docs.aws.amazon.com/general/latest/gr/sns.html"
)
_SFN_PRICING = "AWS Step Functions pricing, https://aws.amazon.com/step-functions/pricing/"
_LAMBDA_PRICING = (
    "AWS Lambda pricing, https://aws.amazon.com/lambda/pricing/ (the page renders its rates in the "
    "browser; the figures as transcribed by artillery's lib/platform/aws-lambda/prices.js, whose base "
    "rate covers eu-west-1, and api-evangelist's aws-lambda plans)"
)
_DDB_PRICING = (
    "Amazon DynamoDB pricing, on-demand, https://aws.amazon.com/dynamodb/pricing/on-demand/ (rates "
    "rendered in the browser; us-east-1 figures as quoted by airbyte.com, DynamoDB pricing, 2025)"
)
_S3_PRICING = (
    "Amazon S3 pricing, https://aws.amazon.com/s3/pricing/ (S3 Standard requests, us-east-1, as "
    "quoted by c3x.dev, S3 request fees explained)"
)
_SNS_PRICING = (
    "Amazon SNS pricing, https://aws.amazon.com/sns/pricing/ (standard topic publishes; as quoted by "
    "factualminds.com, Amazon SNS pricing, 2026-06-13)"
)
_SQS_LIMITS = (
    "Amazon SQS API Reference, ReceiveMessage (MaxNumberOfMessages: 'Valid values: 1 to 10') and "
    "DeleteMessageBatch (at most 10 entries), https://docs.aws.amazon.com/AWSSimpleQueueService/"
    "latest/APIReference/API_ReceiveMessage.html"
)
_SQS_PRICING = (
    "Amazon SQS pricing, https://aws.amazon.com/sqs/pricing/ (standard queue requests, each 64 KB a "
    "request; as quoted by factualminds.com, Amazon SQS pricing, 2026-06-13)"
)


FUNCTION_MEMORY_MB = {"fetch_results": 1024, "process_order": 256, "notify": 256}
"""Memory of the pipeline's functions, as deployed (infra/pipeline.py, infra/notifications.py) and
as the model bills them. ProcessOrder waits on three calls and computes little: 256 MB."""


def _fact(default: Any, unit: str, source: str) -> Any:
    """A field of :class:`Assumptions`: its default, unit and source."""
    return field(default=default, metadata={"unit": unit, "source": source})


@dataclass(frozen=True)
class Assumptions:
    """The model's inputs, each a field with ``unit`` and ``source`` in its metadata.

    Replace fields to ask "what if" (``dataclasses.replace(Assumptions(), lambda_concurrency=500)``);
    :meth:`table` lists them all.
    """

    # Quotas: account defaults; StageConfig takes the adjustable ones as fields, so a stage with a
    # raised quota says so.
    lambda_concurrency: int = _fact(1_000, "concurrent executions, account and Region", _LAMBDA_QUOTAS)
    dynamodb_write_units: int = _fact(4_000, "WRU/s, a new on-demand table", _DDB_ON_DEMAND)
    dynamodb_read_units: int = _fact(12_000, "RRU/s, a new on-demand table", _DDB_ON_DEMAND)
    dynamodb_partition_write_units: int = _fact(1_000, "WRU/s to one item's partition", _DDB_PARTITION)
    dynamodb_query_page_bytes: int = _fact(MIB, "bytes one Query call reads at most", _DDB_QUERY)
    s3_prefix_writes: int = _fact(3_500, "PUT/s per partitioned prefix", _S3_PREFIX)
    s3_min_part_bytes: int = _fact(5 * MIB, "bytes, smallest multipart part but the last", _S3_MULTIPART)
    s3_max_parts: int = _fact(10_000, "parts per multipart upload", _S3_MULTIPART)
    map_max_concurrency: int = _fact(10_000, "Distributed Map children at once", _SFN_MAP)
    inline_map_max_concurrency: int = _fact(40, "inline Map iterations at once", _SFN_MAP)
    express_seconds: int = _fact(300, "seconds an EXPRESS execution may run", _SFN_QUOTAS)
    state_payload_bytes: int = _fact(262_144, "bytes of one state's input or output", _SFN_QUOTAS)
    standard_transitions_per_second: int = _fact(
        1_500, "Standard state transitions/s, eu-west-1 (refill; bucket 5,000)", _SFN_QUOTAS
    )
    sns_publishes_per_second: int = _fact(9_000, "Publish messages/s, eu-west-1, standard", _SNS_QUOTAS)

    # Latencies (pessimistic end of each range).
    lambda_task_seconds: float = _fact(
        0.300,
        "s, one Lambda task in an EXPRESS child, Step Functions' round trip included (ProcessOrder "
        "with its GetItem, PutObject and UpdateItem); also taken for ClaimBatch's and TallyBatch's "
        "invocation and for a notice's sns:publish task",
        f"{_ISSUE}: 'an EXPRESS child with one ProcessOrder call 100-300 ms'",
    )
    handler_seconds: float = _fact(
        0.010,
        "s, a handler's own code per invocation (Powertools, validation, JSON), besides its calls",
        "measured here: ProcessOrder's handler takes 3 ms per order on the local stack, calls "
        "included (benchmarks: handler time); 10 ms taken",
    )
    transact_write_seconds: float = _fact(
        0.030, "s, one TransactWriteItems (TallyBatch's)", f"{_ISSUE}: 10-30 ms"
    )
    batch_get_seconds: float = _fact(0.015, "s, one BatchGetItem", f"{_ISSUE}: 5-15 ms")
    item_call_seconds: float = _fact(0.010, "s, one GetItem, UpdateItem or small Query", _DDB_LATENCY)
    query_page_seconds: float = _fact(
        0.100,
        "s, one 1 MB page of the pending-orders index",
        "assumed (no published figure): ten single-item calls for a page a thousand items long",
    )
    s3_request_seconds: float = _fact(0.200, "s, one S3 request, before its transfer", _S3_LATENCY)
    s3_upload_bytes_per_second: float = _fact(
        50e6, "bytes/s, one upload from a function", "assumed (no published per-connection figure)"
    )

    # Sizes and shapes.
    order_item_kib: float = _fact(
        1.0,
        "KiB, an order item (write units are per KiB: a 256-character parameter_1 makes it 2)",
        "assumed from the item's attributes (README: API fields, the outcome, the claim)",
    )
    index_entry_bytes: int = _fact(
        PENDING_ENTRY_BYTES,
        "bytes, one pending-orders index entry (keys only: the table key, the shard, the expiry)",
        "assumed: the index projects keys only (infra/storage.py: ProjectionType.KEYS_ONLY); attribute "
        "names and values at their longest (a number at most 21 bytes), and 100 bytes of overhead",
    )
    staged_key_bytes: int = _fact(
        ORDER_KEY_MAX_BYTES + 3, "bytes, one order key in the staged JSON", "the key, quotes and comma"
    )
    express_memory_mb: int = _fact(
        64,
        "MB billed per EXPRESS child (billed in 64 MB chunks)",
        f"{_SFN_PRICING}: duration billed 'in 64-MB chunks'; a child's state (one batch of keys) "
        "fits the first chunk (assumed)",
    )
    fetch_results_memory_mb: int = _fact(
        FUNCTION_MEMORY_MB["fetch_results"], "MB, FetchResults (Lambda A)", "FUNCTION_MEMORY_MB (deployed)"
    )
    process_order_memory_mb: int = _fact(
        FUNCTION_MEMORY_MB["process_order"], "MB, ProcessOrder (Lambda B)", "FUNCTION_MEMORY_MB (deployed)"
    )
    notifier_memory_mb: int = _fact(
        FUNCTION_MEMORY_MB["notify"], "MB, the notifier", "FUNCTION_MEMORY_MB (deployed)"
    )
    sqs_messages_per_request: int = _fact(
        10, "messages one ReceiveMessage or DeleteMessageBatch handles at most", _SQS_LIMITS
    )
    notifier_invocation_seconds: float = _fact(
        1.0,
        "s billed per notifier invocation for its Slack digest, besides its two writes per notice",
        "assumed",
    )

    # Prices, USD.
    sfn_transition_usd: float = _fact(
        0.025 / 1000, "per Standard state transition (also Europe (Ireland))", _SFN_PRICING
    )
    express_request_usd: float = _fact(
        1.00 / 1e6,
        "per EXPRESS execution",
        f"{_SFN_PRICING}; figures as quoted by wring.co, AWS Step Functions pricing, 2026-03-14",
    )
    express_gb_second_usd: float = _fact(
        0.00001667,
        "per GB-second of EXPRESS duration (first 1,000 GB-hours a month; 100 ms steps)",
        f"{_SFN_PRICING}; figures as quoted by wring.co, AWS Step Functions pricing, 2026-03-14",
    )
    lambda_request_usd: float = _fact(0.20 / 1e6, "per Lambda invocation", _LAMBDA_PRICING)
    lambda_gb_second_usd: float = _fact(0.0000133334, "per GB-second, Arm (1 ms steps)", _LAMBDA_PRICING)
    dynamodb_wru_usd: float = _fact(0.625 / 1e6, "per write request unit", _DDB_PRICING)
    dynamodb_rru_usd: float = _fact(0.125 / 1e6, "per read request unit", _DDB_PRICING)
    s3_put_usd: float = _fact(0.005 / 1000, "per PUT, COPY, POST or LIST request", _S3_PRICING)
    s3_get_usd: float = _fact(0.0004 / 1000, "per GET request", _S3_PRICING)
    sns_publish_usd: float = _fact(0.50 / 1e6, "per publish (64 KB)", _SNS_PRICING)
    sns_to_sqs_delivery_usd: float = _fact(
        0.0, "per delivery to an SQS subscription", "assumed: SNS lists no delivery fee for SQS"
    )
    sqs_request_usd: float = _fact(0.40 / 1e6, "per request (64 KB)", _SQS_PRICING)

    @classmethod
    def table(cls) -> list[dict[str, Any]]:
        """Every assumption: name, default, unit, source."""
        return [
            {
                "name": spec.name,
                "value": spec.default,
                "unit": spec.metadata["unit"],
                "source": spec.metadata["source"],
            }
            for spec in fields(cls)
        ]


# DynamoDB's billing units, the same for capacity and for price (_DDB_UNITS).
READ_UNIT_BYTES = 4 * 1024
"""A strongly consistent read of up to 4 KB is one read unit; an eventually consistent one half."""
TRANSACTIONAL_WRITE_FACTOR = 2
"""A transactional write costs two write units per KiB of each item."""
EVENTUALLY_CONSISTENT_FACTOR = 0.5
"""An eventually consistent read costs half a strongly consistent one."""


@dataclass(frozen=True)
class Shape:
    """A run's shape: the stage's pipeline settings and the share of orders the market rejects."""

    max_concurrency: int
    batch_size: int
    batch_concurrency: int
    rejected_share: float

    @property
    def calls_per_batch(self) -> int:
        """BatchGetItem calls to read one batch before its claim."""
        return math.ceil(self.batch_size / CALL_ITEMS)

    @property
    def claim_waves(self) -> int:
        """Round trips of a batch's claim: one conditional update per order, ``CLAIM_WORKERS`` at once."""
        return math.ceil(self.batch_size / CLAIM_WORKERS)


@dataclass(frozen=True)
class PerOrder:
    """The work per order of a run, averaged over its orders: what ``make bench`` measures per N."""

    aws_calls: Mapping[str, float]
    """``service.Operation`` -> calls per order."""
    lambda_invocations: Mapping[str, float]
    """Function (``fetch_results``, ``process_order``) -> invocations per order."""
    parent_transitions: float
    """Standard state transitions of the parent per order, a child's start included."""
    child_executions: float


def design_per_order(orders: int, shape: Shape, a: Assumptions) -> PerOrder:
    """The work per order the design does for ``orders`` ready orders (the default table).

    Per order: ClaimBatch's conditional UpdateItem (the claim), ProcessOrder's GetItem and
    UpdateItem, a PutObject for each accepted order and an SNS publish for each rejected one. Per
    batch: ClaimBatch's BatchGetItem (per 100 orders) and TallyBatch's one-item TransactWriteItems;
    one child execution, whose start the parent bills as a transition. Per run: RedeliverNotices'
    query of each owed-notices shard; FetchResults' pages of the pending-orders index and its
    multipart upload; the Distributed Map's GetObject of each part; SummariseRun's GetItem of the
    run's record and the summary publish. An order that expired pending and undecided costs
    one more UpdateItem, once (ClaimBatch retires it from the index); ready orders are live, so
    the design has none.
    """
    n = max(1, orders)
    accepted = 1 - shape.rejected_share
    batches = math.ceil(n / shape.batch_size)
    pages = pending_pages(n, a)
    parts = staged_parts(n, a)
    per_run = {
        "dynamodb.Query": PENDING_SHARDS + pages,
        "dynamodb.GetItem": 1,
        "dynamodb.PutItem": 1,
        "s3.CreateMultipartUpload": 1,
        "s3.UploadPart": parts,
        "s3.CompleteMultipartUpload": 1,
        "s3.GetObject": parts,
        "sns.Publish": 1,
    }
    per_batch = {
        # ClaimBatch reads its orders (eventually consistent); each claim update answers the
        # claimed order itself (ReturnValues ALL_NEW), so nothing is read back.
        "dynamodb.BatchGetItem": shape.calls_per_batch,
        # TallyBatch: a one-item transaction (for its ClientRequestToken).
        "dynamodb.TransactWriteItems": 1,
    }
    per_order = {
        "dynamodb.GetItem": 1,
        # ClaimBatch's claim and ProcessOrder's completion, one conditional update each.
        "dynamodb.UpdateItem": 2,
        "s3.PutObject": accepted,
        "sns.Publish": shape.rejected_share,
    }
    calls: dict[str, float] = {}
    for counts, times in ((per_run, 1.0), (per_batch, batches), (per_order, n)):
        for name, count in counts.items():
            calls[name] = calls.get(name, 0.0) + count * times / n
    return PerOrder(
        aws_calls=calls,
        # RedeliverNotices, FetchResults, SummariseRun; ClaimBatch and TallyBatch per batch.
        lambda_invocations={"fetch_results": (3 + 2 * batches) / n, "process_order": 1.0},
        parent_transitions=(PARENT_STATES + batches) / n,
        child_executions=batches / n,
    )


def pending_pages(orders: int, a: Assumptions) -> int:
    """Pages FetchResults reads from the pending-orders index for ``orders`` orders: two queries
    per shard (the expired orders and the live ones), each at least one page."""
    return max(2 * PENDING_SHARDS, math.ceil(orders * a.index_entry_bytes / a.dynamodb_query_page_bytes))


def staged_part_bytes(orders: int, a: Assumptions) -> int:
    """The part size of the upload of ``orders`` keys: the smallest S3 allows, or larger if the
    upload would otherwise need more parts than S3 allows."""
    total = orders * a.staged_key_bytes
    return max(a.s3_min_part_bytes, math.ceil(total / a.s3_max_parts))


def staged_parts(orders: int, a: Assumptions) -> int:
    """Parts of the multipart upload of ``orders`` keys."""
    return max(1, math.ceil(orders * a.staged_key_bytes / staged_part_bytes(orders, a)))


@dataclass(frozen=True)
class Units:
    """DynamoDB request units per order."""

    table_writes: float
    table_reads: float
    index_writes: float
    """Writes to the sparse indexes (billed as write units, on the indexes' own capacity)."""
    index_reads: float


def units_per_order(calls: Mapping[str, float], shape: Shape, a: Assumptions) -> Units:
    """DynamoDB units per order from calls per order: each UpdateItem writes one item, each
    TransactWriteItems one item (TallyBatch's: the pipeline's only transaction) at twice the
    units; each BatchGetItem (ClaimBatch's, the pipeline's only one) reads a batch's share of
    orders eventually consistent, each GetItem one strongly consistent; the index's reads are
    eventually consistent (a GSI offers nothing else)."""
    items_per_call = shape.batch_size / shape.calls_per_batch
    item_writes = math.ceil(a.order_item_kib)
    writes = (
        calls.get("dynamodb.TransactWriteItems", 0.0) * TRANSACTIONAL_WRITE_FACTOR
        + calls.get("dynamodb.UpdateItem", 0.0)
    ) * item_writes
    item_reads = math.ceil(a.order_item_kib * 1024 / READ_UNIT_BYTES)
    reads = (
        calls.get("dynamodb.BatchGetItem", 0.0) * items_per_call * EVENTUALLY_CONSISTENT_FACTOR
        + calls.get("dynamodb.GetItem", 0.0)
    ) * item_reads
    # The pending-orders index projects keys only: the claim sets only attributes it does not hold,
    # so it writes no entry; completing the order takes the entry (under 1 KB: one unit) out. A
    # rejection puts the order in the owed-notices index and its delivery takes it out again. The
    # index is read once, in 1 MB pages, eventually consistent (half a unit per 4 KB).
    return Units(
        table_writes=writes,
        table_reads=reads,
        index_writes=math.ceil(a.index_entry_bytes / 1024) + 2 * shape.rejected_share,
        index_reads=a.index_entry_bytes / READ_UNIT_BYTES * EVENTUALLY_CONSISTENT_FACTOR,
    )


def claim_and_tally_seconds(shape: Shape, a: Assumptions) -> float:
    """A batch's ClaimBatch (its reads, then its orders' claim updates ``CLAIM_WORKERS`` at a time)
    and TallyBatch (a one-item transaction), task time included: the part of a batch that is not
    its orders."""
    claim = (
        a.lambda_task_seconds
        + shape.calls_per_batch * a.batch_get_seconds
        + shape.claim_waves * a.item_call_seconds
    )
    return claim + a.lambda_task_seconds + a.transact_write_seconds


def notices_per_notifier_invocation(rejections_per_second: float) -> int:
    """Notices one notifier invocation takes, as deployed: the event source mapping hands it what
    arrived in ``NOTICE_BATCHING_WINDOW_SECONDS``, or ``NOTIFIER_BATCH_SIZE`` when that many came
    sooner (rejections arrive throughout the run at its settle rate)."""
    arrived = math.floor(rejections_per_second * NOTICE_BATCHING_WINDOW_SECONDS)
    return max(1, min(NOTIFIER_BATCH_SIZE, arrived))


def batch_seconds(shape: Shape, a: Assumptions) -> float:
    """How long one child (a batch) runs: ClaimBatch, its orders ``batch_concurrency`` at a time
    (a rejected order's slot also holds its notice's publish), then TallyBatch."""
    waves = math.ceil(shape.batch_size / shape.batch_concurrency)
    return claim_and_tally_seconds(shape, a) + waves * a.lambda_task_seconds * (1 + shape.rejected_share)


def process_order_billed_seconds(shape: Shape, a: Assumptions) -> float:
    """What one ProcessOrder invocation is billed for: its own calls (GetItem and UpdateItem; the
    PutObject of an accepted order) at the pessimistic latencies, plus its code. The state
    machine's round trip around it (``lambda_task_seconds``) is the child's time, not Lambda's."""
    calls = 2 * a.item_call_seconds + (1 - shape.rejected_share) * a.s3_request_seconds
    return calls + a.handler_seconds


def lambda_seconds_per_order(shape: Shape, a: Assumptions) -> float:
    """Lambda execution time per order, billed and concurrent: ProcessOrder, and a share of the
    batch's ClaimBatch and TallyBatch (pessimistically the whole task time each)."""
    return a.lambda_task_seconds + claim_and_tally_seconds(shape, a) / shape.batch_size


LIMITS = {
    "map_concurrency": "pipeline_max_concurrency batches at once, each as long as its ClaimBatch, "
    "its orders pipeline_batch_concurrency at a time at the modelled latency, and its TallyBatch",
    "lambda_concurrency": "the account's Lambda concurrency less the reserve, at each order's Lambda time",
    "dynamodb_table": "the table's on-demand throughput (write and read units, linearly combined)",
    "dynamodb_run_record": "one partition's write units for the run's record (one tally per batch)",
    "s3_prefix_puts": "S3 PUTs per second into one prefix (one per accepted order)",
    "sns_publishes": "SNS publishes per second (one per rejected order)",
    "standard_transitions": "the parent's state transitions per second (one per child started)",
}
"""What bounds a run's settle rate, by name (orders per second, the least binds)."""


def rate_limits(
    shape: Shape, a: Assumptions, lambda_available: int, calls: Mapping[str, float]
) -> dict[str, float]:
    """Orders per second each limit allows; ``lambda_available`` is the concurrency left for the run."""
    units = units_per_order(calls, shape, a)
    accepted = 1 - shape.rejected_share
    table_load = units.table_writes / a.dynamodb_write_units + units.table_reads / a.dynamodb_read_units
    tally_writes = math.ceil(a.order_item_kib)
    return {
        "map_concurrency": shape.max_concurrency * shape.batch_size / batch_seconds(shape, a),
        "lambda_concurrency": max(0, lambda_available) / lambda_seconds_per_order(shape, a),
        "dynamodb_table": 1 / table_load if table_load else math.inf,
        "dynamodb_run_record": a.dynamodb_partition_write_units * shape.batch_size / tally_writes,
        "s3_prefix_puts": a.s3_prefix_writes / accepted if accepted else math.inf,
        "sns_publishes": (
            a.sns_publishes_per_second / shape.rejected_share if shape.rejected_share else math.inf
        ),
        "standard_transitions": a.standard_transitions_per_second * shape.batch_size,
    }
