"""The OrderStore's exactly-once machinery, on SQLite and on DynamoDB (moto): the market's decision
stored with the claim (decided once, whatever dies), and the outbox of rejection notices (owed with
the rejection, taken by one delivery at a time, recorded once delivered, redelivered when overdue).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import pytest

from energy_auction.errors import ClaimLost, OrdersAlreadyProcessed
from energy_auction.orders import ORDER_TTL_SECONDS, Decision, NoticeClaim, NoticeHold, OrderStatus, iso_utc
from tests.adapters.stores import NOW, StoreUnderTest, pending
from tests.builders import key, keys

LEASE = 600
DELIVERY_LEASE = 300
DUE = NOW + 900


def decision(
    order_id: str, status: Literal["accepted", "rejected"] = "accepted", submitted: int = NOW
) -> Decision:
    del order_id  # a decision is for one submission of an order; the caller keys it by record_id
    return Decision(
        status=status,
        power=Decimal("12.5") if status == "accepted" else Decimal(0),
        auction_date=iso_utc(NOW)[:10],
        decided_at=iso_utc(NOW + 1),
        submitted_at=iso_utc(submitted),
        reason=None if status == "accepted" else "insufficient transmission capacity",
    )


def claim_decided(store: object, record_id: str, run_id: str = "run-1") -> None:
    """Store a pending order and claim it for ``run_id`` with the market's acceptance."""
    store.put_orders([pending(record_id)], now=NOW)  # type: ignore[attr-defined]
    given = {key(record_id): decision(record_id)}
    assert store.claim_orders(keys([record_id]), run_id, now=NOW, lease_seconds=LEASE, decisions=given)  # type: ignore[attr-defined]


def reject(store: object, record_id: str, run_id: str = "run-1", due: int = DUE) -> None:
    """Store a pending order, claim it for ``run_id`` and complete it as rejected (notice owed)."""
    store.put_orders([pending(record_id)], now=NOW)  # type: ignore[attr-defined]
    given = {key(record_id): decision(record_id, "rejected")}
    assert store.claim_orders(keys([record_id]), run_id, now=NOW, lease_seconds=LEASE, decisions=given)  # type: ignore[attr-defined]
    outcome = {"status": "rejected", "power": Decimal(0), "run_id": run_id}
    store.complete_order(key(record_id), run_id, OrderStatus.REJECTED, outcome, notice_due_at=due)  # type: ignore[attr-defined]


# --- Decisions --------------------------------------------------------------------------------


def test_a_claim_stores_the_markets_decision_with_it(subject: StoreUnderTest) -> None:
    # Given a pending order
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)

    # When a run claims it with the market's decision
    got = store.claim_orders(
        keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE, decisions={key("ord-1"): decision("ord-1")}
    )

    # Then the claimed order, and the order as stored, carry that decision
    assert [o.decision for o in got] == [decision("ord-1")]
    assert store.get_order(key("ord-1")).decision == decision("ord-1")


def test_a_run_taking_over_a_dead_runs_order_keeps_its_first_decision(subject: StoreUnderTest) -> None:
    # Given run-1 claimed an order with an acceptance, and died (its claim lapsed)
    store = subject.store
    claim_decided(store, "ord-1")

    # When run-2 claims it, with a rejection the market would give now
    later = NOW + LEASE
    got = store.claim_orders(
        keys(["ord-1"]),
        "run-2",
        now=later,
        lease_seconds=LEASE,
        decisions={key("ord-1"): decision("ord-1", "rejected")},
    )

    # Then run-2 holds it, and the decision is still the first one: an order is decided once
    assert [(o.claim_run_id, o.decision) for o in got] == [("run-2", decision("ord-1"))]
    assert store.get_order(key("ord-1")).decision == decision("ord-1")


def test_a_decision_for_a_submission_that_was_replaced_claims_nothing(subject: StoreUnderTest) -> None:
    # Given a decision made for an order that the trader has replaced since (a new submission)
    store = subject.store
    store.put_orders([pending("ord-1", submitted=NOW - 60)], now=NOW - 60)
    stale = decision("ord-1", submitted=NOW - 60)
    store.put_orders([pending("ord-1")], now=NOW)

    # When a run claims it with that decision
    got = store.claim_orders(
        keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE, decisions={key("ord-1"): stale}
    )

    # Then nothing is claimed: the new order waits, undecided, for the next run
    assert got == []
    stored = store.get_order(key("ord-1"))
    assert (stored.claim_run_id, stored.decision, stored.submitted_at) == (None, None, iso_utc(NOW))


