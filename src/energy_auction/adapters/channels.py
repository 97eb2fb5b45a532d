"""The notice channel that needs no outside service: a structured log line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from energy_auction.observability import logger

if TYPE_CHECKING:
    from energy_auction.notifications import Notice


class LogNotifier:
    """Writes each notice as one structured log line: every notice on AWS (``notice_log``), and what
    Slack would have got while no webhook is configured."""

    def notify(self, notice: Notice) -> None:
        log = {"info": logger.info, "warning": logger.warning, "error": logger.error}[notice.severity]
        log(notice.title, extra={"notice": notice.as_dict()})
