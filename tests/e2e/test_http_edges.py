"""The local stack's HTTP edges, as a client that breaks the rules meets them: raw bytes on a socket
to the real process. Every answer is JSON, and nothing a refused request carried is stored."""

from __future__ import annotations

import pytest

from .stack import LocalStack

pytestmark = pytest.mark.e2e


def test_an_id_holding_a_newline_is_a_missing_order(stack: LocalStack) -> None:
    token = stack.token()

    answer = stack.get_order("a%0Ab", token)

    assert answer.status == 404
    assert answer.json() == {"error": "not_found", "message": "no unexpired order with record_id 'a\\nb'"}
    assert answer.json().keys() == stack.get_order("never-posted", token).json().keys()
