"""Orders: the request model, the stored order, validation rules and the expiry policy.

A model module: no storage, no AWS. The intake use cases are in :mod:`energy_auction.intake`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError

from energy_auction import codec
from energy_auction.errors import (
    BodyTooLarge,
    EnergyAuctionError,
    InvalidJson,
    OrderLocked,
    OrdersAlreadyProcessed,
    OrdersInvalid,
    Problem,
    TooManyOrders,
)
from energy_auction.settings import MAX_ORDERS_CEILING

ORDER_TTL_SECONDS = 24 * 60 * 60
"""An order is kept, and its record_id reserved, for 24 hours after its (latest) submission."""
RETENTION_SECONDS = 14 * 24 * 60 * 60
"""How long after its expiry the store keeps an order that still matters to the pipeline: one the
market decided and no run settled yet, and a rejected one, so that every copy of its notice is
recognised (as long as the notifier's dead-letter queue keeps a notice)."""

RECORD_ID_MAX_LENGTH = 64
RECORD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RECORD_ID_RULE = (
    f"1 to {RECORD_ID_MAX_LENGTH} characters: letters, digits, '_', '-' or '.', "
    "starting with a letter or digit"
)
PARAMETER_1_MAX_LENGTH = 256

_RECORD_ID_RE = re.compile(RECORD_ID_PATTERN)


def is_record_id(text: str) -> bool:
    """Whether ``text`` is a record_id an order could have (so a lookup of anything else can stop)."""
    return len(text) <= RECORD_ID_MAX_LENGTH and _RECORD_ID_RE.fullmatch(text) is not None


# DynamoDB numbers: up to 38 significant digits, magnitude at least 1e-130 and less than 1e126.
_MAX_DIGITS = 38
_MIN_ADJUSTED_EXPONENT = -130
_MAX_ADJUSTED_EXPONENT = 125
_MIN_EXPONENT = -165  # boto3's DynamoDB context: Emin -128 less 37 more digits
PARAMETER_2_RANGE_RULE = "must be at least 1e-130 and less than 1e126 in magnitude"
PARAMETER_2_PLACE_RULE = "must have no digit smaller than 1e-165"


class OrderStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


TRADER_KEY_LENGTH = 52
"""Characters of a trader key: the base32 (RFC 4648, lower case, no padding) of a SHA-256."""


@functools.lru_cache(maxsize=4096)
def trader_key(trader: str) -> str:
    """The trader's part of every storage key: base32 of the SHA-256 of the token's ``sub`` (UTF-8).

    Whatever the subject holds (``/``, ``#``, ``..``, spaces, any unicode, any length), the key is
    52 characters of ``[a-z2-7]``: it cannot reach another trader's keys, nor escape a key prefix.
    """
    digest = hashlib.sha256(trader.encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def order_key(trader: str, record_id: str) -> str:
    """The store's key of an order: ``<trader key>/<record_id>``, unique across traders.

    Neither part can hold ``/`` (:func:`trader_key`, :data:`RECORD_ID_PATTERN`), so the key splits
    back into exactly these two."""
    return f"{trader_key(trader)}/{record_id}"


@dataclass(frozen=True)
class BatchTally:
    """How the orders of one batch of a run, or of every batch recorded so far, were settled."""

    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    """Given back after processing kept failing (pending again, for a later run)."""
    batches: int = 0

    @property
    def orders(self) -> int:
        return self.accepted + self.rejected + self.failed

    def __add__(self, other: BatchTally) -> BatchTally:
        return BatchTally(
            self.accepted + other.accepted,
            self.rejected + other.rejected,
            self.failed + other.failed,
            self.batches + other.batches,
        )

    @classmethod
    def of(cls, statuses: Sequence[str]) -> BatchTally:
        """One batch's tally from its orders' statuses (``accepted``, ``rejected`` or ``failed``)."""
        known = {"accepted", "rejected", "failed"}
        unknown = set(statuses) - known
        if unknown:
            raise ValueError(f"an order of a batch ended {sorted(unknown)}; expected one of {sorted(known)}")
        return cls(statuses.count("accepted"), statuses.count("rejected"), statuses.count("failed"), 1)


@dataclass(frozen=True)
class RunRecord:
    """What a run took and, so far, settled: kept with the orders for 14 days."""

    staged: int = 0
    """Orders the run took (FetchResults staged their keys)."""
    left: int = 0
    """Claimable orders beyond the run's limit, left unclaimed for the next run."""
    settled: BatchTally = BatchTally()


class NoticeHold(NamedTuple):
    """A delivery's hold on the rejection notice of the order ``key``, rejected by ``run_id``:
    ``delivery`` is the delivery's own token (``OrderStore.claim_notices``)."""

    key: str
    run_id: str
    delivery: str


class NoticeClaim(StrEnum):
    """What a notifier may do with an order's rejection notice (``OrderStore.claim_notices``)."""

    CLAIMED = "claimed"
    """The notice is owed and now held by this delivery: post it, then ``finish_notices``."""
    DELIVERED = "delivered"
    """Already delivered: a duplicate (a retry, or a redelivery that crossed the first one)."""
    BUSY = "busy"
    """Another delivery holds it right now; if that one fails, the notice is retried or redelivered."""
    UNKNOWN = "unknown"
    """No such owed notice (the order expired, was deleted or replaced): deliver it, untracked."""


def _finite_number(value: object) -> Decimal:
    # bool is an int subclass: refuse it before the int branch.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a JSON number")
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise ValueError("must be a finite number (NaN and Infinity are refused)")
    if number.is_zero():
        return Decimal(0)  # 0E+200 is zero too, and DynamoDB refuses the exponent
    # Count digits without a decimal context: normalize() would round to 28 digits first.
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    significant = len(digits)
    while digits[significant - 1] == 0:
        significant -= 1
    exponent += len(digits) - significant
    if significant > _MAX_DIGITS:
        raise ValueError(f"must have at most {_MAX_DIGITS} significant digits")
    adjusted = exponent + significant - 1
    if not _MIN_ADJUSTED_EXPONENT <= adjusted <= _MAX_ADJUSTED_EXPONENT:
        raise ValueError(PARAMETER_2_RANGE_RULE)
    if exponent < _MIN_EXPONENT:  # 1.2345678901234567890123456789012345678e-130: in range, too fine
        raise ValueError(PARAMETER_2_PLACE_RULE)
    if len(digits) > _MAX_DIGITS:  # trailing zeros beyond 38 digits: same value, fewer digits
        return Decimal((sign, digits[:significant], exponent))
    return number


FiniteNumber = Annotated[Decimal, BeforeValidator(_finite_number)]
RecordId = Annotated[
    StrictStr, Field(min_length=1, max_length=RECORD_ID_MAX_LENGTH, pattern=RECORD_ID_PATTERN)
]


class OrderRequest(BaseModel):
    """One order as a trader submits it (the element of the POST /orders array)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    record_id: RecordId = Field(description=f"The order's key, unique for 24 hours: {RECORD_ID_RULE}.")
    parameter_1: StrictStr = Field(min_length=1, max_length=PARAMETER_1_MAX_LENGTH)
    parameter_2: FiniteNumber = Field(description="A finite JSON number, kept exactly.")


ORDER_FIELDS: tuple[str, ...] = tuple(OrderRequest.model_fields)
"""The fields a trader sends for an order, in order (``record_id`` first): declared once, by
:class:`OrderRequest`; a stored order, a result, a notice and the API's schema all follow it."""


class Decision(BaseModel):
    """The market's answer for one order, decided once and stored with the run's claim.

    A run that dies after asking the market leaves the decision on the order; the run that takes
    the order over settles it with this decision instead of asking again, so a result object that
    the dead run wrote can never contradict the order's final status.
    """

    model_config = ConfigDict(frozen=True)

    status: Literal["accepted", "rejected"]
    power: Decimal
    """Cleared power (MW): the order's volume when accepted, 0 when rejected."""
    auction_date: str
    """YYYY-MM-DD (UTC) of the auction the result belongs to."""
    decided_at: str
    """ISO 8601 UTC time the market reported the result."""
    submitted_at: str
    """The ``submitted_at`` of the order it decides: a replaced order is a new order, undecided."""
    reason: str | None = None


class Order(OrderRequest):
    """An order as stored: the trader's fields (those of :class:`OrderRequest`) plus who submitted
    it, its status, lifetime and the pipeline's bookkeeping."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    trader: str
    """The ``sub`` of the token that submitted the order: the order belongs to this trader."""
    status: OrderStatus = OrderStatus.PENDING
    submitted_at: str
    """ISO 8601 UTC time of the (latest) submission."""
    expires_at: int
    """Epoch seconds after which the order no longer exists (the DynamoDB TTL attribute)."""
    outcome: dict[str, Any] | None = None
    """The auction outcome once the pipeline has processed the order: status, power, reason,
    run_id, auction_date, processed_at and, when accepted, result_key."""
    claim_run_id: str | None = None
    """The pipeline run processing this order right now, if any."""
    claim_expires_at: int | None = None
    """Epoch seconds when that run's claim lapses (a run that died gives its orders back then)."""
    decision: Decision | None = None
    """The market's answer, stored when a run claimed the order; kept by every later claim."""
    notice_due_at: int | None = None
    """Set while the rejection notice of this (rejected) order is owed, that is not yet delivered:
    the epoch seconds after which the next pipeline run publishes it again."""
    notice_lease_until: int | None = None
    """A delivery of the owed notice is in progress until then (epoch seconds)."""
    notice_redeliveries: int | None = None
    """How many times the owed notice was published again (each wait doubles)."""
    notice_delivery: str | None = None
    """Which delivery holds the owed notice until ``notice_lease_until`` (its own token)."""
    cancelled_at: str | None = None
    """ISO 8601 UTC time the trader cancelled the order (status ``cancelled``)."""

    @property
    def key(self) -> str:
        """The store's key of this order (:func:`order_key`)."""
        return order_key(self.trader, self.record_id)

    @property
    def listed_at(self) -> str:
        """Where the order stands in a listing, newest first: its submission time, then its key
        (so two orders submitted in the same millisecond keep one order)."""
        return f"{self.submitted_at}|{self.key}"

    def is_live(self, now: float) -> bool:
        return self.expires_at > now

    def is_claimed(self, now: float) -> bool:
        return self.claim_run_id is not None and (self.claim_expires_at or 0) > now

    def is_claimable(self, run_id: str, now: float) -> bool:
        """Pending, free for ``run_id`` (never claimed, claim lapsed, or its own), and live or decided:
        a decided order is settled even after it expired, so its decision is never left half done."""
        return (
            self.status is OrderStatus.PENDING
            and (self.is_live(now) or self.decision is not None)
            and (not self.is_claimed(now) or self.claim_run_id == run_id)
        )

    def is_retirable(self, now: float) -> bool:
        """Pending, expired and undecided: no run may claim it again (``is_claimable``), so it is
        taken out of the pending orders (``OrderStore.retire_orders``) until the TTL sweep deletes
        it or a new submission of its record_id replaces it."""
        return self.status is OrderStatus.PENDING and not self.is_live(now) and self.decision is None

    def is_replaceable(self, now: float) -> bool:
        """Whether a new submission with this record_id may replace this stored order.

        An expired order is free, unless the market decided it and it is not settled yet, or its
        rejection notice is still owed; a live one while it is cancelled, or pending, undecided
        and not held by a run.
        """
        if not self.is_live(now):
            unsettled = self.status is OrderStatus.PENDING and self.decision is not None
            return not unsettled and self.notice_due_at is None
        if self.status is OrderStatus.CANCELLED:
            return True
        return self.is_cancellable(now)

    def is_cancellable(self, now: float) -> bool:
        """Whether the trader may cancel this order now: live, pending, undecided, held by no run."""
        return (
            self.is_live(now)
            and self.status is OrderStatus.PENDING
            and self.decision is None
            and not self.is_claimed(now)
        )

    def cancel_refused(self, now: float) -> EnergyAuctionError:
        """Why this live order cannot be cancelled now (it is not ``is_cancellable``)."""
        if self.status in (OrderStatus.ACCEPTED, OrderStatus.REJECTED):
            return OrdersAlreadyProcessed([self.record_id])
        return OrderLocked(self.record_id)

    def purge_at(self) -> int:
        """When the store may delete this order (the DynamoDB TTL attribute): at its expiry, or
        :data:`RETENTION_SECONDS` later if it was decided and not settled yet, or rejected."""
        retained = self.status is OrderStatus.REJECTED or (
            self.status is OrderStatus.PENDING and self.decision is not None
        )
        return self.expires_at + (RETENTION_SECONDS if retained else 0)

    def owes_notice(self, run_id: str) -> bool:
        """Whether this order's rejection by ``run_id`` still has to be notified."""
        return self.completed_by(run_id, OrderStatus.REJECTED) and self.notice_due_at is not None

    def completed_by(self, run_id: str, status: OrderStatus) -> bool:
        """Whether ``run_id`` already settled this order with ``status`` (a retried task's work)."""
        return self.status is status and (self.outcome or {}).get("run_id") == run_id

    def request_fields(self) -> dict[str, Any]:
        """The trader's fields of this order (:data:`ORDER_FIELDS`), as they were submitted."""
        return {name: getattr(self, name) for name in ORDER_FIELDS}

    def public_view(self) -> dict[str, Any]:
        """The order as the API returns it (without the pipeline's bookkeeping)."""
        return self.model_dump(mode="python", exclude_none=True, exclude=set(PIPELINE_FIELDS))


PIPELINE_FIELDS = frozenset(
    {
        "claim_run_id",
        "claim_expires_at",
        "decision",
        "notice_due_at",
        "notice_lease_until",
        "notice_redeliveries",
        "notice_delivery",
    }
)
"""Fields of a stored order that only the pipeline uses; the API never shows them."""


LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 100
LIST_EXAMINED_MAX = 1_000
"""The most stored orders one listing request looks at to fill a page (a status filter may match
few of them): past this, the page ends early, with a cursor to go on from."""


@dataclass(frozen=True)
class OrderQuery:
    """Which orders a listing wants: one trader's (``trader``) or everyone's (None), live at
    ``now``, newest first, optionally only of ``status`` and submitted at or after ``since``
    (epoch seconds), strictly older than ``before`` (a ``listed_at`` from the previous page)."""

    now: float
    trader: str | None = None
    status: OrderStatus | None = None
    since: float | None = None
    before: str | None = None
    limit: int = LIST_LIMIT_DEFAULT

    def lowest_listed_at(self) -> str:
        """The smallest ``listed_at`` an order this query wants can have: live orders were submitted
        less than 24 hours ago (``expires_at`` is the submission's whole second plus 24 hours)."""
        oldest_live = math.floor(self.now - ORDER_TTL_SECONDS) + 1
        since = oldest_live if self.since is None else max(oldest_live, self.since)
        # No order was submitted a day from now: a later since (up to year 9999 and past it, with a
        # negative offset) wants what that day wants, nothing, and stays a time iso_utc can write.
        return iso_utc(min(since, self.now + ORDER_TTL_SECONDS))

    def wants(self, order: Order) -> bool:
        return (
            order.is_live(self.now)
            and (self.trader is None or order.trader == self.trader)
            and (self.status is None or order.status is self.status)
            and order.listed_at >= self.lowest_listed_at()
            and (self.before is None or order.listed_at < self.before)
        )


@dataclass(frozen=True)
class OrderPage:
    """A page of a listing: the orders, and where the next page starts (None: this was the last)."""

    orders: Sequence[Order]
    next_before: str | None


@dataclass(frozen=True)
class Limits:
    """Per-request limits (configurable through settings)."""

    max_orders: int = MAX_ORDERS_CEILING
    max_body_bytes: int = 256 * 1024


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate key {key!r} in an object")
        result[key] = value
    return result


def _position(text: str) -> str:
    """``line L column C`` of the character just after ``text`` (both counted from 1)."""
    line, column = text.count("\n") + 1, len(text) - text.rfind("\n")
    return f"line {line} column {column}"


def _utf8(body: bytes) -> str:
    # Strictly UTF-8: json.loads would detect UTF-16 and UTF-32 in bytes, and skip a UTF-8 BOM.
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        where = _position(body[: err.start].decode("utf-8"))
        raise InvalidJson(f"body is not valid JSON: bytes that are not UTF-8 at {where}") from None


def parse_json(body: str | bytes) -> Any:
    """Parse a JSON document keeping every number exact (``Decimal``, integers too, of any length).

    Bytes must be UTF-8, and a byte order mark is refused (RFC 8259 section 8.1: JSON on a network
    is UTF-8, without one). NaN and Infinity literals (which Python's parser accepts) become
    non-finite Decimals, so the validator can name the field they appear in; duplicate keys are
    invalid JSON here. Each message is plain, with the line and column where they are known.
    """
    text = _utf8(body) if isinstance(body, bytes) else body
    if text.startswith("\ufeff"):
        raise InvalidJson(
            "body is not valid JSON: a byte order mark (U+FEFF) at line 1 column 1; send UTF-8 without one"
        )
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_int=Decimal,  # int() refuses more than 4300 digits; the validator counts digits itself
            parse_constant=Decimal,
            object_pairs_hook=_reject_duplicate_keys,
        )
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        if text[err.pos : err.pos + 1] == "\x00":
            # What UTF-16 or UTF-32 text looks like when read as UTF-8: a NUL beside every character.
            raise InvalidJson(
                f"body is not valid JSON: a NUL character at {where} (send UTF-8, not UTF-16 or UTF-32)"
            ) from None
        raise InvalidJson(f"body is not valid JSON: {err.msg} at {where}") from None
    except RecursionError:
        raise InvalidJson("body is not valid JSON: nested too deeply") from None
    except _DuplicateKey as err:
        raise InvalidJson(f"body is not valid JSON: {err}") from None


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": f"is not a known field (known: {', '.join(ORDER_FIELDS)})",
    "string_type": "must be a string",
    "string_pattern_mismatch": f"must be {RECORD_ID_RULE}",
}


