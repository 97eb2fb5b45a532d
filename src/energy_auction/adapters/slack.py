"""Slack incoming-webhook notifier: Block Kit blocks with a plain-text fallback, over urllib.

The webhook URL is a secret (whoever holds it can post to the channel), so it is never logged and
never part of an exception message; only HTTP statuses, error types and attempt numbers are.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from energy_auction.backoff import Backoff
from energy_auction.digest import ALERTS_CHANNEL
from energy_auction.notifications import LINE_LIMIT, Notice, NotificationFailed
from energy_auction.observability import logger
from energy_auction.webhook import LOOPBACK_HOSTS, WEBHOOK_RULE, is_webhook_url

if TYPE_CHECKING:
    from energy_auction.ports import Notifier, PostSlots

MAX_RETRY_AFTER = 30.0
"""Longest wait honoured from a Retry-After header, in seconds."""
MAX_BACKOFF = 30.0
MIN_POST_INTERVAL_SECONDS = 3.0
"""The least time between two posts to one webhook (one channel), retries included, from one
notifier and, through the channel's shared post slot, from all of them: Slack takes about one
message a second per webhook, with short bursts, and on AWS two notifiers may run at once
(``infra.notifications.NOTIFIER_MAX_CONCURRENCY``)."""

_SECTION_TEXT_LIMIT = 3000
_FIELD_LIMIT = 2000
_MAX_BLOCKS = 50
_SEVERITY_EMOJI = {"info": ":information_source:", "warning": ":warning:", "error": ":red_circle:"}


@dataclass(frozen=True)
class HttpResponse:
    """What the notifier needs from an HTTP answer."""

    status: int
    retry_after: str | None = None
    body: str = ""


Post = Callable[[str, bytes, float], HttpResponse]
"""POST a JSON body to a URL with a timeout; raises ``OSError`` or ``http.client.HTTPException``
when no HTTP answer came back."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # Slack does not redirect webhook posts; following one could send the notice somewhere else.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_json(url: str, body: bytes, timeout: float) -> HttpResponse:
    """POST ``body`` as JSON with urllib; an HTTP error status is returned, not raised."""
    handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
    if urlsplit(url).hostname in LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))  # a proxy from the environment cannot reach it
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked by the notifier)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "energy-auction"},
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return HttpResponse(response.status, response.headers.get("Retry-After"), _read(response))
    except urllib.error.HTTPError as err:
        with err:
            return HttpResponse(err.code, err.headers.get("Retry-After"), _read(err))


def _read(response: Any) -> str:
    try:
        return bytes(response.read(1024)).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""


