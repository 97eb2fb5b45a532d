"""GET /orders?since=: an RFC 3339 date-time, as the OpenAPI document's ``date-time`` says (the
contract run found valid ones refused, other ISO 8601 forms accepted, and a 502)."""

from __future__ import annotations

import pytest

from energy_auction import bootstrap

from ..conftest import FakeClock
from .test_api_book import call, list_all, submit


@pytest.fixture(autouse=True)
def _local(local_container: bootstrap.Container) -> bootstrap.Container:
    return local_container


@pytest.mark.parametrize(
    "since",
    [
        "2027-01-15t08:01:00z",  # lower case t and z
        "2027-01-15T08:01:00.000000001Z",
        "2027-01-15T09:01:00+01:00",
    ],
)
def test_since_takes_every_form_of_an_rfc_3339_time(clock: FakeClock, since: str) -> None:
    submit("alice", "early")
    clock.advance(60)
    submit("alice", "late")

    assert list_all("alice", since=since) == ["late"]


@pytest.mark.parametrize("since", ["0000-01-01T00:00:00Z", "2026-12-31T23:59:60Z"])
def test_since_long_ago_lists_every_live_order(since: str) -> None:
    submit("alice", "a1", "a2")

    assert sorted(list_all("alice", since=since)) == ["a1", "a2"]


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59"])
def test_since_past_the_last_possible_time_lists_nothing(since: str) -> None:
    submit("alice", "a1")

    # Given a time past year 9999 in UTC, which no datetime can hold: once a 502
    status, answer, _ = call("GET", "/orders", principal="alice", query={"since": since})

    assert (status, answer) == (200, {"orders": [], "next_cursor": None})


@pytest.mark.parametrize(
    "since", ["20270115T080100Z", "2027-01-15 08:01:00Z", "2027-01-15T08:01Z", "2027-W03-5T08:01:00Z"]
)
def test_since_refuses_what_is_not_rfc_3339(since: str) -> None:
    status, answer, _ = call("GET", "/orders", principal="alice", query={"since": since})

    assert status == 400
    assert (answer["error"], answer["parameter"]) == ("invalid_query", "since")
    assert "RFC 3339" in answer["message"]
