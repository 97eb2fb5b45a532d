"""Capture the service's log lines exactly as Powertools formats them (what CloudWatch would hold)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from energy_auction.deployment import SERVICE
from energy_auction.observability import logger


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """The JSON log lines written while the block runs, at every level."""
    target = logging.getLogger(SERVICE)
    handler = _Lines()
    handler.setFormatter(logger.registered_formatter)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
