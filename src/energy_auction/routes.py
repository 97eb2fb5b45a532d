"""The API's routes, declared once: method, path, the roles that may call it, and its operation.

The API handler registers an operation for each route, the authorizer's policy allows exactly the
routes of the token's role, the local gateway matches requests against them, the CDK stack makes
one API Gateway method for each, and the OpenAPI document lists them. Adding a route is one entry
here and its operation in ``energy_auction.handlers.api``.

Kept small and free of pydantic: the authorizer imports it on every cold start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from energy_auction.roles import Role

_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """``/orders/{record_id}``: literal segments and ``{name}`` path parameters."""
    roles: frozenset[Role]
    operation: str
    """The operation's name: its function in the API handler and its OpenAPI ``operationId``."""
    summary: str
    query: tuple[str, ...] = ()
    """The query string parameters the route takes (any other is refused)."""
    takes_orders: bool = False
    """Whether the body is a JSON array of orders (``orders.OrderRequest``), validated as such."""

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(_PARAMETER.findall(self.path))

    @property
    def pattern(self) -> re.Pattern[str]:
        """Matches a request path; each parameter is one non-empty segment."""
        parts = _PARAMETER.split(self.path)  # literal, name, literal, name, ...
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
        return re.compile(f"^{regex}$")

    @property
    def policy_path(self) -> str:
        """The route in an execute-api ARN: ``orders/*`` (a parameter is any one segment's text)."""
        return _PARAMETER.sub("*", self.path).lstrip("/")


TRADER = frozenset({Role.TRADER})
ANYONE = frozenset({Role.TRADER, Role.OPERATOR})

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/orders",
        TRADER,
        "submit_orders",
        "Submit or replace orders (all or none)",
        takes_orders=True,
    ),
    Route(
        "GET",
        "/orders",
        ANYONE,
        "list_orders",
        "List live orders, newest first",
        query=("status", "since", "limit", "cursor", "trader"),
    ),
    Route("GET", "/orders/{record_id}", ANYONE, "get_order", "Read one order", query=("trader",)),
    Route("DELETE", "/orders/{record_id}", TRADER, "cancel_order", "Cancel a pending order"),
)


def routes_for(role: Role) -> tuple[Route, ...]:
    """The routes a token of ``role`` may call."""
    return tuple(r for r in ROUTES if role in r.roles)


def match(method: str, path: str) -> tuple[Route | None, dict[str, str], tuple[str, ...]]:
    """The route for ``method`` and ``path``, its path parameters, and the methods the path takes
    (empty: no route has this path)."""
    found: Route | None = None
    parameters: dict[str, str] = {}
    allowed: list[str] = []
    for route in ROUTES:
        matched = route.pattern.match(path)
        if matched is None:
            continue
        allowed.append(route.method)
        if route.method == method:
            found, parameters = route, matched.groupdict()
    return found, parameters, tuple(allowed)
