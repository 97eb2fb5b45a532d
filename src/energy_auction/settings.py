"""The one typed settings model, read once from the environment by the composition root.

A frozen dataclass parsed by hand rather than pydantic-settings: the authorizer imports it on
every cold start, and pydantic alone costs ~110 ms of import there (see the README's figures).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

PREFIX = "ENERGY_AUCTION_"
MAX_ORDERS_CEILING = 100
"""A request is stored as one DynamoDB transaction (all or nothing), which holds at most 100 items."""


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
    **kw: Any,
) -> Any:
    return field(default=default, metadata={"parse": parse, "low": low, "high": high}, **kw)


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
    storage_base_delay_seconds: float = _setting(0.05, float, 0, 5)

    jwt_secret: str | None = _setting(None, _optional, repr=False)
    """Overrides the signing secret (local stack); on AWS the secret is read from Secrets Manager."""
    jwt_secret_id: str | None = _setting(None, _optional)
    """Secrets Manager name of the JWT signing secret (set by the deployment)."""
    jwt_issuer: str | None = _setting(None, _optional)
    jwt_audience: str | None = _setting(None, _optional)
    jwt_leeway_seconds: int = _setting(0, int, 0, 300)
    secret_cache_seconds: int = _setting(300, int, 0, 3600)

    orders_table: str | None = _setting(None, _optional)
    region: str | None = _setting(None, _optional)

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            low, high = spec.metadata.get("low"), spec.metadata.get("high")
            if (low is not None and value < low) or (high is not None and value > high):
                raise InvalidSettings(
                    f"{PREFIX}{spec.name.upper()} must be between {low} and {high}, not {value}"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``ENERGY_AUCTION_*`` variables; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(PREFIX + spec.name.upper())
            if spec.name == "region" and raw is None:
                raw = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            if raw is None:
                continue
            try:
                values[spec.name] = spec.metadata["parse"](raw)
            except ValueError:
                shown = "<hidden>" if spec.name == "jwt_secret" else repr(raw)
                raise InvalidSettings(f"{PREFIX}{spec.name.upper()}={shown} is not valid") from None
        return cls(**{**values, **overrides})

    @property
    def orders_db(self) -> Path:
        return self.home / "orders.sqlite3"

    @property
    def jwt_secret_file(self) -> Path:
        return self.home / "jwt-secret"
