"""The API contract: schemathesis runs the committed OpenAPI document against the local stack.

The stack runs as a real process (``LocalStack``); schemathesis generates requests from
``docs/openapi.json`` for every operation, valid ones and invalid ones (its examples, coverage and
fuzzing phases), as a trader and as an operator, and runs every check on each answer: no server
error, a status, content type, headers and body the document declares, a valid request accepted, an
invalid one refused, a method the document lacks answered 405, a missing or bad token 401.

A few of the document's rules are stated in prose, because JSON Schema cannot say them; a valid
request follows them here as a client would (:func:`follow_the_documented_rules`). Bounded and
derandomized: the same requests each run, within about a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import APIOperation

from energy_auction.auth import mint_token
from energy_auction.openapi import DOCUMENT, EXAMPLE_TRADER
from energy_auction.roles import Role

from ..conftest import SECRET
from .stack import LocalStack

Case = schemathesis.Case[APIOperation[Any, Any, Any, Any]]
ROOT = Path(__file__).resolve().parents[2]
CONFIG = schemathesis.Config.from_dict({"seed": 0, "generation": {"database": "none"}})
TOKENS = {
    Role.TRADER: mint_token(SECRET, subject=EXAMPLE_TRADER),
    Role.OPERATOR: mint_token(SECRET, subject="ops-1", role=Role.OPERATOR),
}
"""A token of each role, signed with the secret the stack is given: schemathesis makes the
examples' requests when it collects the tests, before the stack starts."""
FILTERS = ("status", "since", "trader")
"""The listing's filters, which its cursor is bound to (``intake.list_orders``)."""

trader_schema = schemathesis.openapi.from_path(ROOT / DOCUMENT, config=CONFIG)
operator_schema = schemathesis.openapi.from_path(ROOT / DOCUMENT, config=CONFIG)


class _Bearer:
    """A token of one role, as the document's bearer scheme says (schemathesis leaves it out of
    the requests whose point is a missing or bad one)."""

    role: Role

    def get(self, case: Case, context: schemathesis.AuthContext) -> str:
        return TOKENS[self.role]

    def set(self, case: Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@trader_schema.auth()
class TraderBearer(_Bearer):
    role = Role.TRADER


@operator_schema.auth()
class OperatorBearer(_Bearer):
    role = Role.OPERATOR


@pytest.fixture(scope="module")
def contract_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One stack for the module, holding the document's example orders and a few more of the same
    trader's (two cancelled), so a listing has pages and the examples find their order."""
    home = tmp_path_factory.mktemp("contract") / "home"
    stack = LocalStack(home=home, env={"ENERGY_AUCTION_JWT_SECRET": SECRET}).start()
    try:
        example = trader_schema.raw_schema["paths"]["/orders"]["post"]["requestBody"]["content"]
        more = [{"record_id": f"lot-{i}", "parameter_1": "lot", "parameter_2": i} for i in range(4)]
        assert (
            stack.post_orders(example["application/json"]["example"] + more, TOKENS[Role.TRADER]).status
            == 201
        )
        for record_id in ("lot-0", "lot-1"):
            assert stack.request("DELETE", f"/orders/{record_id}", headers=_auth(Role.TRADER)).status == 200
        yield stack
    finally:
        stack.stop()


def _auth(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def follow_the_documented_rules(case: Case, stack: LocalStack, role: Role) -> None:
    """Make a valid request follow the rules the document can state only in prose: no record_id
    twice in a submission; a cursor is a ``next_cursor`` the service gave for the same filters (or
    none, when there is no next page); an operator names the trader of the order to read."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if isinstance(case.body, list):
        firsts: dict[Any, Any] = {}
        for order in cast(list[dict[str, Any]], case.body):
            firsts.setdefault(order["record_id"], order)
        case.body = list(firsts.values())
    query = case.query if isinstance(case.query, dict) else {}
    if "cursor" in query:
        filters = {name: query[name] for name in FILTERS if name in query}
        page = stack.request("GET", "/orders?" + urlencode({**filters, "limit": 1}), headers=_auth(role))
        cursor = page.json()["next_cursor"] if page.status == 200 else None
        if cursor is None:
            del query["cursor"]
        else:
            query["cursor"] = cursor
    if role is Role.OPERATOR and case.operation.definition.raw.get("operationId") == "get_order":
        case.query = {**query, "trader": query.get("trader") or EXAMPLE_TRADER}


CONTRACT = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@trader_schema.parametrize()
@settings(CONTRACT, max_examples=100)
def test_the_api_keeps_its_documented_contract_for_a_trader(case: Case, contract_stack: LocalStack) -> None:
    follow_the_documented_rules(case, contract_stack, Role.TRADER)
    case.call_and_validate(base_url=contract_stack.url)


@operator_schema.parametrize()
@settings(CONTRACT, max_examples=40)
def test_the_api_keeps_its_documented_contract_for_an_operator(
    case: Case, contract_stack: LocalStack
) -> None:
    follow_the_documented_rules(case, contract_stack, Role.OPERATOR)
    case.call_and_validate(base_url=contract_stack.url)
