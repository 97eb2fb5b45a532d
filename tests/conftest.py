"""Shared fixtures.

Tests use real adapters on temporary folders (SQLite) or moto (DynamoDB) rather than mocks of our
own code: a fake that behaves like the service catches mistakes that a mock would only repeat.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Handlers read these when first imported; set them before any test module imports a handler.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

from energy_auction import bootstrap
from energy_auction.settings import Backend, Settings

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
START = 1_800_000_000.0  # a fixed "now" (2027-01-15) for tests that control time


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_LOOPBACK = ("127.", "::1", "localhost")
_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else str(address)
    if self.family in (socket.AF_INET, socket.AF_INET6) and not str(host).startswith(_LOOPBACK):
        raise RuntimeError(f"tests may only connect to loopback, not {host}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("ENERGY_AUCTION_"):
            monkeypatch.delenv(name)
    # moto needs credentials to sign requests; these are fakes and reach no AWS account.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    yield
    bootstrap.use(None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(backend=Backend.LOCAL, home=tmp_path / "home", jwt_secret=SECRET)


@pytest.fixture
def local_container(local_settings: Settings, clock: FakeClock) -> bootstrap.Container:
    """The local backend on a temporary folder, installed as the handlers' container."""
    container = bootstrap.Container(local_settings, clock=clock)
    bootstrap.use(container)
    return container


@pytest.fixture
def install(local_container: bootstrap.Container) -> Callable[..., bootstrap.Container]:
    """Install, for the handlers, the local container with some of its components replaced
    (``install(order_store=...)``); the others are the local container's own."""

    def build(**components: object) -> bootstrap.Container:
        container = bootstrap.Container(
            local_container.settings, local_container.clock, **{**local_container.given(), **components}
        )
        bootstrap.use(container)
        return container

    return build
