"""A stage's configuration, read from CDK context (``-c key=value`` or cdk.json) and validated.

Defaults for the service's tunables come from :class:`energy_auction.settings.Settings`, and the
values are checked by constructing one, so the stack never deploys settings the Lambdas refuse.
Context may hold per-stage overrides: ``"stages": {"prod": {"log_retention_days": 365}}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct, Node

from energy_auction.pipeline import CLAIM_MARGIN_SECONDS
from energy_auction.settings import PREFIX, Backend, Settings

DEFAULT_REGION = "eu-west-1"
DEFAULT_STAGE = "dev"
PRODUCTION_STAGE = "prod"
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
"""Short lowercase names: they go into bucket, function and log group names."""
EXPRESS_LIMIT_SECONDS = 300
"""An EXPRESS execution (a Distributed Map child on AWS) runs at most 5 minutes, and may go on for
that long after its parent timed out or was stopped."""
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
        self.settings()  # raises InvalidSettings for values the Lambdas would refuse

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
    try:
        if kind.startswith("int"):
            return int(str(raw))
        if kind.startswith("float"):
            return float(str(raw))
        return str(raw)
    except ValueError:
        raise ConfigError(f"context {name}={raw!r} is not a {kind}") from None
