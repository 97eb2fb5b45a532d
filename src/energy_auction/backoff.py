"""Bounded retries with exponential backoff: one helper for every adapter that retries (the
DynamoDB store, the Slack notifier)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    """Bounded retries with exponential backoff, full jitter by default, within an optional time budget.

    The wait before retry ``attempt`` (0 for the first retry) is at most
    ``min(max_delay, base_delay * 2**attempt)``: a random part of it with jitter (so clients that
    failed together do not retry together), all of it without.
    """

    def __init__(
        self,
        max_attempts: int = 5,
        base_delay: float = 0.05,
        max_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        *,
        jitter: bool = True,
        budget_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self._base = base_delay
        self._max = max_delay
        self._sleep = sleep
        self._jitter = jitter
        self._budget = budget_seconds
        self._clock = clock

    def delay(self, attempt: int) -> float:
        """How long to wait before retry ``attempt``."""
        ceiling = min(self._max, self._base * 2**attempt)
        return random.uniform(0, ceiling) if self._jitter else ceiling

    def pause(self, attempt: int, started: float | None = None, delay: float | None = None) -> bool:
        """Sleep before retry ``attempt`` (for ``delay`` seconds if given, e.g. what a Retry-After
        asked); False (no sleep) when that would overrun the time budget counted from ``started``
        (a ``start()`` reading), so the caller gives up in time."""
        wait = self.delay(attempt) if delay is None else delay
        if started is not None and self._budget is not None and self._clock() - started + wait > self._budget:
            return False
        self._sleep(wait)
        return True

    def start(self) -> float:
        return self._clock()
