"""The one typed settings model, read once from the environment by the composition root.

A frozen dataclass parsed by hand rather than pydantic-settings: the authorizer imports it on
every cold start, and pydantic alone costs ~110 ms of import there (see the README's figures).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from energy_auction.webhook import WEBHOOK_RULE, is_webhook_url

PREFIX = "ENERGY_AUCTION_"
MAX_ORDERS_CEILING = 100
"""A request is stored as one DynamoDB transaction (all or nothing), which holds at most 100 items."""
DEFAULT_JWT_MAX_LIFETIME_SECONDS = 24 * 60 * 60
"""The longest a bearer token may live (its ``exp`` less its ``iat``) unless configured otherwise."""


class Backend(StrEnum):
    AWS = "aws"
    """Deployed: DynamoDB, S3, SNS, Secrets Manager."""
    LOCAL = "local"
    """The local stack: SQLite, files, console/webhook."""


class InvalidSettings(ValueError):
    """A configuration variable has a value the service cannot use."""


def _setting(
    default: Any,
    parse: Callable[[str], Any] = str,
    low: float | None = None,
    high: float | None = None,
    env: tuple[str, ...] = (),
    **kw: Any,
) -> Any:
    """A field read from ENERGY_AUCTION_<NAME>, else from the ``env`` names, in order."""
    return field(default=default, metadata={"parse": parse, "low": low, "high": high, "env": env}, **kw)


def _finite(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _optional(value: str) -> str | None:
    return value.strip() or None


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Each field ``name`` is read from ``ENERGY_AUCTION_<NAME>``."""

    backend: Backend = _setting(Backend.AWS, Backend)
    home: Path = _setting(Path(".energy-auction"), Path)
    """The local stack's folder: orders database, JWT secret, results, notifications."""

    max_orders_per_request: int = _setting(MAX_ORDERS_CEILING, int, 1, MAX_ORDERS_CEILING)
    max_body_bytes: int = _setting(256 * 1024, int, 1024, 10 * 1024 * 1024)

    storage_max_attempts: int = _setting(5, int, 1, 10)
    """Attempts at a storage write (throttling, transaction conflicts) before answering 503."""
    storage_base_delay_seconds: float = _setting(0.05, _finite, 0, 5)
    storage_retry_budget_seconds: float = _setting(6.0, _finite, 0, 60)
    """Time after which a write stops retrying and the API answers 503 (keep it under the API
    Lambda's timeout, less one call)."""

    jwt_secret: str | None = _setting(None, _optional, repr=False)
    """Overrides the signing secret (local stack); on AWS the secret is read from Secrets Manager."""
    jwt_secret_id: str | None = _setting(None, _optional)
    """Secrets Manager name of the JWT signing secret (set by the deployment)."""
    cursor_secret: str | None = _setting(None, _optional, repr=False)
    """Overrides the key that signs listing cursors (tests); locally it is the file ``cursor-secret``."""
    cursor_secret_id: str | None = _setting(None, _optional)
    """Secrets Manager name of the cursor signing key (set by the deployment; only the API reads it)."""
    jwt_issuer: str | None = _setting(None, _optional)
    jwt_audience: str | None = _setting(None, _optional)
    jwt_leeway_seconds: int = _setting(0, int, 0, 300)
    jwt_max_lifetime_seconds: int = _setting(DEFAULT_JWT_MAX_LIFETIME_SECONDS, int, 60, 30 * 24 * 3600)
    """The longest lifetime (exp - iat) of a token the service accepts, and that ``token`` mints."""
    secret_cache_seconds: int = _setting(300, int, 0, 3600)

    orders_table: str | None = _setting(None, _optional)
    region: str | None = _setting(None, _optional, env=("AWS_REGION", "AWS_DEFAULT_REGION"))

    # Auction pipeline
    results_bucket: str | None = _setting(None, _optional)
    """S3 bucket for accepted results (AWS); locally they go to <home>/results/."""
    work_bucket: str | None = _setting(None, _optional)
    """S3 bucket for transient run data (the order results a run reads); locally moto's in-memory S3."""
    work_prefix: str = _setting("work/")
    market_ready_probability: float = _setting(0.8, _finite, 0, 1)
    market_accept_probability: float = _setting(0.7, _finite, 0, 1)
    market_seed: int | None = _setting(None, int)
    """Seed of the simulated market, to reproduce a run's outcomes; unset means random."""
    claim_lease_seconds: int = _setting(900, int, 11, 7 * 24 * 3600)
    """How long a batch of a run holds the orders it claimed; then the orders of a run that died are
    free again. Each batch claims its own orders when it starts, so the lease must outlive one
    batch (on AWS an EXPRESS child: at most 5 minutes), not the whole run."""
    pipeline_max_attempts: int = _setting(10, int, 1, 1000)
    pipeline_retry_seconds: int = _setting(30, int, 0, 3600)
    pipeline_timeout_seconds: int = _setting(3600, int, 10, 86400)
    pipeline_task_retry_interval_seconds: int = _setting(2, int, 1, 300)
    pipeline_task_retry_max_attempts: int = _setting(4, int, 0, 20)
    pipeline_task_retry_backoff_rate: float = _setting(2.0, _finite, 1, 10)
    pipeline_max_concurrency: int = _setting(40, int, 1, 1000)
    """Batches (Distributed Map children) of a run in flight at once."""
    pipeline_batch_size: int = _setting(100, int, 1, 200)
    """Orders per batch: one child execution claims, asks the market about and settles them."""
    pipeline_batch_concurrency: int = _setting(10, int, 1, 40)
    """ProcessOrder invocations in flight in one batch (its inline Map's MaxConcurrency)."""
    pipeline_max_orders: int = _setting(1_000_000, int, 1, 10_000_000)
    """Orders one run takes at most (the oldest first); the rest wait, unclaimed, for the next run."""

    # Notifications
    notification_topic_arn: str | None = _setting(None, _optional)
    """The SNS topic FetchResults publishes redelivered rejection notices to (AWS)."""
    notice_redelivery_seconds: int = _setting(900, int, 0, 86400)
    """A rejection notice still undelivered this long after its order was rejected is published
    again by the next pipeline run (then after twice as long, and so on, up to 6 hours)."""
    notice_delivery_lease_seconds: int = _setting(300, int, 1, 3600)
    """How long one delivery of a notice holds it (longer than the notifier's own retries); a
    delivery that died gives the notice back after this time."""
    slack_webhook_url: str | None = _setting(None, _optional, env=("SLACK_WEBHOOK_URL",), repr=False)
    """The Slack incoming webhook (local stack); never logged."""
    slack_webhook_secret_id: str | None = _setting(None, _optional)
    """Secrets Manager name of the Slack webhook URL (AWS)."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            if getattr(self, spec.name) is None:
                continue
            value = getattr(self, spec.name)
            low, high = spec.metadata.get("low"), spec.metadata.get("high")
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidSettings(f"{PREFIX}{spec.name.upper()} must be a finite number, not {value}")
            if (low is not None and value < low) or (high is not None and value > high):
                raise InvalidSettings(
                    f"{PREFIX}{spec.name.upper()} must be between {low} and {high}, not {value}"
                )
        if self.slack_webhook_url is not None and not is_webhook_url(self.slack_webhook_url):
            raise InvalidSettings(
                f"SLACK_WEBHOOK_URL (or {PREFIX}SLACK_WEBHOOK_URL) is refused: {WEBHOOK_RULE}; "
                "its value is not shown, as it is a secret"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``ENERGY_AUCTION_*`` variables; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            names = (PREFIX + spec.name.upper(), *spec.metadata["env"])
            raw = next((env[name] for name in names if env.get(name)), None)
            if raw is None:
                continue
            try:
                values[spec.name] = spec.metadata["parse"](raw)
            except ValueError:
                shown = repr(raw) if spec.repr else "<hidden>"
                raise InvalidSettings(f"{PREFIX}{spec.name.upper()}={shown} is not valid") from None
        return cls(**{**values, **overrides})

    @property
    def orders_db(self) -> Path:
        return self.home / "orders.sqlite3"

    @property
    def notices_db(self) -> Path:
        return self.home / "notices.sqlite3"

    @property
    def jwt_secret_file(self) -> Path:
        return self.home / "jwt-secret"

    @property
    def cursor_secret_file(self) -> Path:
        return self.home / "cursor-secret"

    @property
    def results_dir(self) -> Path:
        return self.home / "results"

    @property
    def notifications_file(self) -> Path:
        return self.home / "notifications.jsonl"
