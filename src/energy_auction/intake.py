"""Order intake, the API's use cases: submit, read, list and cancel a trader's orders. No AWS here:
storage goes through the :class:`~energy_auction.ports.OrderStore` port.

Every use case acts for a :class:`Caller`. A trader reaches only their own orders: the store's
key of an order holds its trader (``orders.order_key``), so another trader's order is not found,
exactly like a missing one. An operator reads and lists everyone's orders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from energy_auction.cursors import CursorCodec
from energy_auction.errors import InvalidQuery, OrderNotFound, RoleForbidden
from energy_auction.orders import (
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    Limits,
    Order,
    OrderQuery,
    OrderStatus,
    is_record_id,
    new_orders,
    order_key,
    parse_orders,
    rfc3339_epoch,
)
from energy_auction.roles import Role

if TYPE_CHECKING:
    from energy_auction.ports import OrderStore


@dataclass(frozen=True)
class Caller:
    """Who calls the API: the token's subject and role (from the authorizer's context)."""

    subject: str
    role: Role = Role.TRADER

    def trader_of(self, named: str | None) -> str:
        """Whose order a read means: the caller's own for a trader (who may name only themselves),
        the one named for an operator (who must name one)."""
        if self.role is Role.OPERATOR:
            if not named:
                raise InvalidQuery("trader", "an operator names the trader whose order to read")
            return named
        if named is not None and named != self.subject:
            raise RoleForbidden("a trader reads only their own orders")
        return self.subject


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


def submit_orders(
    body: str | bytes | None, caller: Caller, store: OrderStore, limits: Limits, now: float
) -> Receipt:
    """Validate and durably store a submission of the caller's: every order of it, or none. Which
    roles may submit is the route table's to say (``routes.ROUTES``), not this function's.

    An unchanged or changed pending order, or a cancelled one, is replaced (its expiry renewed); an
    order the auction has processed makes the whole request fail with ``OrdersAlreadyProcessed``.
    """
    orders = new_orders(parse_orders(body, limits), now, caller.subject)
    store.put_orders(orders, now=int(now))
    return Receipt(orders)


def find_order(
    store: OrderStore, caller: Caller, record_id: str, now: float, trader: str | None = None
) -> Order:
    """The live order ``record_id`` of the caller (an operator: of ``trader``); expired orders do
    not exist, even before TTL deletion, and another trader's order does not exist for a trader."""
    if not is_record_id(record_id):
        raise OrderNotFound(record_id)  # it could never have been stored
    owner = caller.trader_of(trader)
    order = store.get_order(order_key(owner, record_id))
    if order is None or not order.is_live(now):
        raise OrderNotFound(record_id)
    return order


def cancel_order(store: OrderStore, caller: Caller, record_id: str, now: float) -> Order:
    """Cancel the caller's pending order ``record_id``; cancelling it again returns it unchanged."""
    if not is_record_id(record_id):
        raise OrderNotFound(record_id)
    return store.cancel_order(order_key(caller.subject, record_id), int(now))


def _listing_filters(caller: Caller, parameters: Mapping[str, str], now: float) -> OrderQuery:
    status = parameters.get("status")
    if status is not None and status not in set(OrderStatus):
        raise InvalidQuery("status", f"must be one of {', '.join(OrderStatus)}")
    since = parameters.get("since")
    since_epoch = None
    if since is not None:
        try:
            since_epoch = rfc3339_epoch(since)
        except ValueError:
            raise InvalidQuery(
                "since", "must be an RFC 3339 time with its time zone, e.g. 2026-12-01T08:00:00Z or +01:00"
            ) from None
    limit_text = parameters.get("limit")
    limit = LIST_LIMIT_DEFAULT
    if limit_text is not None:
        digits = limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= len(str(LIST_LIMIT_MAX))
        if not digits or not 1 <= int(limit_text) <= LIST_LIMIT_MAX:
            raise InvalidQuery("limit", f"must be a whole number from 1 to {LIST_LIMIT_MAX}")
        limit = int(limit_text)
    trader = parameters.get("trader")
    if caller.role is Role.TRADER:
        if trader is not None and trader != caller.subject:
            raise RoleForbidden("a trader lists only their own orders")
        trader = caller.subject
    elif trader is not None and not trader:
        raise InvalidQuery("trader", "must name a trader (a token's sub)")
    return OrderQuery(
        now=now,
        trader=trader,
        status=OrderStatus(status) if status else None,
        since=since_epoch,
        limit=limit,
    )


def list_orders(
    store: OrderStore,
    caller: Caller,
    parameters: Mapping[str, str],
    now: float,
    cursors: CursorCodec,
) -> dict[str, Any]:
    """A page of the caller's live orders (an operator: everyone's, or ``trader``'s), newest first:
    ``{"orders": [...], "next_cursor": ... or None}``. The query string's parameters: ``status``,
    ``since`` (ISO 8601), ``limit`` (1 to 100, default 50), ``cursor``, and ``trader``."""
    query = _listing_filters(caller, parameters, now)
    binding = {
        "role": caller.role.value,
        "subject": caller.subject,
        "trader": query.trader,
        "status": query.status.value if query.status else None,
        "since": parameters.get("since"),
    }
    cursor = parameters.get("cursor")
    if cursor is not None:
        query = OrderQuery(
            now=query.now,
            trader=query.trader,
            status=query.status,
            since=query.since,
            limit=query.limit,
            before=cursors.read(cursor, binding),
        )
    page = store.list_orders(query)
    return {
        "orders": [o.public_view() for o in page.orders],
        "next_cursor": cursors.make(page.next_before, binding) if page.next_before else None,
    }
