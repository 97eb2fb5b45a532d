"""Notice channels that need no outside service: a structured log line, and a fan-out to several."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from energy_auction.observability import logger

if TYPE_CHECKING:
    from energy_auction.notifications import Notice
    from energy_auction.ports import Notifier


class LogNotifier:
    """Writes each notice as one structured log line (the channel when no Slack webhook is configured)."""

    def notify(self, notice: Notice) -> None:
        log = {"info": logger.info, "warning": logger.warning, "error": logger.error}[notice.severity]
        log(notice.title, extra={"notice": notice.as_dict()})


class FanOutNotifier:
    """Delivers each notice to every notifier in order.

    When one raises, the rest still get the notice; then the first error is raised, so the caller
    (the notifier Lambda, which SNS retries) knows a channel missed it.
    """

    def __init__(self, notifiers: Iterable[Notifier]) -> None:
        self._notifiers: Sequence[Notifier] = tuple(notifiers)

    def notify(self, notice: Notice) -> None:
        first_error: Exception | None = None
        for notifier in self._notifiers:
            try:
                notifier.notify(notice)
            except Exception as err:
                # The type and channel only: an error's text may hold what a channel keeps secret.
                logger.warning(
                    "a notifier failed",
                    extra={"notifier": type(notifier).__name__, "error": type(err).__name__},
                )
                first_error = first_error or err
        if first_error is not None:
            raise first_error