class SlackWebhookNotifier:
    """Posts notices to a Slack incoming webhook (one channel).

    ``webhook_url`` is asked on every notice (it may come from a cached secret); when it gives None,
    the notice goes to ``fallback`` (a log line) instead. Two posts (attempts included) are at least
    ``min_interval`` seconds apart on ``clock``; the instance keeps the time of its last post, so a
    warm Lambda keeps the spacing from one invocation to the next. With ``slots`` (the store's
    post slots), each post also takes ``channel``'s slot first (on ``wall_clock``), so posts from
    notifiers running at once are ``min_interval`` apart too; should the slot's store fail, the
    post goes ahead on the instance's own spacing (logged). A 429 or 5xx answer, or no
    answer at all, is retried up to ``max_attempts`` times, waiting as Retry-After says (at most
    :data:`MAX_RETRY_AFTER` seconds) or with exponential backoff from ``base_delay``. Any other
    status is permanent. Either way :class:`~energy_auction.notifications.NotificationFailed` is
    raised (so the notices it carried are delivered again), after the notice went to ``fallback``,
    so it is at least in the logs.
    """

    def __init__(
        self,
        webhook_url: Callable[[], str | None],
        fallback: Notifier,
        *,
        post: Post = post_json,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_POST_INTERVAL_SECONDS,
        max_attempts: int = 5,
        base_delay: float = 1.0,
        timeout: float = 10,
        slots: PostSlots | None = None,
        channel: str = ALERTS_CHANNEL,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._webhook_url = webhook_url
        self._fallback = fallback
        self._post = post
        self._sleep = sleep
        self._clock = clock
        self._min_interval = min_interval
        self._last_post: float | None = None
        # No jitter: one notifier posts to one webhook at a time; the waits are Slack's to set.
        self._backoff = Backoff(max_attempts, base_delay, MAX_BACKOFF, sleep, jitter=False)
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._slots = slots
        self._channel = channel
        self._wall_clock = wall_clock

    def notify(self, notice: Notice) -> None:
        try:
            url = self._webhook_url()
            if url is not None:
                self._deliver(url, notice)
                return
        except Exception:
            self._fallback.notify(notice)
            raise
        self._fallback.notify(notice)

    def _deliver(self, url: str, notice: Notice) -> None:
        _check_webhook_url(url)
        payload = json.dumps(slack_message(notice), ensure_ascii=False)
        # Belt and braces: a notice quoting the webhook itself must not post it to the channel.
        body = payload.replace(url, "[redacted]").encode()  # brackets: <...> is a link in mrkdwn
        last = "no attempt"
        status: int | None = None
        wait = 0.0
        for attempt in range(1, self._max_attempts + 1):
            retry_after: str | None = None
            self._pace(wait)
            try:
                response = self._post(url, body, self._timeout)
            except (OSError, http.client.HTTPException) as err:
                status, last = None, _error_name(err)
            else:
                status, retry_after = response.status, response.retry_after
                if 200 <= status < 300:
                    logger.info("notice posted to Slack", extra={"attempt": attempt, "kind": notice.kind})
                    return
                last = f"HTTP {status}{_slack_error(response.body)}"
                if status != 429 and status < 500:
                    logger.error("Slack refused the notice", extra={"attempt": attempt, "status": status})
                    raise NotificationFailed(
                        f"Slack refused the notice: {last}", attempts=attempt, status=status, permanent=True
                    )
            if attempt == self._max_attempts:
                break
            asked = _retry_after_seconds(retry_after)
            wait = min(asked, MAX_RETRY_AFTER) if asked is not None else self._backoff.delay(attempt - 1)
            logger.warning(
                "posting to Slack failed; retrying",
                extra={
                    "attempt": attempt,
                    "status": status,
                    "error": last,
                    "retry_in_seconds": max(wait, self._spacing_left()),
                },
            )
        logger.error(
            "posting to Slack failed; giving up",
            extra={"attempts": self._max_attempts, "status": status, "error": last},
        )
        raise NotificationFailed(
            f"Slack did not accept the notice after {self._max_attempts} attempts (last: {last})",
            attempts=self._max_attempts,
            status=status,
        )

    def _pace(self, at_least: float) -> None:
        """Wait ``at_least`` seconds (what Slack or the backoff asked), and until ``min_interval``
        has passed since the last post; then this is the last post."""
        wait = max(at_least, self._spacing_left())
        if wait > 0:
            self._sleep(wait)
        while self._slots is not None and (wait := self._shared_spacing_left()) > 0:
            self._sleep(wait)
        self._last_post = self._clock()

    def _shared_spacing_left(self) -> float:
        """0 once this notifier holds the channel's post slot, else the seconds until it is free."""
        assert self._slots is not None
        try:
            return self._slots.take_post_slot(self._channel, self._wall_clock(), self._min_interval)
        except Exception as err:
            logger.warning(
                "the channel's post slot could not be taken; posting on this notifier's spacing",
                extra={"channel": self._channel, "error": type(err).__name__},
            )
            return 0.0

    def _spacing_left(self) -> float:
        if self._last_post is None:
            return 0.0
        return max(0.0, self._last_post + self._min_interval - self._clock())


def _error_name(err: BaseException) -> str:
    # urllib wraps what went wrong (refused, timed out, TLS) in a URLError; its type is the news.
    reason = getattr(err, "reason", None) if isinstance(err, urllib.error.URLError) else None
    return type(reason).__name__ if isinstance(reason, BaseException) else type(err).__name__


def _check_webhook_url(url: str) -> None:
    if not is_webhook_url(url):
        # The URL itself is not quoted: it is the secret.
        raise NotificationFailed(f"the Slack webhook URL is refused: {WEBHOOK_RULE}", permanent=True)


def _retry_after_seconds(value: str | None) -> float | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:  # the other form HTTP allows: a date
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _slack_error(body: str) -> str:
    # Slack answers errors with a short code (invalid_payload, no_service...). Anything else is not
    # repeated: a proxy's error page could quote the request path, which is part of the secret.
    code = body.strip()
    if 0 < len(code) <= 64 and code.replace("_", "").isalpha() and code.isascii() and code.islower():
        return f" {code}"
    return ""


# --- Block Kit --------------------------------------------------------------------------------


def slack_message(notice: Notice) -> dict[str, Any]:
    """The webhook payload: ``text`` (the fallback for notifications and old clients) and ``blocks``.

    The fallback is the section's text: escaped, then cut to :data:`_SECTION_TEXT_LIMIT` characters.
    Every mrkdwn object is ``verbatim``: the notice's text is shown as written, without Slack
    turning URLs, channel names or @-mentions in it into links.
    """
    text = _clip_escaped(notice.text, _SECTION_TEXT_LIMIT)
    section: dict[str, Any] = {"type": "section", "text": _mrkdwn(text)}
    if notice.fields:
        section["fields"] = [_field(label, value) for label, value in notice.fields]
    context = " · ".join(
        (
            f"{_SEVERITY_EMOJI.get(notice.severity, '')} *{notice.severity}*".strip(),
            f"`{notice.kind.value}`",
            _time(notice.occurred_at),
        )
    )
    listed = [{"type": "section", "text": _mrkdwn(chunk)} for chunk in _list_sections(notice.lines)]
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": notice.title, "emoji": True}},
        section,
        *listed[: _MAX_BLOCKS - 3],  # a Notice has at most MAX_LINES lines: this never cuts
        {"type": "context", "elements": [_mrkdwn(context)]},
    ]
    return {"text": text, "blocks": blocks}