def _problems(index: int, record: dict[str, Any], error: ValidationError) -> list[Problem]:
    record_id = record.get("record_id")
    known_id = record_id if isinstance(record_id, str) else None
    problems = []
    for detail in error.errors(include_url=False):
        field = ".".join(str(part) for part in detail["loc"]) or None
        message = _MESSAGES.get(detail["type"], detail["msg"].removeprefix("Value error, "))
        if field == "record_id" and detail["type"] in {"string_too_long", "string_too_short"}:
            message = f"must be {RECORD_ID_RULE}"
        problems.append(Problem(message=message, index=index, record_id=known_id, field=field))
    return problems


def parse_orders(body: str | bytes | None, limits: Limits) -> list[OrderRequest]:
    """Validate a POST /orders body: a non-empty JSON array of orders, all valid, no record_id twice.

    Raises
    ------
    BodyTooLarge, InvalidJson, TooManyOrders, OrdersInvalid
        Every problem with the request is reported at once; nothing is partially accepted.
    """
    # surrogatepass: a lone surrogate in a text body is then refused as bytes that are not UTF-8.
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else (body or b"")
    if len(raw) > limits.max_body_bytes:
        raise BodyTooLarge(len(raw), limits.max_body_bytes)
    if not raw.strip():
        raise OrdersInvalid([Problem("body must be a non-empty JSON array of orders")])
    document = parse_json(raw)
    if not isinstance(document, list) or not document:
        raise OrdersInvalid([Problem("body must be a non-empty JSON array of orders")])
    if len(document) > limits.max_orders:
        raise TooManyOrders(len(document), limits.max_orders)

    orders: list[OrderRequest] = []
    problems: list[Problem] = []
    first_seen: dict[str, int] = {}
    for index, record in enumerate(document):
        if not isinstance(record, dict):
            problems.append(Problem("each order must be a JSON object", index=index))
            continue
        try:
            order = OrderRequest.model_validate(record)
        except ValidationError as err:
            problems.extend(_problems(index, record, err))
            continue
        if order.record_id in first_seen:
            problems.append(
                Problem(
                    f"record_id is repeated in this request (first at index {first_seen[order.record_id]})",
                    index=index,
                    record_id=order.record_id,
                    field="record_id",
                )
            )
            continue
        first_seen[order.record_id] = index
        orders.append(order)
    if problems:
        raise OrdersInvalid(problems)
    return orders


