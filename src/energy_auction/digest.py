"""Slack gets digests: the notifier's use case, a batch of the topic's notices at a time. No AWS here.

The notifier receives the topic's notices in batches (from its SQS queue on AWS, from the local
topic locally). :func:`deliver_batch` records each notice, one by one, where every notice is kept
(the log on AWS, ``notifications.jsonl`` locally), then posts to each channel (:func:`channel_of`):

- the batch's order notices (rejections and processing failures, :data:`DIGESTED`) as one digest
  that lists up to :data:`DIGEST_LIMIT` of them (trader, record_id, reason) and counts the rest by
  kind; a digest of one is the notice itself;
- every other notice (results not ready, fetch failed, a delivery pipeline failure, a run summary,
  an alarm) as a message of its own.

A channel keeps its own posts apart (the Slack notifier waits ``MIN_POST_INTERVAL_SECONDS``
between two posts to its webhook, and honours Slack's 429 Retry-After).

Exactly once: each rejection is taken on its order before it is posted (``OrderStore.claim_notices``,
the outbox written with the rejection; a batch's all at once); a copy that was delivered
already, or that another delivery holds, is skipped and not listed. Once the digest is posted,
each rejection it took is recorded delivered; when the post fails, they are given back and the
batch items they came in are reported failed, so the queue delivers them again. Every notice of a
batch is listed, counted in its digest's "more", skipped as a copy, or reported failed: none is
lost.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from energy_auction.notifications import MAX_LINES, SEVERITIES, Notice, NoticeKind
from energy_auction.observability import logger
from energy_auction.orders import NoticeClaim, NoticeHold

if TYPE_CHECKING:
    from energy_auction.ports import Notifier, OrderStore

DIGEST_LIMIT = 20
"""Notices one digest lists; it counts the rest by kind."""
BATCH_SIZE = 1000
"""Notices the notifier is handed at most at once: the event source mapping's batch size on AWS
(a burst of a few minutes' rejections; about 2.5 MB of SNS envelopes, under Lambda's 6 MB event),
and the local delivery's batch. Each rejection costs two conditional writes (claim, then record):
one ``OrderStore.claim_notices`` call takes the batch's, one ``finish_notices`` per posted message
records them (on DynamoDB an update per notice, 16 at a time)."""
DIGESTED: Mapping[NoticeKind, str] = MappingProxyType(
    {
        NoticeKind.ORDER_REJECTED: "rejected",
        NoticeKind.ORDER_PROCESSING_FAILED: "failed to process",
    }
)
"""The kinds a digest gathers (one per order, many per run), and how it counts them."""
POST_RESERVE_SECONDS = 45.0
"""A post is started only while the invocation has at least this long left (a post that meets
Slack's 429s waits for Retry-After); the notices it would carry are reported failed and come back."""
ALERTS_CHANNEL = "alerts"
"""The one channel: one Slack webhook posts to one channel, and the service has one webhook."""


def channel_of(notice: Notice) -> str:
    """The channel ``notice`` is posted to.

    Every notice goes to the one webhook's channel. To post (say) rejections to a channel of their
    own, return another name here for them and give :func:`deliver_batch` a notifier of that name;
    the digests and the spacing of posts are per channel already.
    """
    return ALERTS_CHANNEL


@dataclass(frozen=True)
class Arrival:
    """One message of a batch: its notice, and the id a batch item failure names it by."""

    item_id: str
    notice: Notice


@dataclass
class BatchReport:
    """What :func:`deliver_batch` did with a batch."""

    failed: list[str] = field(default_factory=list)
    """The item ids of the notices not delivered: the queue should deliver them again."""
    digested: int = 0
    """Order notices delivered in a digest (listed, or counted in its "more")."""
    posted: int = 0
    """Messages posted to the channels."""
    skipped: int = 0
    """Copies of notices delivered already, or being delivered by another invocation."""


@dataclass
class _Taken:
    """A notice this batch delivers, with its hold on the order when it is a tracked rejection."""

    arrival: Arrival
    hold: NoticeHold | None = None
    """This delivery's hold (``OrderStore.claim_notices``): only its token may finish what it took."""
    claim: NoticeClaim | None = None

    @property
    def held(self) -> NoticeHold | None:
        """The hold when this delivery took the notice (CLAIMED), to finish after the post."""
        return self.hold if self.claim is NoticeClaim.CLAIMED else None


@dataclass
class _Message:
    """One post to a channel: a digest of order notices, or a notice of its own."""

    channel: str
    is_digest: bool
    taken: list[_Taken] = field(default_factory=list)


def deliver_batch(
    arrivals: Iterable[Arrival],
    *,
    channels: Mapping[str, Notifier],
    record: Notifier,
    store: OrderStore,
    now: float,
    lease_seconds: int,
    time_left: Callable[[], float] | None = None,
    limit: int = DIGEST_LIMIT,
    route: Callable[[Notice], str] = channel_of,
) -> BatchReport:
    """Deliver a batch of notices: each recorded through ``record``, then posted to its channel's
    notifier in ``channels`` (``route``, :func:`channel_of` by default), the order notices as one
    digest per channel.

    ``now`` (epoch seconds) and ``lease_seconds`` are for taking rejections on their orders;
    ``time_left`` says how many seconds the invocation has left (a post needs
    :data:`POST_RESERVE_SECONDS`). Never raises: what could not be delivered is in ``failed``.
    """
    report = BatchReport()
    fresh: list[_Taken] = []
    seen: set[str] = set()
    for arrival in arrivals:
        key = arrival.notice.key
        if key is not None and key in seen:  # SNS delivers at least once; a run may publish twice
            report.skipped += 1
            logger.info("duplicate notice skipped", extra={"notice_key": key, "because": "in the batch"})
            continue
        if key is not None:
            seen.add(key)
        fresh.append(_Taken(arrival))
    messages: list[_Message] = []  # in the order their first notice arrived
    digests: dict[str, _Message] = {}
    taken_all = _take(fresh, record=record, store=store, now=now, lease_seconds=lease_seconds, report=report)
    for taken in taken_all:
        channel = route(taken.arrival.notice)
        if taken.arrival.notice.kind in DIGESTED:
            if channel not in digests:
                digests[channel] = _Message(channel, is_digest=True)
                messages.append(digests[channel])
            digests[channel].taken.append(taken)
        else:
            messages.append(_Message(channel, is_digest=False, taken=[taken]))
    for message in messages:
        _post(message, channels=channels, store=store, time_left=time_left, limit=limit, report=report)
    return report


def digest(notices: Sequence[Notice], limit: int = DIGEST_LIMIT) -> Notice:
    """One notice for many: it lists the first ``limit`` (one line each) and counts the rest by
    kind; one notice is its own digest."""
    if not notices:
        raise ValueError("a digest needs at least one notice")
    if not 0 < limit <= MAX_LINES:
        raise ValueError(f"a digest lists 1 to {MAX_LINES} notices, not {limit}")
    if len(notices) == 1:
        return notices[0]
    listed, rest = notices[:limit], notices[limit:]
    title = _counted(notices)
    text = (
        f"{title}: the first {len(listed)} below, and {len(rest):,} more: {_counted(rest)}."
        if rest
        else f"{title}:"
    )
    return Notice(
        kind=NoticeKind.DIGEST,
        title=title,
        text=text,
        lines=tuple(notice.as_line for notice in listed),
        severity=max((notice.severity for notice in notices), key=SEVERITIES.index),
    )


def _counted(notices: Sequence[Notice]) -> str:
    """``24 orders rejected, 1 order failed to process``: the notices counted by kind."""
    counts = Counter(notice.kind for notice in notices)
    order = [*DIGESTED, *sorted(set(counts) - set(DIGESTED))]
    return ", ".join(_count_of(kind, counts[kind]) for kind in order if counts[kind])


def _count_of(kind: NoticeKind, count: int) -> str:
    if kind in DIGESTED:
        return f"{count:,} {'order' if count == 1 else 'orders'} {DIGESTED[kind]}"
    return f"{count:,} {kind.value}"


def _take(
    batch: Sequence[_Taken],
    *,
    record: Notifier,
    store: OrderStore,
    now: float,
    lease_seconds: int,
    report: BatchReport,
) -> list[_Taken]:
    """Take the batch's tracked rejections on their orders (one ``claim_notices`` for all) and
    record each notice; returns those to post, in order. A copy to skip is counted; a notice that
    could not be taken or recorded is reported failed."""
    untaken, error = _claim(batch, store=store, now=now, lease_seconds=lease_seconds)
    if untaken:
        _give_back(untaken, store, everything=True)  # a failed update may have taken it
        _failed(report, untaken, "the notices could not be taken on their orders", error)
    kept: list[_Taken] = []
    for taken in batch:
        notice = taken.arrival.notice
        if taken.hold is not None and taken.claim is None:
            continue  # reported failed above
        if taken.claim in (NoticeClaim.DELIVERED, NoticeClaim.BUSY):
            report.skipped += 1
            logger.info(
                "duplicate notice skipped", extra={"notice_key": notice.key, "because": taken.claim.value}
            )
            continue
        if taken.claim is NoticeClaim.UNKNOWN:
            logger.warning("rejection notice delivered untracked", extra={"notice_key": notice.key})
        try:
            record.notify(notice)
        except Exception as err:
            _give_back([taken], store)
            _failed(report, [taken], "the notice could not be recorded", err)
            continue
        kept.append(taken)
    return kept


def _claim(
    batch: Sequence[_Taken], *, store: OrderStore, now: float, lease_seconds: int
) -> tuple[list[_Taken], Exception | None]:
    """Give each tracked rejection of ``batch`` a hold and take them all (one ``claim_notices``);
    returns those that could not be taken, and the error when the whole call failed."""
    tracked: list[_Taken] = []
    holds: list[NoticeHold] = []
    for taken in batch:
        if taken.arrival.notice.order is not None:
            key, run_id = taken.arrival.notice.order
            taken.hold = NoticeHold(key, run_id, uuid.uuid4().hex)
            tracked.append(taken)
            holds.append(taken.hold)
    if not tracked:
        return [], None
    try:
        claims = store.claim_notices(holds, int(now), lease_seconds)
        if len(claims) != len(holds):
            raise ValueError(f"{len(claims)} answers for {len(holds)} notices")
    except Exception as err:
        return tracked, err
    for taken, claim in zip(tracked, claims, strict=True):
        taken.claim = claim
    return [taken for taken in tracked if taken.claim is None], None


def _post(
    message: _Message,
    *,
    channels: Mapping[str, Notifier],
    store: OrderStore,
    time_left: Callable[[], float] | None,
    limit: int,
    report: BatchReport,
) -> None:
    notices = [taken.arrival.notice for taken in message.taken]
    if time_left is not None and time_left() < POST_RESERVE_SECONDS:
        _give_back(message.taken, store)
        _failed(report, message.taken, "no time left to post the notices", None)
        return
    try:
        channels[message.channel].notify(digest(notices, limit) if message.is_digest else notices[0])
    except Exception as err:
        _give_back(message.taken, store)
        _failed(report, message.taken, "posting the notices failed", err)
        return
    report.posted += 1
    report.digested += len(notices) if message.is_digest else 0
    holds = [taken.held for taken in message.taken if taken.held is not None]
    if not holds:
        return
    try:
        store.finish_notices(holds, delivered=True)
    except Exception as err:
        # Posted, but not (all) recorded (the store logs which): once their leases lapse, a
        # redelivery posts those again.
        logger.warning(
            "posted notices could not be recorded delivered",
            extra={"notices": len(holds), "error": type(err).__name__},
        )


def _give_back(taken: Sequence[_Taken], store: OrderStore, *, everything: bool = False) -> None:
    """End the holds on the orders of notices that were not delivered, for the next attempt: the
    ones this delivery took, or (``everything``, when taking them failed midway) every one it tried."""
    holds = [hold for one in taken if (hold := one.hold if everything else one.held) is not None]
    if not holds:
        return
    try:
        store.finish_notices(holds, delivered=False)
    except Exception as err:  # the holds lapse with their lease instead
        logger.warning(
            "notices could not be given back",
            extra={"notices": len(holds), "error": type(err).__name__},
        )


def _failed(report: BatchReport, taken: Sequence[_Taken], why: str, err: Exception | None) -> None:
    report.failed.extend(one.arrival.item_id for one in taken)
    # The error's type only: its text may hold what a channel keeps secret (the webhook URL).
    logger.error(
        f"{why}; the queue delivers it again",
        extra={"notices": len(taken), "error": type(err).__name__ if err else None},
    )