def _list_sections(lines: tuple[str, ...]) -> list[str]:
    """A notice's list as bullet lines, escaped, packed into as few sections as their limit allows.
    Each line is cut to :data:`LINE_LIMIT` characters once escaped, so the list of a notice holds at
    most ``MAX_LINES * LINE_LIMIT`` characters whatever its text."""
    sections: list[str] = []
    current = ""
    for line in lines:
        item = _clip_escaped(f"• {line}", LINE_LIMIT)
        if current and len(current) + 1 + len(item) > _SECTION_TEXT_LIMIT:
            sections.append(current)
            current = ""
        current = f"{current}\n{item}" if current else item
    if current:
        sections.append(current)
    return sections


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip_escaped(text: str, limit: int) -> str:
    """``text`` escaped, at most ``limit`` characters: cut before an entity, never inside one."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    kept: list[str] = []
    size = 0
    for char in text:
        piece = escape(char)
        if size + len(piece) > limit - 1:
            break
        kept.append(piece)
        size += len(piece)
    return "".join(kept) + "…"


def _mrkdwn(text: str) -> dict[str, Any]:
    # Manual markup (``<!date^…>``, *bold*) still works with verbatim; only auto-linking is off.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _field(label: str, value: str) -> dict[str, Any]:
    heading = f"*{escape(label)}*\n"
    return _mrkdwn(heading + _clip_escaped(value, _FIELD_LIMIT - len(heading)))


def _time(occurred_at: str | None) -> str:
    try:
        moment = datetime.now(UTC) if occurred_at is None else datetime.fromisoformat(occurred_at)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        iso = moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        epoch = int(moment.timestamp())
    except (ValueError, OverflowError):
        return escape(occurred_at or "")
    # Slack shows a date token in each reader's time zone; the text after | is for old clients.
    return f"<!date^{epoch}^{{date_short_pretty}} {{time_secs}}|{iso}>"
