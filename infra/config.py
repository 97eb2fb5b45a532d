"""A stage's configuration, read from CDK context (``-c key=value`` or cdk.json) and validated.

Defaults for the service's tunables come from :class:`energy_auction.settings.Settings`, and the
values are checked by constructing one, so the stack never deploys settings the Lambdas refuse.
Context may hold per-stage overrides: ``"stages": {"prod": {"log_retention_days": 365}}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct, Node

from energy_auction.pipeline import CLAIM_MARGIN_SECONDS
from energy_auction.settings import PREFIX, Backend, Settings
from infra.capacity import (
    Assumptions,
    Shape,
    batch_seconds,
    design_per_order,
    rate_limits,
    units_per_order,
)

DEFAULT_REGION = "eu-west-1"
DEFAULT_STAGE = "dev"
PRODUCTION_STAGE = "prod"
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
"""Short lowercase names: they go into bucket, function and log group names."""
EXPRESS_LIMIT_SECONDS: int = Assumptions.express_seconds
"""An EXPRESS execution (a Distributed Map child on AWS) runs at most 5 minutes, and may go on for
that long after its parent timed out or was stopped."""
OTHER_FUNCTIONS_CONCURRENCY = 10
"""Lambda concurrency kept for the functions that are neither the API nor a batch: FetchResults
(one invocation of a run at a time; two when a scheduled run overlaps the one before), the notifier
(its queue's event source) and room to spare."""
NOTIFIER_TIMEOUT_SECONDS = 180
"""The notifier Lambda's timeout: room for its Slack retries and Retry-After waits."""


class ConfigError(ValueError):
    """The CDK context holds a value the stack cannot use."""


@dataclass(frozen=True)
class StageConfig:
    """Everything a stage's stack is built from."""

    stage: str
    region: str = DEFAULT_REGION
    schedule_minutes: int = 5
    throttle_rate_limit: int = 50
    throttle_burst_limit: int = 100
    authorizer_cache_seconds: int = 300
    log_level: str = "INFO"
    log_retention_days: int = 30
    alert_email: str | None = None
    api_latency_p99_ms: int = 2000
    authorizer_errors_per_5_minutes: int = 25
    """Refused tokens raise "Unauthorized", which Lambda counts as errors: alarm only on a burst."""
    rejected_orders_per_5_minutes: int = 100
    """Rejected orders raise OrderRejected in ProcessOrder on purpose: alarm only on an unusual volume."""
    legacy_pending_index: bool = False
    """Keep the pending-orders index of earlier versions (projection ALL) beside the keys-only one,
    for the first deploy of a stage upgraded from them (``-c legacy_pending_index=true``): a table
    update creates or deletes at most one global secondary index, so the new one is created with
    the flag and the old one deleted by the next deploy without it (README, "Upgrading to the
    keys-only pending index")."""
    # Service tunables (Settings fields of the same names).
    pipeline_max_attempts: int = Settings.pipeline_max_attempts
    pipeline_retry_seconds: int = Settings.pipeline_retry_seconds
    pipeline_timeout_seconds: int = Settings.pipeline_timeout_seconds
    pipeline_task_retry_interval_seconds: int = Settings.pipeline_task_retry_interval_seconds
    pipeline_task_retry_max_attempts: int = Settings.pipeline_task_retry_max_attempts
    pipeline_task_retry_backoff_rate: float = Settings.pipeline_task_retry_backoff_rate
    pipeline_max_concurrency: int = Settings.pipeline_max_concurrency
    pipeline_batch_size: int = Settings.pipeline_batch_size
    pipeline_batch_concurrency: int = Settings.pipeline_batch_concurrency
    pipeline_max_orders: int = Settings.pipeline_max_orders
    claim_lease_seconds: int = Settings.claim_lease_seconds
    """A claim must outlive the batch (an EXPRESS child, at most 5 minutes) that holds it."""
    market_ready_probability: float = Settings.market_ready_probability
    market_accept_probability: float = Settings.market_accept_probability
    market_seed: int | None = None
    work_prefix: str = Settings.work_prefix
    notice_redelivery_seconds: int = Settings.notice_redelivery_seconds
    notice_delivery_lease_seconds: int = Settings.notice_delivery_lease_seconds
    # What the account and the table allow (infra/capacity.py): the defaults are AWS's for a new
    # account and a new on-demand table; a stage whose quota was raised says so here.
    lambda_concurrency_quota: int = Assumptions.lambda_concurrency
    """Concurrent Lambda executions of the account in the stage's Region (Service Quotas)."""
    dynamodb_write_units_per_second: int = Assumptions.dynamodb_write_units
    """Write units per second the orders table serves without throttling (on demand, a new table:
    4,000; more once it has served more, as on-demand keeps its previous peak, or with warm
    throughput set)."""
    dynamodb_read_units_per_second: int = Assumptions.dynamodb_read_units
    """Read units per second the orders table serves without throttling (a new table: 12,000)."""

    def __post_init__(self) -> None:
        if not STAGE_PATTERN.fullmatch(self.stage):
            raise ConfigError(f"stage must match {STAGE_PATTERN.pattern}, not {self.stage!r}")
        # A claim must outlive the batch holding it: an EXPRESS child runs at most 5 minutes, and
        # ProcessOrder settles an order only while its claim has CLAIM_MARGIN_SECONDS left.
        shortest = EXPRESS_LIMIT_SECONDS + CLAIM_MARGIN_SECONDS
        if self.claim_lease_seconds < shortest:
            raise ConfigError(
                f"claim_lease_seconds must be at least {shortest}: a batch (an EXPRESS child) runs for "
                f"up to {EXPRESS_LIMIT_SECONDS} s after it claimed its orders"
            )
        if self.notice_delivery_lease_seconds <= NOTIFIER_TIMEOUT_SECONDS:
            raise ConfigError(
                "notice_delivery_lease_seconds must exceed the notifier's timeout "
                f"({NOTIFIER_TIMEOUT_SECONDS} s), so a delivery in progress is never taken over"
            )
        if not 1 <= self.schedule_minutes <= 1440:
            raise ConfigError("schedule_minutes must be between 1 and 1440")
        if self.log_retention_days not in _RETENTION:
            raise ConfigError(f"log_retention_days must be one of {sorted(_RETENTION)}")
        if not self.work_prefix.endswith("/") or self.work_prefix.startswith("/"):
            raise ConfigError("work_prefix must be a relative S3 prefix ending with '/'")
        if min(self.pipeline_max_concurrency, self.pipeline_batch_size, self.pipeline_batch_concurrency) >= 1:
            self._check_capacity()  # (below 1, Settings refuses them)
        self.settings()  # raises InvalidSettings for values the Lambdas would refuse

    @property
    def lambda_concurrency_reserve(self) -> int:
        """Concurrency the batches leave to the other functions: every request of the API's burst in
        flight at once, counted twice (its authorizer and the API function, pessimistically at the
        same time), and OTHER_FUNCTIONS_CONCURRENCY."""
        return 2 * self.throttle_burst_limit + OTHER_FUNCTIONS_CONCURRENCY

    def assumptions(self) -> Assumptions:
        """The capacity assumptions (infra/capacity.py) with this stage's quotas."""
        return replace(
            Assumptions(),
            lambda_concurrency=self.lambda_concurrency_quota,
            dynamodb_write_units=self.dynamodb_write_units_per_second,
            dynamodb_read_units=self.dynamodb_read_units_per_second,
        )

    def shape(self) -> Shape:
        """The run's shape; the share of rejected orders is the stage's market's."""
        return Shape(
            max_concurrency=self.pipeline_max_concurrency,
            batch_size=self.pipeline_batch_size,
            batch_concurrency=self.pipeline_batch_concurrency,
            rejected_share=1 - self.market_accept_probability,
        )

    def _check_capacity(self) -> None:
        """Refuse pipeline settings that exceed an AWS quota, at the latencies and per-order work of
        the cost and time model (infra/capacity.py; README, Benchmarks, "Cost and time model")."""
        a, shape = self.assumptions(), self.shape()
        c, b, i = shape.max_concurrency, shape.batch_size, shape.batch_concurrency
        if c > a.map_max_concurrency:
            raise ConfigError(
                f"pipeline_max_concurrency ({c:,}) exceeds the Distributed Map's quota of "
                f"{a.map_max_concurrency:,} child executions at once"
            )
        if i > a.inline_map_max_concurrency:
            raise ConfigError(
                f"pipeline_batch_concurrency ({i}) exceeds the inline Map's quota of "
                f"{a.inline_map_max_concurrency} concurrent iterations"
            )
        if b * a.staged_key_bytes > a.state_payload_bytes:
            raise ConfigError(
                f"pipeline_batch_size ({b:,}) order keys of up to {a.staged_key_bytes} bytes exceed a "
                f"Step Functions state's {a.state_payload_bytes:,}-byte payload quota"
            )
        needed = c * i + self.lambda_concurrency_reserve
        if needed > self.lambda_concurrency_quota:
            raise ConfigError(
                f"pipeline_max_concurrency x pipeline_batch_concurrency ({c} x {i} = {c * i:,}) plus "
                f"{self.lambda_concurrency_reserve} kept for the API and the other functions exceeds "
                f"lambda_concurrency_quota ({self.lambda_concurrency_quota:,} concurrent Lambda "
                "executions); raise the account's quota and say so there, or lower the concurrency"
            )
        longest = batch_seconds(replace(shape, rejected_share=1.0), a)
        if longest > a.express_seconds:
            raise ConfigError(
                f"a batch of pipeline_batch_size ({b:,}) orders, pipeline_batch_concurrency ({i}) at a "
                f"time, runs about {longest:.0f} s: past an EXPRESS child's {a.express_seconds} s quota"
            )
        per_order = design_per_order(self.pipeline_max_orders, shape, a)
        limits = rate_limits(
            shape, a, self.lambda_concurrency_quota - self.lambda_concurrency_reserve, per_order.aws_calls
        )
        rate = limits["map_concurrency"]  # what the batches drive at the modelled latency
        units = units_per_order(per_order.aws_calls, shape, a)
        writes, reads = rate * units.table_writes, rate * units.table_reads
        load = writes / self.dynamodb_write_units_per_second + reads / self.dynamodb_read_units_per_second
        if load > 1:
            raise ConfigError(
                f"pipeline_max_concurrency ({c}) batches of pipeline_batch_size ({b}) settle about "
                f"{rate:,.0f} orders/s: {writes:,.0f} write and {reads:,.0f} read units/s, {load:.0%} of "
                f"dynamodb_write_units_per_second ({self.dynamodb_write_units_per_second:,}) and "
                f"dynamodb_read_units_per_second ({self.dynamodb_read_units_per_second:,}) combined"
            )
        puts = rate * (1 - shape.rejected_share)
        if puts > a.s3_prefix_writes:
            raise ConfigError(
                f"pipeline_max_concurrency ({c}) batches of pipeline_batch_size ({b}) write about "
                f"{puts:,.0f} results/s into one S3 prefix: past S3's {a.s3_prefix_writes:,} PUT/s quota"
            )
        tallies = rate / b * math.ceil(a.order_item_kib)
        if tallies > a.dynamodb_partition_write_units:
            raise ConfigError(
                f"pipeline_batch_size ({b}) makes about {tallies:,.0f} batch tallies/s on the run's "
                f"record: past DynamoDB's {a.dynamodb_partition_write_units:,} write units/s per partition"
            )
        throughput = min(limits.values())
        waiting = (self.pipeline_max_attempts - 1) * self.pipeline_retry_seconds
        settling = self.pipeline_max_orders / throughput
        if settling + waiting > self.pipeline_timeout_seconds:
            raise ConfigError(
                f"pipeline_max_orders ({self.pipeline_max_orders:,}) at the modelled {throughput:,.0f} "
                f"orders/s take about {settling:,.0f} s, after up to {waiting:,} s of waiting for the "
                f"market: past pipeline_timeout_seconds ({self.pipeline_timeout_seconds:,})"
            )

    @property
    def is_production(self) -> bool:
        return self.stage == PRODUCTION_STAGE

    @property
    def removal_policy(self) -> RemovalPolicy:
        """Data survives the stack in production; a development stage is removed whole."""
        return RemovalPolicy.RETAIN if self.is_production else RemovalPolicy.DESTROY

    @property
    def log_retention(self) -> logs.RetentionDays:
        return _RETENTION[self.log_retention_days]

    def log_group(self, scope: Construct, construct_id: str, name: str) -> logs.LogGroup:
        """A log group with the stage's retention and removal policy."""
        return logs.LogGroup(
            scope,
            construct_id,
            log_group_name=name,
            retention=self.log_retention,
            removal_policy=self.removal_policy,
        )

    @property
    def resource_prefix(self) -> str:
        """Prefix of the stage's resource names: ``energy-auction-<stage>``."""
        return f"energy-auction-{self.stage}"

    def settings(self) -> Settings:
        """The service settings the deployed Lambdas will read (resource names aside)."""
        return Settings(
            backend=Backend.AWS,
            claim_lease_seconds=self.claim_lease_seconds,
            pipeline_max_attempts=self.pipeline_max_attempts,
            pipeline_retry_seconds=self.pipeline_retry_seconds,
            pipeline_timeout_seconds=self.pipeline_timeout_seconds,
            pipeline_task_retry_interval_seconds=self.pipeline_task_retry_interval_seconds,
            pipeline_task_retry_max_attempts=self.pipeline_task_retry_max_attempts,
            pipeline_task_retry_backoff_rate=self.pipeline_task_retry_backoff_rate,
            pipeline_max_concurrency=self.pipeline_max_concurrency,
            pipeline_batch_size=self.pipeline_batch_size,
            pipeline_batch_concurrency=self.pipeline_batch_concurrency,
            pipeline_max_orders=self.pipeline_max_orders,
            market_ready_probability=self.market_ready_probability,
            market_accept_probability=self.market_accept_probability,
            market_seed=self.market_seed,
            work_prefix=self.work_prefix,
            notice_redelivery_seconds=self.notice_redelivery_seconds,
            notice_delivery_lease_seconds=self.notice_delivery_lease_seconds,
        )

    @classmethod
    def from_context(cls, node: Node, stage: str | None = None) -> StageConfig:
        """The configuration of ``stage`` (default: the ``stage`` context value, else dev)."""
        stage = stage or _text(node.try_get_context("stage")) or DEFAULT_STAGE
        overrides = (node.try_get_context("stages") or {}).get(stage) or {}
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name == "stage":
                continue
            raw = overrides.get(spec.name, node.try_get_context(spec.name))
            if raw is None or raw == "":
                continue
            values[spec.name] = _parse(spec.name, spec.type, raw)
        return cls(stage=stage, **values)


def settings_env(**values: object) -> dict[str, str]:
    """``ENERGY_AUCTION_<NAME>`` variables for Settings fields; an unknown name is a programming error."""
    known = {spec.name for spec in fields(Settings)}
    unknown = set(values) - known
    if unknown:
        raise KeyError(f"not Settings fields: {sorted(unknown)}")
    return {PREFIX + name.upper(): str(value) for name, value in values.items() if value is not None}


_RETENTION: Mapping[int, logs.RetentionDays] = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
}


def _text(value: object) -> str | None:
    return str(value).strip() or None if value is not None else None


def _parse(name: str, annotation: object, raw: object) -> object:
    kind = str(annotation)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        flag = str(raw).strip().lower()
        if flag in ("true", "false"):
            return flag == "true"
        raise ConfigError(f"context {name}={raw!r} is not true or false")
    try:
        if kind.startswith("int"):
            return int(str(raw))
        if kind.startswith("float"):
            return float(str(raw))
        return str(raw)
    except ValueError:
        raise ConfigError(f"context {name}={raw!r} is not a {kind}") from None
