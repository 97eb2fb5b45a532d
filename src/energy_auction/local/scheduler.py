"""The local stand-in for the EventBridge schedule: start a pipeline run every interval."""

from __future__ import annotations

import re
import threading
import time
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
    """Starts a run (``start_run``) every ``interval`` seconds of ``clock``, like a rate schedule,
    in a background thread, and logs each run's summary (``wait_run``) when it ends. The first run
    starts one interval after :meth:`start`.

    Runs are started, not awaited, so they may overlap as on AWS; the pipeline's claims keep each
    order in one run.
    """

    def __init__(
        self,
        interval_seconds: int,
        start_run: Callable[[], str],
        wait_run: Callable[[str], _Summary],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval_seconds
        self._start_run = start_run
        self._wait_run = wait_run
        self._clock = clock
        self._next = clock() + interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline-schedule", daemon=True)

    def start(self) -> None:
        self._next = self._clock() + self.interval
        self._thread.start()

    def stop(self) -> None:
        """Start no further run; returns once the schedule's thread has ended."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def run_due(self) -> str | None:
        """Start the run that is due, if one is (the schedule's thread calls this); returns its id.
        A run that could not start is logged, and the next one is due an interval later all the same."""
        if self._stop.is_set() or self._clock() < self._next:
            return None
        self._next += self.interval * (1 + int((self._clock() - self._next) // self.interval))
        try:
            run_id = self._start_run()
        except Exception:
            logger.exception("could not start a scheduled pipeline run")
            return None
        logger.info("scheduled pipeline run started", extra={"run_id": run_id})
        threading.Thread(target=self._report, args=(run_id,), name=f"report-{run_id}", daemon=True).start()
        return run_id

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            self._stop.wait(max(0.0, min(self._next - self._clock(), 1.0)))

    def _report(self, run_id: str) -> None:
        try:
            summary = self._wait_run(run_id)
        except Exception:
            logger.exception("could not follow a scheduled pipeline run", extra={"run_id": run_id})
            return
        log = logger.info if summary.status == "SUCCEEDED" else logger.error
        log("scheduled pipeline run ended", extra=summary.as_dict())
