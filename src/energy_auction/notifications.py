"""Notices for people: what the pipeline and the alarms tell operators, independent of the channel.

:func:`notice_from_message` turns a message from the notification topic (the state machine's
``sns:publish`` states, CloudWatch alarms, anything else) into a :class:`Notice`. It never raises:
a message it does not understand becomes a generic notice, so no alert is dropped for its shape.
:func:`notice_from_envelope` does the same for an SNS envelope (what the notice queue holds for
each topic message). Channels (Slack, a log line, the local stack's JSONL file) implement
:class:`~energy_auction.ports.Notifier`; ``energy_auction.digest`` gathers a batch's order notices
into one notice for Slack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, get_args

from energy_auction import codec
from energy_auction.orders import order_key

Severity = Literal["info", "warning", "error"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)

# Slack's Block Kit limits, applied here so every channel gets a notice that fits them.
TITLE_LIMIT = 150
"""Characters in a header block."""
TEXT_LIMIT = 3000
"""Characters in a section's text."""
VALUE_LIMIT = 1900
"""Characters of a field's value; a section field holds 2000, with its label."""
LABEL_LIMIT = 60
MAX_FIELDS = 10
"""Fields in one section."""
LINE_LIMIT = 300
"""Characters of one line of a notice's list (a digest lists one notice a line)."""
MAX_LINES = 30
"""Lines in a notice's list (a digest lists at most this many notices): with the header, the text
and the context, well inside Slack's 50 blocks a message, and at most 9,000 characters (Slack
refuses a message whose blocks hold much more than 13,000 in all, though it documents no such
limit)."""

REJECTION_SUBJECT = "Energy Auction: order rejected"
"""The subject of a rejection notice (the state machine's NotifyOrderRejected state uses the same)."""
RUN_SUMMARY_SUBJECT = "Energy Auction: run summary"
"""The subject of a run's summary notice (the state machine's summary publish uses the same)."""

_ELLIPSIS = "…"
_DEFAULT_TITLE = "Energy Auction notification"


class NoticeKind(StrEnum):
    """What a notice is about. The state machine's messages carry theirs in the ``kind`` attribute."""

    ORDER_REJECTED = "order_rejected"
    ORDER_PROCESSING_FAILED = "order_processing_failed"
    RESULTS_NOT_READY = "results_not_ready"
    FETCH_FAILED = "fetch_failed"
    PIPELINE_FAILED = "pipeline_failed"
    """The delivery pipeline (CodePipeline) failed; its EventBridge rule puts the kind in the message."""
    RUN_SUMMARY = "run_summary"
    """A run that settled anything: its counts per outcome and its duration."""
    ALARM = "alarm"
    OTHER = "other"
    DIGEST = "digest"
    """Many order notices in one (``energy_auction.digest``): made by the notifier for Slack, never
    published to the topic."""