def test_a_decided_order_cannot_be_replaced_even_when_its_run_died(subject: StoreUnderTest) -> None:
    # Given an order a dead run claimed and decided (its claim lapsed)
    store = subject.store
    claim_decided(store, "ord-1")

    # When the trader submits it again, after the lease and even after the order expired
    for when in (NOW + LEASE, NOW + ORDER_TTL_SECONDS + 1):
        with pytest.raises(OrdersAlreadyProcessed) as refused:
            store.put_orders([pending("ord-1", submitted=when)], now=when)

        # Then it is refused: the market decided it, and the pipeline settles it as decided
        assert refused.value.record_ids == ["ord-1"]
    assert store.get_order(key("ord-1")).decision == decision("ord-1")


def test_a_release_keeps_the_decision(subject: StoreUnderTest) -> None:
    store = subject.store
    claim_decided(store, "ord-1")

    store.release_order(key("ord-1"), "run-1")

    stored = store.get_order(key("ord-1"))
    assert (stored.claim_run_id, stored.decision) == (None, decision("ord-1"))


def test_an_expired_order_is_still_settled_when_it_was_decided(subject: StoreUnderTest) -> None:
    # Given two orders that expired while pending: one a dead run had decided, one never decided
    store = subject.store
    store.put_orders([pending("decided"), pending("undecided")], now=NOW)
    store.claim_orders(
        keys(["decided"]),
        "run-1",
        now=NOW,
        lease_seconds=LEASE,
        decisions={key("decided"): decision("decided")},
    )
    after_expiry = NOW + ORDER_TTL_SECONDS + 10

    # When the next run looks for orders to claim after their expiry
    found = list(store.pending_keys(after_expiry, "run-2"))
    got = store.claim_orders(found, "run-2", now=after_expiry, lease_seconds=LEASE)

    # Then the decided one is offered and claimed (its decision must be carried out), the other not
    # (SQLite does not offer it; DynamoDB's keys-only index does until ClaimBatch retires it)
    assert found == (keys(["decided"]) if subject.kind == "sqlite" else keys(["decided", "undecided"]))
    assert [(o.record_id, o.claim_run_id) for o in got] == [("decided", "run-2")]
    assert store.claim_orders(keys(["undecided"]), "run-2", now=after_expiry, lease_seconds=LEASE) == []


# --- The outbox of rejection notices -----------------------------------------------------------


def test_a_rejection_owes_its_notice_from_the_moment_it_is_written(subject: StoreUnderTest) -> None:
    # Given an order completed as rejected, its notice due for redelivery at DUE
    store = subject.store
    reject(store, "ord-1")

    # Then the order owes the notice, and it is overdue once DUE has come, not before
    stored = store.get_order(key("ord-1"))
    assert (stored.status, stored.notice_due_at) == (OrderStatus.REJECTED, DUE)
    assert store.overdue_notices(DUE - 1, 10) == []
    assert [o.record_id for o in store.overdue_notices(DUE, 10)] == ["ord-1"]


def test_an_accepted_order_owes_no_notice(subject: StoreUnderTest) -> None:
    store = subject.store
    claim_decided(store, "ord-1")
    store.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, {"run_id": "run-1"}, notice_due_at=DUE)

    assert store.get_order(key("ord-1")).notice_due_at is None
    assert store.overdue_notices(DUE + 1, 10) == []
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.UNKNOWN
    ]


def test_one_delivery_at_a_time_and_a_delivered_notice_is_never_sent_again(subject: StoreUnderTest) -> None:
    # Given a rejection whose notice is owed
    store = subject.store
    reject(store, "ord-1")

    # When a delivery takes it, a second delivery at the same time is told it is busy
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-2")], NOW + 1, DELIVERY_LEASE) == [
        NoticeClaim.BUSY
    ]

    # When the first delivery succeeds
    store.finish_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], delivered=True)

    # Then every later copy is a duplicate, and nothing is owed any more
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-2")], NOW + 2, DELIVERY_LEASE) == [
        NoticeClaim.DELIVERED
    ]
    assert store.get_order(key("ord-1")).notice_due_at is None
    assert store.overdue_notices(DUE + 10**6, 10) == []


