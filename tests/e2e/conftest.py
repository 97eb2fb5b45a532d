from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import LocalStack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    running = LocalStack(home=tmp_path / "home").start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()
