"""The one typed settings model, read once from the environment by the composition root."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from energy_auction.orders import MAX_ORDERS_CEILING


class Backend(StrEnum):
    AWS = "aws"
    """Deployed: DynamoDB, S3, SNS, Secrets Manager."""
    LOCAL = "local"
    """The local stack: SQLite, files, console/webhook."""


class Settings(BaseSettings):
    """Everything configurable, from ``ENERGY_AUCTION_*`` variables (see the README's table)."""

    model_config = SettingsConfigDict(env_prefix="ENERGY_AUCTION_", frozen=True, extra="ignore")

    backend: Backend = Backend.AWS
    home: Path = Path(".energy-auction")
    """The local stack's folder: orders database, JWT secret, results, notifications."""

    max_orders_per_request: Annotated[int, Field(ge=1, le=MAX_ORDERS_CEILING)] = MAX_ORDERS_CEILING
    max_body_bytes: Annotated[int, Field(ge=1024, le=10 * 1024 * 1024)] = 256 * 1024

    # Storage retries (throttling, transaction conflicts) before answering 503.
    storage_max_attempts: Annotated[int, Field(ge=1, le=10)] = 5
    storage_base_delay_seconds: Annotated[float, Field(ge=0, le=5)] = 0.05

    # Auth
    jwt_secret: SecretStr | None = None
    """Overrides the secret (local stack); on AWS the secret is read from Secrets Manager."""
    jwt_secret_id: str | None = None
    """Secrets Manager name of the JWT signing secret (set by the deployment)."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: Annotated[int, Field(ge=0, le=300)] = 0
    secret_cache_seconds: Annotated[int, Field(ge=0, le=3600)] = 300

    # AWS resources (set by the deployment)
    orders_table: str | None = None
    region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ENERGY_AUCTION_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )

    @classmethod
    def from_env(cls) -> Settings:
        return cls()

    @property
    def orders_db(self) -> Path:
        return self.home / "orders.sqlite3"

    @property
    def jwt_secret_file(self) -> Path:
        return self.home / "jwt-secret"
