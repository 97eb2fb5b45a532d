"""The local stand-in for the EventBridge schedule: start a pipeline run every interval."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, Protocol

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


class _Summary(Protocol):
    status: str

    def as_dict(self) -> dict[str, Any]: ...


class Scheduler:
    """Calls ``start_run`` every ``interval`` seconds in a background thread, like a rate schedule,
    and logs each run's summary (``wait_run``) when it ends.

    Runs are started, not awaited, so they may overlap as on AWS; the pipeline's claims keep each
    order in one run.
    """

    def __init__(
        self, interval_seconds: int, start_run: Callable[[], str], wait_run: Callable[[str], _Summary]
    ) -> None:
        self.interval = interval_seconds
        self._start_run = start_run
        self._wait_run = wait_run
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
                continue
            threading.Thread(
                target=self._report, args=(run_id,), name=f"report-{run_id}", daemon=True
            ).start()

    def _report(self, run_id: str) -> None:
        try:
            summary = self._wait_run(run_id)
        except Exception:
            logger.exception("could not follow a scheduled pipeline run", extra={"run_id": run_id})
            return
        log = logger.info if summary.status == "SUCCEEDED" else logger.error
        log("scheduled pipeline run ended", extra=summary.as_dict())
