"""The local stand-in for the EventBridge schedule: start a pipeline run every interval."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from energy_auction.observability import logger

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_interval(text: str) -> int:
    """Seconds in ``"30s"``, ``"5m"``, ``"1h"`` or ``"90"``; at least 1."""
    found = _DURATION.match(text.lower())
    if not found:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h")
    seconds = int(found.group(1)) * _UNIT_SECONDS[found.group(2) or "s"]
    if seconds < 1:
        raise ValueError("the interval must be at least 1 second")
    return seconds


class Scheduler:
    """Calls ``start_run`` every ``interval`` seconds in a background thread, like a rate schedule.

    Runs are started, not awaited, so they may overlap as on AWS; the pipeline's claims keep each
    order in one run.
    """

    def __init__(self, interval_seconds: int, start_run: Callable[[], str]) -> None:
        self.interval = interval_seconds
        self._start_run = start_run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline-schedule", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                run_id = self._start_run()
                logger.info("scheduled pipeline run started", extra={"run_id": run_id})
            except Exception:
                logger.exception("could not start a scheduled pipeline run")