class NotificationFailed(Exception):
    """A notice could not be delivered. The message never contains the destination (a secret URL).

    ``attempts`` is how many deliveries were tried, ``status`` the last HTTP status (None when the
    connection failed or nothing was sent), ``permanent`` whether retrying cannot help.
    """

    def __init__(
        self, message: str, *, attempts: int = 0, status: int | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status
        self.permanent = permanent


@dataclass(frozen=True)
class Notice:
    """One notification, ready for any channel.

    Limits are applied on construction: ``title`` and ``text`` become single lines (``text`` is the
    plain-text fallback), long values are cut with an ellipsis, at most :data:`MAX_FIELDS` fields
    are kept, things that look like credentials (Slack webhook URLs, bearer tokens, JWTs) are
    replaced by ``<redacted>``, and lone surrogates by U+FFFD, so that every channel can encode it.
    """

    kind: NoticeKind
    title: str
    text: str
    fields: tuple[tuple[str, str], ...] = ()
    severity: Severity = "info"
    occurred_at: str | None = None
    """When it happened (ISO 8601) if the message says so, else when it was published."""
    key: str | None = None
    """The same for every copy of one notice (a republished or retried one): a rejection is keyed by
    its run and order, anything else by its topic message id. Channels that can, write a key once."""
    order: tuple[str, str] | None = None
    """``(order key, run_id)`` of the order rejection this notice reports: its delivery is recorded
    on that order (``OrderStore.claim_notices``), so it is delivered once."""
    line: str | None = None
    """How this notice reads as one line of a digest (order notices have one; others use the title)."""
    lines: tuple[str, ...] = ()
    """A list shown under the text, one item a line: a digest's notices (at most :data:`MAX_LINES`,
    each cut to :data:`LINE_LIMIT` characters)."""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        title = _clip(_one_line(_redact(_encodable(self.title))), TITLE_LIMIT) or _DEFAULT_TITLE
        text = _clip(_one_line(_redact(_encodable(self.text))), TEXT_LIMIT) or title
        pairs = tuple(
            (
                _clip(_one_line(_encodable(str(label))), LABEL_LIMIT) or "-",
                _clip(_redact(_encodable(str(value))), VALUE_LIMIT) or "-",
            )
            for label, value in self.fields
        )
        if len(pairs) > MAX_FIELDS:
            hidden = ", ".join(label for label, _ in pairs[MAX_FIELDS - 1 :])
            pairs = (*pairs[: MAX_FIELDS - 1], ("more", _clip(hidden, VALUE_LIMIT)))
        # A frozen dataclass normalises its own fields through object.__setattr__.
        object.__setattr__(self, "kind", NoticeKind(self.kind))
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "fields", pairs)
        if self.occurred_at is not None:
            occurred_at = _clip(_one_line(_encodable(self.occurred_at)), 64) or None
            object.__setattr__(self, "occurred_at", occurred_at)
        if self.line is not None:
            object.__setattr__(self, "line", _list_item(self.line) or None)
        lines = tuple(item for item in (_list_item(line) for line in self.lines) if item)
        if len(lines) > MAX_LINES:
            lines = (*lines[: MAX_LINES - 1], f"{_ELLIPSIS} {len(lines) - MAX_LINES + 1} more lines")
        object.__setattr__(self, "lines", lines)

    @property
    def as_line(self) -> str:
        """The notice as one line of a digest: its ``line``, else its title."""
        return self.line or self.title

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: kind, severity, title, text, fields (``{label: value}``), occurred_at, key,
        and lines when it has a list."""
        document: dict[str, Any] = {
            "kind": self.kind.value,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "fields": dict(self.fields),
            "occurred_at": self.occurred_at,
            "key": self.key,
        }
        if self.lines:
            document["lines"] = list(self.lines)
        return document


def notice_from_message(message: str, kind: str | None, subject: str | None) -> Notice:
    """The notice for one message from the notification topic; never raises.

    Parameters
    ----------
    message
        The SNS message: the state machine's JSON (``States.JsonToString`` of the state), a
        CloudWatch alarm's JSON, or any other text.
    kind
        The ``kind`` message attribute (set by the state machine), if any.
    subject
        The SNS subject, if any.
    """
    document = _parse_json(message)
    # EventBridge rules cannot set message attributes, so the delivery rule names its kind inside.
    inner_kind = document.get("kind") if isinstance(document, dict) else None
    declared = (kind or (inner_kind if isinstance(inner_kind, str) else "") or "").strip()
    if isinstance(document, dict):
        # The kind attribute names the state machine's messages; alarms are known by their shape.
        interpret = _INTERPRETERS.get(declared, _alarm)
        notice = interpret(document)
        if notice is not None:
            return notice
    return _generic(message, document, declared, subject)


def notice_from_envelope(body: str, default_key: str | None = None) -> Notice:
    """The notice for one SNS envelope (an SQS message body, the topic subscribed without raw
    message delivery); never raises.

    The envelope's ``Message``, ``Subject`` and ``kind`` message attribute make the notice
    (:func:`notice_from_message`); its ``Timestamp`` is the notice's time and its ``MessageId`` its
    key when the message names neither. A body that is not an envelope is read as the message
    itself, keyed by ``default_key`` (the queue's message id).
    """
    envelope = _parse_json(body)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("Message"), str):
        notice = notice_from_message(body, None, None)
        return replace(notice, key=notice.key or default_key)
    kind = _mapping(_mapping(envelope.get("MessageAttributes")).get("kind")).get("Value")
    subject = envelope.get("Subject")
    notice = notice_from_message(
        envelope["Message"],
        kind if isinstance(kind, str) else None,
        subject if isinstance(subject, str) else None,
    )
    timestamp, message_id = _text(envelope.get("Timestamp")), _text(envelope.get("MessageId"))
    return replace(
        notice,
        occurred_at=notice.occurred_at or timestamp,
        key=notice.key or message_id or default_key,
    )


# --- The state machine's messages -------------------------------------------------------------


def _order_rejected(document: Mapping[str, Any]) -> Notice | None:
    result = _mapping(document.get("result"))
    record_id = _text(result.get("record_id"))
    if record_id is None:
        return None
    error = _LambdaError.of(document.get("error"))
    reason = _text(result.get("reason")) or error.message or "no reason given"
    run_id = _text(document.get("run_id"))
    trader = result.get("trader")
    # A message without its trader (from an earlier version) is delivered, untracked.
    key = order_key(trader, record_id) if isinstance(trader, str) else None
    return Notice(
        kind=NoticeKind.ORDER_REJECTED,
        title=f"Order {record_id} of {_text(trader) or 'an unknown trader'} rejected",
        text=f"The auction rejected order {record_id} of trader {_text(trader) or 'unknown'}: {reason}"
        + _in_run(run_id),
        fields=_present(
            ("record_id", record_id),
            ("trader", _text(trader)),
            *_order_fields(result),
            ("auction_date", _text(result.get("auction_date"))),
            ("run_id", run_id),
            ("reason", reason),
        ),
        severity="warning",
        occurred_at=_text(result.get("decided_at")),
        key=rejection_key(key or record_id, run_id) if run_id else None,
        order=(key, run_id) if key and run_id else None,
        line=f"{record_id} ({_text(trader) or 'unknown trader'}) rejected: {reason}",
    )


_RESULT_KEYS = frozenset({"record_id", "trader", "status", "power", "auction_date", "decided_at", "reason"})
"""The keys of an order result that the notices show in their own way (or not at all)."""


def _order_fields(result: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The order's own fields an order result carries (``parameter_1``, ...), as submitted."""
    return [(str(key), _text(value)) for key, value in result.items() if key not in _RESULT_KEYS]


def rejection_key(key: str, run_id: str) -> str:
    """The key of an order's rejection notice (``key``: the store's key of the order): one run
    rejects an order once."""
    return f"order_rejected/{run_id}/{key}"


def _order_processing_failed(document: Mapping[str, Any]) -> Notice | None:
    result = _mapping(document.get("result"))
    record_id = _text(result.get("record_id"))
    if record_id is None:
        return None
    error = _LambdaError.of(document.get("error"))
    run_id = _text(document.get("run_id"))
    what = f"{error.name}: {error.message}" if error.message else (error.name or "unknown error")
    return Notice(
        kind=NoticeKind.ORDER_PROCESSING_FAILED,
        title=f"Processing of order {record_id} failed; it stays pending for the next run",
        text=f"Processing of order {record_id} of trader {_text(result.get('trader')) or 'unknown'} "
        f"failed ({what}); it stays pending for the next run" + _in_run(run_id),
        fields=_present(
            ("record_id", record_id),
            ("trader", _text(result.get("trader"))),
            *_order_fields(result),
            ("run_id", run_id),
            ("error", error.name),
            ("error_message", error.message),
        ),
        severity="error",
        line=f"{record_id} ({_text(result.get('trader')) or 'unknown trader'}) failed to process: {what}; "
        "it stays pending",
    )


def _results_not_ready(document: Mapping[str, Any]) -> Notice | None:
    run_id = _text(document.get("run_id"))
    attempts = _text(document.get("attempt"))
    if run_id is None or document.get("results") is not False:
        return None
    after = f"after {attempts} attempts " if attempts else ""
    return Notice(
        kind=NoticeKind.RESULTS_NOT_READY,
        title=f"Auction results not ready {after}(run {run_id})",
        text=f"The auction results were not ready {after}in run {run_id}; no order was processed. "
        "Pending orders stay pending for the next run.",
        fields=_present(("run_id", run_id), ("attempts", attempts)),
        severity="error",
    )


def _fetch_failed(document: Mapping[str, Any]) -> Notice | None:
    run_id = _text(document.get("run_id"))
    if run_id is None:
        return None
    error = _LambdaError.of(document.get("error"))
    # The state keeps the count of FetchResults calls that returned; the failed call was the next one.
    attempt = document.get("attempt")
    failed_attempt = None
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 0:
        failed_attempt = str(attempt + 1)
    what = f"{error.name}: {error.message}" if error.message else (error.name or "unknown error")
    release = _mapping(document.get("release"))
    released = release.get("released")
    if isinstance(released, int) and not isinstance(released, bool):
        after = f"the {released} orders it had claimed were given back to the next run."
    else:  # the release itself failed: the claims lapse on their own
        after = "orders it had claimed return to the pending pool when their claim lapses."
    return Notice(
        kind=NoticeKind.FETCH_FAILED,
        title=f"Fetching auction results failed (run {run_id})",
        text=f"FetchResults failed ({what}) in run {run_id}; no order was processed, and " + after,
        fields=_present(
            ("run_id", run_id),
            ("attempt", failed_attempt),
            ("error", error.name),
            ("error_message", error.message),
            ("released", str(released) if isinstance(released, int) else None),
        ),
        severity="error",
    )


@dataclass(frozen=True)
class _LambdaError:
    """The ``{"Error", "Cause"}`` a Catch puts in the state; Cause is the Lambda error as a JSON string."""

    name: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, value: Any) -> _LambdaError:
        error = _mapping(value)
        name = _text(error.get("Error"))
        cause = error.get("Cause")
        if not isinstance(cause, str) or not cause.strip():
            return cls(name)
        parsed = _parse_json(cause)
        if isinstance(parsed, dict):
            # The stack trace and request id stay in the Lambda's logs; the notice needs the message.
            name = name or _text(parsed.get("errorType"))
            return cls(name, _text(parsed.get("errorMessage")))
        # States.Timeout, States.TaskFailed and the like carry plain text.
        return cls(name, _one_line(cause))