def test_a_batch_of_notices_is_taken_and_finished_in_one_call_each_answered_on_its_own(
    subject: StoreUnderTest,
) -> None:
    # Given four rejections: one delivered already, one another delivery holds, and two owed
    store = subject.store
    for record_id in ("ord-1", "ord-2", "ord-3", "ord-4"):
        reject(store, record_id)
    assert store.claim_notices(
        [NoticeHold(key("ord-2"), "run-1", "old"), NoticeHold(key("ord-3"), "run-1", "other")],
        NOW,
        DELIVERY_LEASE,
    ) == [NoticeClaim.CLAIMED, NoticeClaim.CLAIMED]
    store.finish_notices([NoticeHold(key("ord-2"), "run-1", "old")], delivered=True)

    # When one delivery takes the batch (and a notice no order owes)
    batch = [
        NoticeHold(key(record_id), "run-1", "d-1")
        for record_id in ("ord-1", "ord-2", "ord-3", "ord-4", "gone")
    ]
    claims = store.claim_notices(batch, NOW + 1, DELIVERY_LEASE)

    # Then each notice has its own answer, in the batch's order
    assert claims == [
        NoticeClaim.CLAIMED,
        NoticeClaim.DELIVERED,
        NoticeClaim.BUSY,
        NoticeClaim.CLAIMED,
        NoticeClaim.UNKNOWN,
    ]

    # When the delivery records the whole batch delivered, only what it holds is finished
    store.finish_notices(batch, delivered=True)
    assert [store.get_order(key(r)).notice_due_at is None for r in ("ord-1", "ord-3", "ord-4")] == [
        True,
        False,  # the other delivery still holds it
        True,
    ]
    assert [o.record_id for o in store.overdue_notices(DUE + DELIVERY_LEASE, 10)] == ["ord-3"]


def test_a_failed_delivery_gives_the_notice_back_at_once(subject: StoreUnderTest) -> None:
    store = subject.store
    reject(store, "ord-1")
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]

    store.finish_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], delivered=False)

    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-2")], NOW + 1, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]
    assert store.get_order(key("ord-1")).notice_due_at == DUE


def test_a_delivery_that_died_gives_the_notice_back_when_its_lease_lapses(subject: StoreUnderTest) -> None:
    # Given a delivery that took the notice and never finished (its process was killed)
    store = subject.store
    reject(store, "ord-1", due=NOW)
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]

    # Then the notice is neither deliverable nor overdue while the lease runs, and both after it
    assert store.overdue_notices(NOW + DELIVERY_LEASE - 1, 10) == []
    assert store.claim_notices(
        [NoticeHold(key("ord-1"), "run-1", "d-2")], NOW + DELIVERY_LEASE - 1, DELIVERY_LEASE
    ) == [NoticeClaim.BUSY]
    assert [o.record_id for o in store.overdue_notices(NOW + DELIVERY_LEASE, 10)] == ["ord-1"]
    assert store.claim_notices(
        [NoticeHold(key("ord-1"), "run-1", "d-2")], NOW + DELIVERY_LEASE, DELIVERY_LEASE
    ) == [NoticeClaim.CLAIMED]