def settled_outcome(run_id: str, status: OrderStatus, outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome as a store keeps it: exact numbers (floats become Decimals), and ``run_id``
    naming the run that settled the order.

    Raises
    ------
    ValueError
        ``status`` is pending, or the outcome names another run.
    """
    if status is OrderStatus.PENDING:
        raise ValueError("an order is settled as accepted or rejected, not pending")
    stored: dict[str, Any] = codec.loads(codec.dumps(outcome))
    if stored.setdefault("run_id", run_id) != run_id:
        raise ValueError(f"outcome names run {stored['run_id']!r}, not {run_id!r}")
    return stored


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_DAY_SECONDS = 24 * 60 * 60
_YEAR_0_TO_4_SECONDS = (366 + 3 * 365) * _DAY_SECONDS  # year 0 is a leap year, as year 4 is


def rfc3339_epoch(text: str) -> float:
    """Epoch seconds of an RFC 3339 date-time (``2026-12-01T08:00:00Z``, ``...T09:00:00.5+01:00``):
    the form of the times the API writes, and OpenAPI's ``date-time``. A leap second, 23:59:60 UTC,
    is the second after 23:59:59.

    Raises
    ------
    ValueError
        ``text`` is not an RFC 3339 date-time (ISO 8601's other forms are not).
    """
    matched = _RFC3339.fullmatch(text)
    if matched is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(matched[i]) for i in range(1, 7))
    sign, offset_hours, offset_minutes = matched[8], int(matched[9] or 0), int(matched[10] or 0)
    if hour > 23 or minute > 59 or second > 60 or offset_hours > 23 or offset_minutes > 59:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    # datetime starts at year 1: year 0 is read as year 4, which has the same calendar.
    shift = -_YEAR_0_TO_4_SECONDS if year == 0 else 0
    try:
        local = datetime(year or 4, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except ValueError:  # no such day (2027-02-29, 2027-04-31)
        raise ValueError(f"not an RFC 3339 date-time: {text!r}") from None
    offset = (offset_hours * 60 + offset_minutes) * 60 * (-1 if sign == "-" else 1)
    epoch = local.timestamp() - offset
    if second == 60:
        utc = datetime.fromtimestamp(epoch, UTC)
        if (utc.hour, utc.minute) != (23, 59):
            raise ValueError(f"not an RFC 3339 date-time (a leap second is 23:59:60 UTC): {text!r}")
        epoch += 1
    return epoch + shift + float(matched[7] or 0)


def iso_utc(epoch_seconds: float) -> str:
    return (
        datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def new_orders(requests: Sequence[OrderRequest], now: float, trader: str) -> list[Order]:
    """Pending orders of ``trader`` for these requests, submitted ``now``, expiring 24 hours later."""
    submitted_at = iso_utc(now)
    expires_at = int(now) + ORDER_TTL_SECONDS
    return [
        Order(**r.model_dump(), trader=trader, submitted_at=submitted_at, expires_at=expires_at)
        for r in requests
    ]
