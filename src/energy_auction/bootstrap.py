"""The composition root: settings -> adapters. Nothing is built at import time.

Handlers call :func:`container`; the first call reads the settings and each component is built on
first use, so a cold start pays only for what its handler needs. The local stack and tests install
their own container with :func:`use`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, cast

from energy_auction.settings import Backend, Settings

if TYPE_CHECKING:  # imported where used: the authorizer needs no pydantic, the API no PyJWT
    from pathlib import Path

    from energy_auction.adapters.local import LocalTopic
    from energy_auction.auth import TokenVerifier
    from energy_auction.cursors import CursorCodec
    from energy_auction.orders import Limits
    from energy_auction.ports import (
        AuctionMarket,
        NoticePublisher,
        Notifier,
        OrderStore,
        PostSlots,
        ResultStore,
        SecretSource,
        WorkStore,
    )

DEFAULT_POOL_CONNECTIONS = 10
"""botocore's own default of connections a client keeps (``Config.max_pool_connections``)."""

COMPONENTS = frozenset(
    {
        "order_store",
        "market",
        "result_store",
        "work_store",
        "notifier",
        "notice_log",
        "notice_publisher",
        "post_slots",
        "topic",
        "secrets",
    }
)
"""The components a caller may give a Container instead of having it build them."""