# --- CloudWatch alarms and everything else ----------------------------------------------------

_ALARM_SEVERITY: dict[str, Severity] = {"ALARM": "error", "INSUFFICIENT_DATA": "warning", "OK": "info"}


def _alarm(document: Mapping[str, Any]) -> Notice | None:
    name = _text(document.get("AlarmName"))
    state = _text(document.get("NewStateValue"))
    if name is None or state is None or "NewStateReason" not in document:
        return None
    reason = _text(document.get("NewStateReason")) or "no reason given"
    trigger = _mapping(document.get("Trigger"))
    metric = "/".join(
        part for part in (_text(trigger.get("Namespace")), _text(trigger.get("MetricName"))) if part
    )
    old_state = _text(document.get("OldStateValue"))
    return Notice(
        kind=NoticeKind.ALARM,
        title=f"{state}: {name}",
        text=f"Alarm {name} is {state}: {reason}",
        fields=_present(
            ("alarm", name),
            ("state", f"{old_state} → {state}" if old_state else state),
            ("description", _text(document.get("AlarmDescription"))),
            ("metric", metric or None),
            ("region", _text(document.get("Region"))),
            ("reason", reason),
        ),
        severity=_ALARM_SEVERITY.get(state.upper(), "warning"),
        occurred_at=_text(document.get("StateChangeTime")),
    )


