"""The times the API reads: RFC 3339 date-times (OpenAPI's ``date-time``), exactly, and a listing's
``since`` however far in the future."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_auction.orders import ORDER_TTL_SECONDS, OrderQuery, iso_utc, rfc3339_epoch

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2027-01-15T08:00:00Z", NOW),
        ("2027-01-15t08:00:00z", NOW),  # RFC 3339 allows lower case T and Z
        ("2027-01-15T09:30:00+01:30", NOW),
        ("2027-01-15T08:00:00-00:00", NOW),
        ("2027-01-15T08:00:00.25Z", NOW + 0.25),
        ("2027-01-15T08:00:00.123456789Z", NOW + 0.123456789),
        ("2026-12-31T23:59:60Z", 1_798_761_600.0),  # a leap second: the one after 23:59:59
        ("2026-12-31T22:59:60-01:00", 1_798_761_600.0),  # the same second, an hour behind UTC
        ("0000-01-01T00:00:00Z", -62_167_219_200.0),  # year 0, before datetime's year 1
        ("0000-03-01T00:00:00Z", -62_167_219_200.0 + 60 * 86_400),  # year 0 is a leap year
        ("9999-12-31T23:59:59-23:59", 253_402_300_799.0 + 86_340),  # past year 9999 in UTC
    ],
)
def test_an_rfc_3339_date_time_is_read_to_the_second(text: str, epoch: float) -> None:
    assert rfc3339_epoch(text) == pytest.approx(epoch, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "2027-01-15T08:00:00",  # no time zone
        "2027-01-15",
        "20270115T080000Z",  # ISO 8601's basic format
        "2027-01-15 08:00:00Z",  # a space for the T
        "2027-01-15T08:00Z",  # no seconds
        "2027-W03-5T08:00:00Z",  # a week date
        "2027-01-15T08:00:00,5Z",  # a decimal comma
        "2027-01-15T08:00:00.Z",
        "2027-01-15T24:00:00Z",
        "2027-01-15T08:00:00+24:00",
        "2027-01-15T08:00:00+01:60",
        "2027-02-29T08:00:00Z",  # 2027 is no leap year
        "2027-01-15T12:00:60Z",  # a leap second is 23:59:60 UTC only
        "2027-01-15T23:59:60+01:00",
        "٢٠٢٧-01-15T08:00:00Z",  # digits, but not ASCII ones
        "2027-01-15T08:00:00Z\n",
        "yesterday",
        "",
    ],
)
def test_anything_else_is_not_a_date_time(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        rfc3339_epoch(text)


@given(st.integers(min_value=0, max_value=4_102_444_800_000).map(lambda ms: ms / 1000))  # to 2100
def test_the_times_the_api_writes_read_back_as_the_same_time(epoch: float) -> None:
    written = iso_utc(epoch)
    assert iso_utc(rfc3339_epoch(written)) == written


@pytest.mark.parametrize(
    "since", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59", "2027-01-17T08:00:00Z"]
)
def test_a_listing_since_a_time_no_order_was_submitted_at_wants_none(since: str) -> None:
    query = OrderQuery(now=NOW, since=rfc3339_epoch(since))
    assert query.lowest_listed_at() == iso_utc(NOW + ORDER_TTL_SECONDS)


def test_a_listing_since_long_ago_wants_every_live_order() -> None:
    query = OrderQuery(now=NOW, since=rfc3339_epoch("0000-01-01T00:00:00Z"))
    assert query.lowest_listed_at() == OrderQuery(now=NOW).lowest_listed_at()