class Container:
    """The service's components for one set of settings.

    Each component is built on first use from the settings, unless it was given as a keyword
    argument (``Container(settings, order_store=..., market=...)``): tests and the local stack
    inject theirs that way.
    """

    def __init__(
        self, settings: Settings, clock: Callable[[], float] = time.time, **components: object
    ) -> None:
        unknown = set(components) - COMPONENTS
        if unknown:
            raise TypeError(f"not components of a Container: {sorted(unknown)}")
        self.settings = settings
        self.clock = clock
        # A cached_property reads its value from the instance dict first: a given component wins.
        self.__dict__.update(components)

    def given(self) -> dict[str, object]:
        """The components built or given so far (to carry them over to a container with other settings)."""
        return {name: self.__dict__[name] for name in COMPONENTS if name in self.__dict__}

    @cached_property
    def limits(self) -> Limits:
        from energy_auction.orders import Limits

        return Limits(
            max_orders=self.settings.max_orders_per_request, max_body_bytes=self.settings.max_body_bytes
        )

    @cached_property
    def order_store(self) -> OrderStore:
        if self.settings.backend is Backend.LOCAL:
            from energy_auction.adapters.local import SqliteOrderStore

            return SqliteOrderStore(self.settings.orders_db)
        from energy_auction.adapters.aws import CLAIM_WORKERS, DynamoDbOrderStore
        from energy_auction.backoff import Backoff

        if not self.settings.orders_table:
            raise RuntimeError("ENERGY_AUCTION_ORDERS_TABLE is not set")
        return DynamoDbOrderStore(
            # The adapter retries with backoff itself; botocore makes at most 2 attempts a call,
            # with short timeouts, so the whole write fits the API's time. A connection for each of
            # a claim's updates in flight.
            self.aws_client(  # type: ignore[arg-type]
                "dynamodb",
                max_attempts=2,
                connect_timeout=1,
                read_timeout=2,
                max_pool_connections=max(CLAIM_WORKERS, DEFAULT_POOL_CONNECTIONS),
            ),
            self.settings.orders_table,
            Backoff(
                self.settings.storage_max_attempts,
                self.settings.storage_base_delay_seconds,
                budget_seconds=self.settings.storage_retry_budget_seconds,
            ),
        )

    @cached_property
    def market(self) -> AuctionMarket:
        from energy_auction.market import SimulatedMarket

        return SimulatedMarket(
            ready_probability=self.settings.market_ready_probability,
            accept_probability=self.settings.market_accept_probability,
            seed=self.settings.market_seed,
        )

    @cached_property
    def result_store(self) -> ResultStore:
        if self.settings.backend is Backend.LOCAL:
            from energy_auction.adapters.local import FolderResultStore

            return FolderResultStore(self.settings.results_dir)
        from energy_auction.adapters.aws import S3ResultStore

        return S3ResultStore(self.aws_client("s3"), self._required("results_bucket"))  # type: ignore[arg-type]

    @cached_property
    def work_store(self) -> WorkStore:
        """S3 in both backends: locally it is the in-memory S3 of the pipeline engine (moto)."""
        from energy_auction.adapters.aws import S3WorkStore

        return S3WorkStore(
            self.aws_client("s3"),  # type: ignore[arg-type]
            self._required("work_bucket"),
            self.settings.work_prefix,
        )

    @cached_property
    def topic(self) -> LocalTopic:
        """The local stack's notification topic (a SQLite queue of messages for the notifier)."""
        from energy_auction.adapters.local import LocalTopic

        return LocalTopic(self.settings.notices_db)

    @cached_property
    def notice_publisher(self) -> NoticePublisher:
        """Where a pipeline task publishes a notice: the SNS topic, or the local topic."""
        if self.settings.backend is Backend.LOCAL:
            return self.topic
        from energy_auction.adapters.aws import SnsNoticePublisher

        return SnsNoticePublisher(self.aws_client("sns"), self._required("notification_topic_arn"))  # type: ignore[arg-type]

    @cached_property
    def notifier(self) -> Notifier:
        """Where notices are posted for people: the Slack webhook (a log line while none is set)."""
        from energy_auction.adapters.channels import LogNotifier
        from energy_auction.adapters.slack import SlackWebhookNotifier

        return SlackWebhookNotifier(self.slack_webhook_url, fallback=LogNotifier(), slots=self.post_slots)

    @cached_property
    def post_slots(self) -> PostSlots:
        """Each notice channel's post slot (one post at a time across notifiers): kept by the order
        store, in the orders table or the orders database; both adapters implement it."""
        return cast("PostSlots", self.order_store)

    @cached_property
    def notice_log(self) -> Notifier:
        """Where every notice is kept, one by one, whatever Slack gets (a digest counts many):
        ``notifications.jsonl`` locally, a log line on AWS."""
        if self.settings.backend is Backend.LOCAL:
            from energy_auction.adapters.local import JsonlNotifier

            return JsonlNotifier(self.settings.notifications_file)
        from energy_auction.adapters.channels import LogNotifier

        return LogNotifier()

    def slack_webhook_url(self) -> str | None:
        """SLACK_WEBHOOK_URL, else the Secrets Manager secret (cached); None when unset or empty."""
        if self.settings.slack_webhook_url:
            return self.settings.slack_webhook_url
        if self.settings.backend is Backend.LOCAL or not self.settings.slack_webhook_secret_id:
            return None
        value = self.secrets.secret(self.settings.slack_webhook_secret_id, self.settings.secret_cache_seconds)
        return value.strip() or None

    def _required(self, name: str) -> str:
        value = getattr(self.settings, name)
        if not value:
            raise RuntimeError(f"ENERGY_AUCTION_{name.upper()} is not set")
        return str(value)

    def jwt_secret(self, created: Callable[[Path], None] | None = None) -> str:
        """The signing secret: the override, else Secrets Manager (cached) or the local file, which
        is made on first use (and then ``created`` is called with its path)."""
        settings = self.settings
        if settings.jwt_secret is not None:
            return settings.jwt_secret
        if settings.backend is Backend.LOCAL:
            from energy_auction.adapters.local import load_or_create_secret

            return load_or_create_secret(settings.jwt_secret_file, created)
        if not settings.jwt_secret_id:
            raise RuntimeError("ENERGY_AUCTION_JWT_SECRET_ID is not set")
        return self.secrets.secret(settings.jwt_secret_id, settings.secret_cache_seconds)

    def cursor_codec(self) -> CursorCodec:
        """Signs and checks listing cursors with the cursor key: the override, else Secrets
        Manager (cached) or the local file ``cursor-secret``, made on first use."""
        from energy_auction.cursors import CursorCodec

        settings = self.settings
        if settings.cursor_secret is not None:
            key = settings.cursor_secret
        elif settings.backend is Backend.LOCAL:
            from energy_auction.adapters.local import load_or_create_secret

            key = load_or_create_secret(settings.cursor_secret_file, what="cursor key file")
        elif settings.cursor_secret_id:
            key = self.secrets.secret(settings.cursor_secret_id, settings.secret_cache_seconds)
        else:
            raise RuntimeError("ENERGY_AUCTION_CURSOR_SECRET_ID is not set")
        return CursorCodec(key.encode())

    @cached_property
    def secrets(self) -> SecretSource:
        """Secrets Manager (the deployed secrets), read in the settings' region."""
        from energy_auction.adapters.aws import SecretsManagerSecrets

        return SecretsManagerSecrets(self.settings.region)

    def token_verifier(self) -> TokenVerifier:
        from energy_auction.auth import TokenVerifier

        # Rebuilt per call on purpose: the secret source caches, and a rotated secret takes effect.
        return TokenVerifier(
            self.jwt_secret(),
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            leeway_seconds=self.settings.jwt_leeway_seconds,
            max_lifetime_seconds=self.settings.jwt_max_lifetime_seconds,
        )

    def aws_client(
        self,
        service: str,
        max_attempts: int = 3,
        connect_timeout: float = 2,
        read_timeout: float = 10,
        max_pool_connections: int = DEFAULT_POOL_CONNECTIONS,
    ) -> object:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
        )
        return boto3.client(service, region_name=self.settings.region, config=config)  # type: ignore[call-overload]


_current: Container | None = None


def container() -> Container:
    """The process's container, built from the environment on first call."""
    global _current  # noqa: PLW0603 (the one process-wide root, built lazily for cold starts)
    if _current is None:
        _current = Container(Settings.from_env())
    return _current


def use(replacement: Container | None) -> None:
    """Install a container (local stack, tests); ``None`` goes back to building from the environment."""
    global _current  # noqa: PLW0603
    _current = replacement