def test_a_notice_the_store_does_not_track_is_unknown(subject: StoreUnderTest) -> None:
    # Given an order rejected by run-1, a pending order, and no order at all
    store = subject.store
    reject(store, "ord-1")
    store.put_orders([pending("ord-2")], now=NOW)

    # Then a rejection notice naming another run, a pending order or a missing one is untracked
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-9", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.UNKNOWN
    ]
    assert store.claim_notices([NoticeHold(key("ord-2"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.UNKNOWN
    ]
    assert store.claim_notices([NoticeHold(key("missing"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.UNKNOWN
    ]
    # and finishing one changes nothing
    store.finish_notices([NoticeHold(key("ord-1"), "run-9", "d-1")], delivered=True)
    assert store.get_order(key("ord-1")).notice_due_at == DUE


def test_overdue_notices_come_longest_overdue_first_and_at_most_the_limit(subject: StoreUnderTest) -> None:
    # Given five owed notices due at different times
    store = subject.store
    for i, due in enumerate([NOW + 50, NOW + 10, NOW + 40, NOW + 20, NOW + 30]):
        reject(store, f"ord-{i}", due=due)

    # Then they come by due time, at most as many as asked
    assert [o.record_id for o in store.overdue_notices(NOW + 100, 3)] == ["ord-1", "ord-3", "ord-4"]
    assert [o.record_id for o in store.overdue_notices(NOW + 25, 10)] == ["ord-1", "ord-3"]


def test_a_postponed_notice_waits_until_its_new_due_time_and_counts_the_redelivery(
    subject: StoreUnderTest,
) -> None:
    store = subject.store
    reject(store, "ord-1")

    store.postpone_notice(key("ord-1"), "run-1", DUE + 1800)
    store.postpone_notice(key("ord-1"), "run-1", DUE + 3600)

    stored = store.get_order(key("ord-1"))
    assert (stored.notice_due_at, stored.notice_redeliveries) == (DUE + 3600, 2)
    assert store.overdue_notices(DUE + 3599, 10) == []
    assert [o.record_id for o in store.overdue_notices(DUE + 3600, 10)] == ["ord-1"]
    # and once delivered, a postponement (a redelivery that crossed it) changes nothing
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]
    store.finish_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], delivered=True)
    store.postpone_notice(key("ord-1"), "run-1", DUE + 7200)
    assert store.get_order(key("ord-1")).notice_due_at is None


def test_the_pipelines_bookkeeping_never_shows_in_the_api_view(subject: StoreUnderTest) -> None:
    store = subject.store
    reject(store, "ord-1")
    store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE)

    view = store.get_order(key("ord-1")).public_view()

    assert set(view) == {
        "record_id",
        "parameter_1",
        "parameter_2",
        "trader",
        "status",
        "submitted_at",
        "expires_at",
        "outcome",
    }


def test_a_delivery_that_outlived_its_lease_cannot_undo_the_one_that_took_over(
    subject: StoreUnderTest,
) -> None:
    # Given a delivery d-1 that stalled past its lease, and d-2 that took the notice over
    store = subject.store
    reject(store, "ord-1", due=NOW)
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]
    later = NOW + DELIVERY_LEASE
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-2")], later, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]

    # When d-1 wakes up and gives the notice back (its post failed)
    store.finish_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], delivered=False)

    # Then d-2 still holds it: a third delivery is told it is busy, and d-2 can record it delivered
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-3")], later + 1, DELIVERY_LEASE) == [
        NoticeClaim.BUSY
    ]
    store.finish_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], delivered=True)
    assert store.get_order(key("ord-1")).notice_due_at is not None  # d-1's word counts for nothing
    store.finish_notices([NoticeHold(key("ord-1"), "run-1", "d-2")], delivered=True)
    assert store.get_order(key("ord-1")).notice_due_at is None


def test_taking_a_notice_again_with_the_same_token_is_still_claimed(subject: StoreUnderTest) -> None:
    # A retried call whose first attempt did commit (the answer was lost) finds its own lease
    store = subject.store
    reject(store, "ord-1")
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], NOW, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]


def test_an_expired_rejected_order_whose_notice_is_owed_cannot_be_replaced(subject: StoreUnderTest) -> None:
    # Given a rejected order whose notice is still owed when the order expires
    store = subject.store
    reject(store, "ord-1")
    expired = NOW + ORDER_TTL_SECONDS + 1

    # When the trader submits the record_id again, it is refused: replacing it would lose the notice
    with pytest.raises(OrdersAlreadyProcessed):
        store.put_orders([pending("ord-1", submitted=expired)], now=expired)

    # Then once the notice is delivered, the record_id is free again
    assert store.claim_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], expired, DELIVERY_LEASE) == [
        NoticeClaim.CLAIMED
    ]
    store.finish_notices([NoticeHold(key("ord-1"), "run-1", "d-1")], delivered=True)
    store.put_orders([pending("ord-1", submitted=expired)], now=expired)
    assert store.get_order(key("ord-1")).status is OrderStatus.PENDING


def test_a_run_that_lost_its_claim_to_another_cannot_complete_the_order(subject: StoreUnderTest) -> None:
    # Given run-1's claim lapsed and run-2 took the order over and settled it
    store = subject.store
    store.put_orders([pending("ord-1")], now=NOW)
    given = {key("ord-1"): decision("ord-1")}
    store.claim_orders(keys(["ord-1"]), "run-1", now=NOW, lease_seconds=LEASE, decisions=given)
    store.claim_orders(keys(["ord-1"]), "run-2", now=NOW + LEASE, lease_seconds=LEASE)
    store.complete_order(key("ord-1"), "run-2", OrderStatus.ACCEPTED, {"run_id": "run-2"})

    # When run-1, still alive, tries to complete it
    with pytest.raises(ClaimLost):
        store.complete_order(key("ord-1"), "run-1", OrderStatus.ACCEPTED, {"run_id": "run-1"})

    # Then the order stays settled by run-2
    assert (store.get_order(key("ord-1")).outcome or {})["run_id"] == "run-2"