# Values of keys that name a credential are never shown, whatever the message.
_SECRET_KEY = re.compile(
    r"secret|password|passwd|token|authori[sz]ation|webhook|api[_-]?key|credential", re.I
)


def _generic(message: str, document: Any, declared: str, subject: str | None) -> Notice:
    title = _one_line(subject or "") or _DEFAULT_TITLE
    fields: list[tuple[str, str | None]] = []
    if isinstance(document, dict):
        # EventBridge events (the CodePipeline failure rule) name themselves in detail-type.
        if not subject and isinstance(document.get("detail-type"), str):
            title = document["detail-type"]
        fields.extend((str(key), _text(value)) for key, value in _scrubbed(document).items())
        text = title
    else:
        text = _one_line(message) or title
    if declared and declared != NoticeKind.OTHER:
        fields.insert(0, ("kind", declared))
    return Notice(
        kind=NoticeKind.OTHER,
        title=title,
        text=text,
        fields=_present(*fields),
        severity="warning",
    )


def _pipeline_failed(document: Mapping[str, Any]) -> Notice | None:
    pipeline = _text(document.get("pipeline"))
    if pipeline is None:
        return None
    execution = _text(document.get("execution_id"))
    return Notice(
        kind=NoticeKind.PIPELINE_FAILED,
        title=f"Delivery pipeline {pipeline} failed",
        text=f"Execution {execution or '(unknown)'} of {pipeline} failed; nothing from it was deployed "
        "after the failed stage. See the CodePipeline console, then release the change again.",
        fields=_present(
            ("pipeline", pipeline),
            ("execution_id", execution),
            ("region", _text(document.get("region"))),
            ("time", _text(document.get("time"))),
        ),
        severity="error",
        # The event's own time: the SNS timestamp is when the rule published it, which can be later.
        occurred_at=_text(document.get("time")),
    )


_RUN_COUNTS = ("accepted", "rejected", "failed")
"""The outcomes a run summary counts, in the order it shows them."""


