"""Order intake, the API's use cases: submit orders, find one. No AWS here: storage goes through the
:class:`~energy_auction.ports.OrderStore` port."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from energy_auction.errors import OrderNotFound
from energy_auction.orders import Limits, Order, is_record_id, new_orders, parse_orders

if TYPE_CHECKING:
    from energy_auction.ports import OrderStore


@dataclass(frozen=True)
class Receipt:
    """What a successful submission stored."""

    orders: Sequence[Order]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": len(self.orders),
            "orders": [
                {"record_id": o.record_id, "status": o.status.value, "expires_at": o.expires_at}
                for o in self.orders
            ],
        }


def submit_orders(body: str | bytes | None, store: OrderStore, limits: Limits, now: float) -> Receipt:
    """Validate and durably store a submission: every order of it, or none.

    An unchanged or changed pending order is replaced (its expiry renewed); an order the auction
    has already processed makes the whole request fail with ``OrdersAlreadyProcessed``.
    """
    orders = new_orders(parse_orders(body, limits), now)
    store.put_orders(orders, now=int(now))
    return Receipt(orders)


def find_order(store: OrderStore, record_id: str, now: float) -> Order:
    """The live order with this record_id; expired orders do not exist, even before TTL deletion."""
    if not is_record_id(record_id):
        raise OrderNotFound(record_id)  # it could never have been stored
    order = store.get_order(record_id)
    if order is None or not order.is_live(now):
        raise OrderNotFound(record_id)
    return order
