"""The auction market: outcome models and the simulated market (the default AuctionMarket).

Like the challenge's Lambda A, the simulated market is sometimes not ready and, when ready,
accepts or rejects each order at random. With a seed, a run's outcomes are reproducible: each
draw is seeded from (seed, run id, attempt or record_id), independent of order and concurrency.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from energy_auction.orders import Decision, Order, iso_utc, order_key

REJECTION_REASONS = (
    "bid price outside the clearing range",
    "insufficient transmission capacity",
    "volume below the minimum lot",
)


@dataclass(frozen=True)
class OrderResult:
    """The auction outcome of one order, with the order's own fields (one item of a run's results)."""

    record_id: str
    trader: str
    """Whose order it is (the ``sub`` of the token that submitted it)."""
    status: Literal["accepted", "rejected"]
    power: Decimal
    """Cleared power (MW): the order's volume when accepted, 0 when rejected."""
    auction_date: str
    """YYYY-MM-DD (UTC) of the auction the result belongs to."""
    decided_at: str
    """ISO 8601 UTC time the market reported the result."""
    reason: str | None = None
    order_fields: Mapping[str, Any] = field(default_factory=dict)
    """The order's other fields (``ORDER_FIELDS`` but ``record_id``), as the trader submitted them."""

    @property
    def key(self) -> str:
        """The store's key of the order (``orders.order_key``)."""
        return order_key(self.trader, self.record_id)

    @classmethod
    def of(cls, order: Order) -> OrderResult:
        """The result of an order from the decision stored with it.

        Raises
        ------
        ValueError
            The order has no decision.
        """
        if order.decision is None:
            raise ValueError(f"order {order.record_id} has no decision")
        d = order.decision
        return cls(
            record_id=order.record_id,
            trader=order.trader,
            status=d.status,
            power=d.power,
            auction_date=d.auction_date,
            decided_at=d.decided_at,
            reason=d.reason,
            order_fields=_fields_of(order),
        )

    def decision(self, submitted_at: str) -> Decision:
        """This result as the decision stored with the claim on the submission ``submitted_at``."""
        return Decision(
            status=self.status,
            power=self.power,
            auction_date=self.auction_date,
            decided_at=self.decided_at,
            reason=self.reason,
            submitted_at=submitted_at,
        )

    def as_item(self) -> dict[str, Any]:
        """The result as an item of a run's S3 file.

        Numbers are decimal strings: Step Functions and Lambda's runtime parse JSON numbers as
        floats, which would round an exact value such as 2.1000000000000000000001.
        """
        item: dict[str, Any] = {
            "record_id": self.record_id,
            "trader": self.trader,
            "status": self.status,
            "power": str(self.power),
        }
        item.update({k: str(v) if isinstance(v, Decimal) else v for k, v in self.order_fields.items()})
        item.update({"auction_date": self.auction_date, "decided_at": self.decided_at})
        if self.reason:
            item["reason"] = self.reason
        return item


def _fields_of(order: Order) -> dict[str, Any]:
    return {k: v for k, v in order.request_fields().items() if k != "record_id"}


@dataclass(frozen=True)
class SimulatedMarket:
    """A stand-in market with configurable readiness and acceptance probabilities."""

    ready_probability: float = 0.8
    accept_probability: float = 0.7
    seed: int | None = None

    def _draw(self, key: str) -> float:
        if self.seed is None:
            return random.SystemRandom().random()
        return random.Random(f"{self.seed}:{key}").random()

    def is_ready(self, run_id: str, attempt: int) -> bool:
        return self._draw(f"ready:{run_id}:{attempt}") < self.ready_probability

    def decide(self, orders: Sequence[Order], run_id: str, now: float) -> list[OrderResult]:
        decided_at = iso_utc(now)
        auction_date = decided_at[:10]
        results = []
        for order in orders:
            accepted = self._draw(f"accept:{run_id}:{order.record_id}") < self.accept_probability
            reason = None
            if not accepted:
                pick = self._draw(f"reason:{run_id}:{order.record_id}")
                reason = REJECTION_REASONS[int(pick * len(REJECTION_REASONS))]
            results.append(
                OrderResult(
                    record_id=order.record_id,
                    trader=order.trader,
                    status="accepted" if accepted else "rejected",
                    # The order's volume clears in full (parameter_2 is the volume, in MW).
                    power=order.parameter_2 if accepted else Decimal(0),
                    auction_date=auction_date,
                    decided_at=decided_at,
                    reason=reason,
                    order_fields=_fields_of(order),
                )
            )
        return results