def _run_summary(document: Mapping[str, Any]) -> Notice | None:
    run_id = _text(document.get("run_id"))
    settled = _count(document.get("orders"))
    if run_id is None or settled is None:
        return None
    counts = {name: _count(document.get(name)) for name in _RUN_COUNTS}
    outcomes = ", ".join(f"{value:,} {name}" for name, value in counts.items() if value is not None)
    left, staged = _count(document.get("left")), _count(document.get("staged"))
    duration = _duration(document.get("duration_seconds"))
    text = f"Run {run_id} settled {_orders(settled)}" + (f" in {duration}" if duration else "")
    text += f": {outcomes}." if outcomes else "."
    if counts["failed"]:
        text += " The failed ones are back to pending for the next run."
    if left:
        text += f" {left:,} left for the next run."
    title = f"Run {run_id}: {_orders(settled)} settled"
    return Notice(
        kind=NoticeKind.RUN_SUMMARY,
        title=title + (f", {left:,} left for the next run" if left else ""),
        text=text,
        fields=_present(
            ("run_id", run_id),
            ("orders", str(settled)),
            *((name, None if value is None else str(value)) for name, value in counts.items()),
            ("left", None if left is None else str(left)),
            ("staged", None if staged is None else str(staged)),
            ("started_at", _text(document.get("started_at"))),
            ("duration", duration),
        ),
        severity="warning" if counts["failed"] else "info",
        # One summary per run: a copy (a retried publish) is the same notice.
        key=f"{NoticeKind.RUN_SUMMARY.value}/{run_id}",
    )


def _orders(count: int) -> str:
    return f"{count:,} order" + ("" if count == 1 else "s")


def _count(value: Any) -> int | None:
    """A count from a JSON message: a whole number of 0 or more (the JSON may carry 3 or 3.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = Decimal(str(value))
    if not number.is_finite() or number < 0 or number != number.to_integral_value():
        return None
    return int(number)


def _duration(value: Any) -> str | None:
    """Seconds as people read them: 42.3 s, 12 min 5 s, 2 h 3 min."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    seconds = float(value)
    if not 0 <= seconds < 10**9:
        return None
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


_INTERPRETERS = {
    NoticeKind.PIPELINE_FAILED.value: _pipeline_failed,
    NoticeKind.ORDER_REJECTED.value: _order_rejected,
    NoticeKind.ORDER_PROCESSING_FAILED.value: _order_processing_failed,
    NoticeKind.RESULTS_NOT_READY.value: _results_not_ready,
    NoticeKind.FETCH_FAILED.value: _fetch_failed,
    NoticeKind.RUN_SUMMARY.value: _run_summary,
}


# --- Helpers ----------------------------------------------------------------------------------

_REDACTIONS = (
    (re.compile(r"https?://hooks\.slack(?:-gov)?\.com/\S*", re.I), "<redacted>"),
    (re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"), "<redacted>"),
    (re.compile(r"\b(Bearer|Basic)\s+[\w.~+/=-]+", re.I), r"\1 <redacted>"),
)


def _scrubbed(document: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """``document`` with the values of credential-like keys replaced, at every level."""
    scrubbed: dict[str, Any] = {}
    for key, value in document.items():
        if _SECRET_KEY.search(str(key)):
            scrubbed[key] = "<redacted>"
        elif isinstance(value, dict | list) and depth >= 8:
            # Deeper than any event we expect: summarised, so a hostile message cannot recurse deep.
            scrubbed[key] = "…"
        elif isinstance(value, dict):
            scrubbed[key] = _scrubbed(value, depth + 1)
        elif isinstance(value, list):
            scrubbed[key] = [_scrubbed(item, depth + 1) if isinstance(item, dict) else item for item in value]
        else:
            scrubbed[key] = value
    return scrubbed


def _encodable(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (a pair written as two halves is joined).

    JSON may carry ``"\\udc00"``, which decodes to a lone surrogate that no UTF-8 channel can
    encode: left in, the notice would fail on every retry, then again when re-published.
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _parse_json(text: str) -> Any:
    try:
        return codec.loads(text)
    except (ValueError, RecursionError):
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A JSON value as display text; None for null and empty strings."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float | Decimal):
        return str(value)
    try:
        return codec.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _present(*pairs: tuple[str, str | None]) -> tuple[tuple[str, str], ...]:
    return tuple((label, value) for label, value in pairs if value is not None)


def _in_run(run_id: str | None) -> str:
    return f" (run {run_id})" if run_id else ""


def _list_item(text: str) -> str:
    return _clip(_one_line(_redact(_encodable(text))), LINE_LIMIT)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_ELLIPSIS)] + _ELLIPSIS
