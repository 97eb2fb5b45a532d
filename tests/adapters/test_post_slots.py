"""One Slack post at a time per channel across notifiers: the store's post slot, and the Slack
notifier taking it before each post (on AWS two notifiers may run at once)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from energy_auction.adapters.local import SqliteOrderStore
from energy_auction.adapters.slack import MIN_POST_INTERVAL_SECONDS, HttpResponse, SlackWebhookNotifier
from energy_auction.errors import StorageUnavailable
from energy_auction.notifications import Notice, NoticeKind
from tests.adapters.stores import NOW, StoreUnderTest
from tests.logs import captured_logs

NOTICE = Notice(kind=NoticeKind.OTHER, title="t", text="x")
URL = "https://hooks.slack.com/services/T000/B000/XXXX"


def test_a_slot_is_taken_by_one_caller_and_free_again_after_its_interval(subject: StoreUnderTest) -> None:
    store = subject.store

    assert store.take_post_slot("alerts", NOW, 3.0) == 0.0
    # Then, held: whoever asks within the interval is told how long to wait, and takes nothing
    assert store.take_post_slot("alerts", NOW + 1.0, 3.0) == pytest.approx(2.0)
    assert store.take_post_slot("alerts", NOW + 2.5, 3.0) == pytest.approx(0.5)
    # Other channels have their own slot
    assert store.take_post_slot("trading", NOW + 1.0, 3.0) == 0.0
    # Once the interval has passed it can be taken again, for another interval
    assert store.take_post_slot("alerts", NOW + 3.0, 3.0) == 0.0
    assert store.take_post_slot("alerts", NOW + 4.0, 3.0) == pytest.approx(2.0)


def test_the_slot_is_shared_by_every_store_on_one_database(tmp_path: Path) -> None:
    # Given two processes' stores on one orders database (the stack and a run-pipeline)
    first, second = SqliteOrderStore(tmp_path / "o.sqlite3"), SqliteOrderStore(tmp_path / "o.sqlite3")

    assert first.take_post_slot("alerts", NOW, 3.0) == 0.0
    assert second.take_post_slot("alerts", NOW + 1.0, 3.0) == pytest.approx(2.0)


def test_the_slot_is_no_order_and_no_listing_holds_it(subject: StoreUnderTest) -> None:
    subject.store.take_post_slot("alerts", NOW, 3.0)

    assert subject.stored_ids() == set()


class Clock:
    """One clock for every notifier of a test: sleeping moves it."""

    def __init__(self) -> None:
        self.now: float = NOW
        self.posted: list[tuple[str, float]] = []

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def poster(self, name: str) -> Any:
        def post(url: str, body: bytes, timeout: float) -> HttpResponse:
            self.posted.append((name, self.now))
            return HttpResponse(200)

        return post


def notifier(name: str, clock: Clock, slots: Any) -> SlackWebhookNotifier:
    return SlackWebhookNotifier(
        lambda: URL,
        fallback=_Dropped(),
        post=clock.poster(name),
        sleep=clock.sleep,
        clock=lambda: clock.now,
        wall_clock=lambda: clock.now,
        slots=slots,
    )


class _Dropped:
    def notify(self, notice: Notice) -> None:
        pass


def test_two_notifiers_post_to_a_channel_at_least_the_interval_apart(subject: StoreUnderTest) -> None:
    # Given two notifiers (two concurrent Lambdas) sharing the store's post slot
    clock = Clock()
    a, b = notifier("a", clock, subject.store), notifier("b", clock, subject.store)

    # When each posts in turn, as fast as it can
    for sender in (a, b, a, b, b, a):
        sender.notify(NOTICE)

    # Then every post waited for the one before it, whichever notifier made it
    times = [at for _, at in clock.posted]
    assert [name for name, _ in clock.posted] == ["a", "b", "a", "b", "b", "a"]
    assert all(later - earlier >= MIN_POST_INTERVAL_SECONDS for earlier, later in itertools.pairwise(times))
    assert times[-1] - times[0] == pytest.approx(5 * MIN_POST_INTERVAL_SECONDS)


class _Unavailable:
    def take_post_slot(self, channel: str, now: float, interval: float) -> float:
        raise StorageUnavailable("the order database is unavailable: disk I/O error")


def test_when_the_slot_cannot_be_taken_the_notice_is_posted_on_the_notifiers_own_spacing() -> None:
    clock = Clock()
    paced = notifier("a", clock, _Unavailable())

    with captured_logs() as logs:
        paced.notify(NOTICE)
        paced.notify(NOTICE)

    assert [at for _, at in clock.posted] == [NOW, NOW + MIN_POST_INTERVAL_SECONDS]
    assert any("post slot could not be taken" in line for line in logs)
