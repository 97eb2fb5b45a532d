"""The one backoff helper the DynamoDB store and the Slack notifier retry with."""

from __future__ import annotations

import pytest

from energy_auction.backoff import Backoff

from ..conftest import FakeClock


def test_jittered_waits_stay_within_the_doubling_ceiling() -> None:
    backoff = Backoff(base_delay=0.1, max_delay=1.0)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        waits = [backoff.delay(attempt) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # spread over the range, not pinned at the bottom


def test_without_jitter_the_waits_double_up_to_the_cap() -> None:
    backoff = Backoff(base_delay=0.5, max_delay=3.0, jitter=False)
    assert [backoff.delay(a) for a in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_pause_that_would_overrun_the_budget_is_refused_without_sleeping() -> None:
    clock = FakeClock(0)
    slept: list[float] = []
    backoff = Backoff(
        base_delay=2.0, max_delay=2.0, sleep=slept.append, jitter=False, budget_seconds=5, clock=clock
    )
    started = backoff.start()

    assert backoff.pause(0, started) is True
    clock.advance(4)
    assert backoff.pause(1, started) is False
    assert slept == [2.0]


def test_a_pause_of_a_given_length_sleeps_that_long() -> None:
    slept: list[float] = []
    Backoff(sleep=slept.append).pause(3, delay=7.5)
    assert slept == [7.5]


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Backoff(max_attempts=0)
