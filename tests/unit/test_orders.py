"""Order validation (parse_orders / submit_orders) and the expiry policy (new_orders / find_order)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import simplejson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_auction import codec
from energy_auction.errors import (
    BodyTooLarge,
    InvalidJson,
    OrderNotFound,
    OrdersInvalid,
    Problem,
    TooManyOrders,
)
from energy_auction.intake import Caller, find_order, submit_orders
from energy_auction.orders import (
    ORDER_TTL_SECONDS,
    PARAMETER_2_PLACE_RULE,
    PARAMETER_2_RANGE_RULE,
    BatchTally,
    Decision,
    Limits,
    NoticeClaim,
    NoticeHold,
    Order,
    OrderPage,
    OrderQuery,
    OrderStatus,
    RunRecord,
    iso_utc,
    new_orders,
    parse_orders,
    settled_outcome,
)

from ..builders import TRADER, key
from ..conftest import START

LIMITS = Limits()
CALLER = Caller(TRADER)
VALID_RECORD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
EXAMPLE = (
    '[{"record_id": "unique_id_1", "parameter_1": "abc", "parameter_2": 4}, '
    '{"record_id": "unique_id_2", "parameter_1": "def", "parameter_2": 2.1}]'
)


def order(**fields: Any) -> dict[str, Any]:
    return {"record_id": "r1", "parameter_1": "abc", "parameter_2": 1, **fields}


def body_of(*records: Any) -> str:
    """A request body; numbers given as strings in Decimal form are written exactly."""
    return codec.dumps(list(records))


def problems_of(body: str | bytes | None, limits: Limits = LIMITS) -> list[Problem]:
    with pytest.raises(OrdersInvalid) as refused:
        parse_orders(body, limits)
    return refused.value.problems


def only_problem(body: str | bytes | None) -> Problem:
    problems = problems_of(body)
    assert len(problems) == 1, problems
    return problems[0]


class MemoryStore:
    """The OrderStore port in a dict by key, counting reads.

    Order intake puts, gets, lists and cancels orders (the rules of which are the stores' contract
    tests'). The rest of the port belongs to the pipeline: here it fails the test, should intake
    ever call it.
    """

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.reads: list[str] = []

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        for o in orders:
            self.orders[o.key] = o

    def get_order(self, key: str) -> Order | None:
        self.reads.append(key)
        return self.orders.get(key)

    def list_orders(self, query: OrderQuery) -> OrderPage:
        self.reads.append("list")
        found = sorted(
            (o for o in self.orders.values() if query.wants(o)), key=lambda o: o.listed_at, reverse=True
        )
        page = found[: query.limit]
        return OrderPage(page, page[-1].listed_at if len(found) > query.limit else None)

    def cancel_order(self, key: str, now: int) -> Order:
        order = self.orders.get(key)
        if order is None or not order.is_live(now):
            raise OrderNotFound(key.partition("/")[2])
        if order.status is not OrderStatus.CANCELLED:
            if not order.is_cancellable(now):
                raise order.cancel_refused(now)
            order = order.model_copy(update={"status": OrderStatus.CANCELLED, "cancelled_at": iso_utc(now)})
            self.orders[key] = order
        return order

    def pending_keys(self, now: int, run_id: str) -> Iterator[str]:
        raise _not_intake("pending_keys")

    def retire_orders(self, keys: Sequence[str], now: int) -> None:
        raise _not_intake("retire_orders")

    def get_orders(self, keys: Sequence[str], *, consistent: bool = True) -> list[Order]:
        raise _not_intake("get_orders")

    def claim_orders(
        self,
        keys: Sequence[str],
        run_id: str,
        now: int,
        lease_seconds: int,
        decisions: Mapping[str, Decision] | None = None,
    ) -> list[Order]:
        raise _not_intake("claim_orders")

    def complete_order(
        self,
        key: str,
        run_id: str,
        status: OrderStatus,
        outcome: dict[str, Any],
        *,
        notice_due_at: int | None = None,
    ) -> None:
        raise _not_intake("complete_order")

    def release_order(self, key: str, run_id: str) -> None:
        raise _not_intake("release_order")

    def claim_notices(
        self, holds: Sequence[NoticeHold], now: int, lease_seconds: int
    ) -> list[NoticeClaim | None]:
        raise _not_intake("claim_notices")

    def finish_notices(self, holds: Sequence[NoticeHold], *, delivered: bool) -> None:
        raise _not_intake("finish_notices")

    def overdue_notices(self, now: int, limit: int) -> list[Order]:
        raise _not_intake("overdue_notices")

    def postpone_notice(self, key: str, run_id: str, due_at: int) -> None:
        raise _not_intake("postpone_notice")

    def begin_run(self, run_id: str, staged: int, left: int, now: int) -> None:
        raise _not_intake("begin_run")

    def record_batch(self, run_id: str, batch: int, tally: BatchTally) -> None:
        raise _not_intake("record_batch")

    def run_record(self, run_id: str) -> RunRecord:
        raise _not_intake("run_record")


def _not_intake(method: str) -> AssertionError:
    return AssertionError(f"order intake called OrderStore.{method}, which only the pipeline uses")


# --- The valid example


def test_example_request_is_accepted_with_exact_values() -> None:
    orders = parse_orders(EXAMPLE, LIMITS)

    assert [(o.record_id, o.parameter_1, o.parameter_2) for o in orders] == [
        ("unique_id_1", "abc", Decimal(4)),
        ("unique_id_2", "def", Decimal("2.1")),
    ]
    # 2.1 is the decimal 2.1, not the nearest binary float
    assert str(orders[1].parameter_2) == "2.1"
    assert orders[0].parameter_2.as_tuple().exponent == 0


@pytest.mark.parametrize(
    "literal",
    [
        "2.1000000000000000000001",
        "0.1",
        "-17.250",
        "1E+10",
        "1e-130",
        "9.99e125",
        "12345678901234567890123456789012345678",  # 38 significant digits
        "1.234567890123456789012345678901234567",
        "0",
    ],
)
def test_parameter_2_is_kept_exactly_as_written(literal: str) -> None:
    body = f'[{{"record_id": "r1", "parameter_1": "x", "parameter_2": {literal}}}]'
    (parsed,) = parse_orders(body, LIMITS)
    assert parsed.parameter_2 == Decimal(literal)
    assert parsed.parameter_2.as_tuple() == Decimal(literal).as_tuple()


@pytest.mark.parametrize("literal", ["-0.0", "0e200", "0E-200", "0.000"])
def test_any_zero_is_stored_as_plain_zero(literal: str) -> None:
    # DynamoDB refuses zeros with extreme exponents; the value is the same, so it is stored as 0
    (parsed,) = parse_orders(f'[{{"record_id": "r1", "parameter_1": "x", "parameter_2": {literal}}}]', LIMITS)
    assert parsed.parameter_2.as_tuple() == Decimal(0).as_tuple()


def test_trailing_zeros_beyond_38_digits_keep_the_value() -> None:
    literal = "1." + "0" * 45
    (parsed,) = parse_orders(f'[{{"record_id": "r1", "parameter_1": "x", "parameter_2": {literal}}}]', LIMITS)
    assert parsed.parameter_2 == Decimal(1)
    assert len(parsed.parameter_2.as_tuple().digits) <= 38


def test_body_may_be_bytes_or_str() -> None:
    assert parse_orders(EXAMPLE.encode(), LIMITS) == parse_orders(EXAMPLE, LIMITS)


def test_non_ascii_parameter_1_is_accepted() -> None:
    (parsed,) = parse_orders(body_of(order(parameter_1="Ærø ⚡ 東京")), LIMITS)
    assert parsed.parameter_1 == "Ærø ⚡ 東京"


# --- Invalid JSON


@pytest.mark.parametrize(
    "body",
    [
        '[{"record_id": "a", "parameter_1": "x", "parameter_2": 1,},]',
        '[{"record_id": "a", "parameter_1": "x", "parameter_2": 1}]]',
        '[{"record_id": "a", "parameter_1": "x", "parameter_2": 1}',
        "[{'record_id': 'a'}]",
        '[{"record_id": "a", "parameter_1": "x", "parameter_2": 01}]',
        "[1] [2]",
        "not json",
        b"\xff\xfe\x00[",
    ],
    ids=[
        "trailing commas",
        "extra bracket",
        "unclosed",
        "single quotes",
        "leading zero",
        "two documents",
        "text",
        "bad bytes",
    ],
)
def test_invalid_json_is_refused(body: str | bytes) -> None:
    with pytest.raises(InvalidJson) as refused:
        parse_orders(body, LIMITS)
    assert refused.value.code == "invalid_json"
    assert refused.value.message.startswith("body is not valid JSON")


def test_duplicate_keys_in_an_object_are_invalid_json() -> None:
    body = '[{"record_id": "a", "parameter_1": "x", "parameter_2": 1, "parameter_2": 2}]'
    with pytest.raises(InvalidJson, match="duplicate key 'parameter_2'"):
        parse_orders(body, LIMITS)


def invalid_json_message(body: str | bytes) -> str:
    with pytest.raises(InvalidJson) as refused:
        parse_orders(body, LIMITS)
    return refused.value.message


NOT_UTF8 = "body is not valid JSON: bytes that are not UTF-8 at line 1 column 1"
NUL_AT = "body is not valid JSON: a NUL character at line 1 column {} (send UTF-8, not UTF-16 or UTF-32)"


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("utf-16", NOT_UTF8),  # with a byte order mark: FF FE is no UTF-8
        ("utf-16-le", NUL_AT.format(2)),  # ASCII in UTF-16 is valid UTF-8 with a NUL after each character
        ("utf-16-be", NUL_AT.format(1)),
        ("utf-32", NOT_UTF8),
        ("utf-32-le", NUL_AT.format(2)),
        ("utf-32-be", NUL_AT.format(1)),
    ],
    ids=["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"],
)
def test_a_body_in_utf16_or_utf32_is_invalid_json_and_says_where(encoding: str, message: str) -> None:
    # Given the example request in UTF-16 or UTF-32, with or without a byte order mark
    body = EXAMPLE.encode(encoding)

    # When it is parsed, then it is refused as invalid JSON at its first character
    assert invalid_json_message(body) == message


def test_a_byte_that_is_not_utf8_is_located_by_line_and_column() -> None:
    body = b'[{"record_id": "a",\n  "parameter_1": "\xe9t\xe9", "parameter_2": 1}]'  # Latin-1 text

    assert (
        invalid_json_message(body) == "body is not valid JSON: bytes that are not UTF-8 at line 2 column 19"
    )


@pytest.mark.parametrize(
    "body", [b"\xef\xbb\xbf" + EXAMPLE.encode(), "\ufeff" + EXAMPLE], ids=["bytes", "text"]
)
def test_a_utf8_byte_order_mark_is_refused(body: str | bytes) -> None:
    # RFC 8259 forbids sending one; refusing it keeps bytes and text bodies (AWS, local) alike
    assert invalid_json_message(body) == (
        "body is not valid JSON: a byte order mark (U+FEFF) at line 1 column 1; send UTF-8 without one"
    )


def test_a_lone_surrogate_in_a_text_body_is_invalid_json_not_a_crash() -> None:
    body = '[{"record_id": "a", "parameter_1": "\udc00", "parameter_2": 1}]'  # no UTF-8 bytes can say this

    assert (
        invalid_json_message(body) == "body is not valid JSON: bytes that are not UTF-8 at line 1 column 37"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[" * 100_000, "body is not valid JSON: nested too deeply"),
        ('{"a":' * 30_000 + "1" + "}" * 30_000, "body is not valid JSON: nested too deeply"),
        (
            '[{"record_id": "a",\n "parameter_1": "x" "parameter_2": 1}]',
            ("body is not valid JSON: Expecting ',' delimiter at line 2 column 21"),
        ),
    ],
    ids=["deep arrays", "deep objects", "missing comma"],
)
def test_invalid_json_messages_are_plain_and_locate_the_problem(body: str, message: str) -> None:
    assert invalid_json_message(body) == message


def test_a_number_of_thousands_of_digits_is_json_and_refused_as_a_value() -> None:
    # Given integers longer than Python's int() reads by default (4300 digits)
    digits = "7" * 5000
    body = f'[{{"record_id": "a", "parameter_1": "x", "parameter_2": {digits}}}, {{"record_id": {digits}}}]'

    # When parsed, then it is valid JSON, and each field says what is wrong with its value
    problems = problems_of(body)
    assert [(p.index, p.field, p.message) for p in problems] == [
        (0, "parameter_2", "must have at most 38 significant digits"),
        (1, "record_id", "must be a string"),
        (1, "parameter_1", "is required"),
        (1, "parameter_2", "is required"),
    ]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_invalid_json_never_shows_python_internals(body: bytes) -> None:
    message = None
    try:
        parse_orders(body, LIMITS)
    except InvalidJson as refused:
        message = refused.message
    except (OrdersInvalid, TooManyOrders, BodyTooLarge):
        return
    if message is not None:
        assert re.fullmatch(r"body is not valid JSON: [^\n]+", message)
        for internal in ("recursion", "sys.", "Exceeds the limit", "codec", "decode", "Traceback"):
            assert internal not in message


# --- The body must be a non-empty array


NOT_A_NON_EMPTY_ARRAY = {
    "none": None,
    "empty str": "",
    "empty bytes": b"",
    "whitespace": "   \n",
    "empty array": "[]",
    "empty object": "{}",
    "object": '{"record_id": "a", "parameter_1": "x", "parameter_2": 1}',
    "string": '"a"',
    "number": "42",
    "null": "null",
    "boolean": "true",
}


@pytest.mark.parametrize("body", NOT_A_NON_EMPTY_ARRAY.values(), ids=NOT_A_NON_EMPTY_ARRAY.keys())
def test_body_that_is_not_a_non_empty_array_is_refused(body: str | bytes | None) -> None:
    problem = only_problem(body)
    assert problem == Problem("body must be a non-empty JSON array of orders")


@pytest.mark.parametrize("record", [1, "order", None, [], [order()], True])
def test_record_that_is_not_an_object_is_refused(record: Any) -> None:
    problems = problems_of(body_of(order(record_id="ok"), record))
    assert problems == [Problem("each order must be a JSON object", index=1)]


# --- record_id


def test_missing_record_id_is_reported() -> None:
    record = order()
    del record["record_id"]
    problem = only_problem(body_of(record))
    assert (problem.index, problem.record_id, problem.field) == (0, None, "record_id")
    assert problem.message == "is required"


@pytest.mark.parametrize(
    "record_id",
    [
        "",
        "a" * 65,
        "a/b",
        "-a",
        "_a",
        ".a",
        "a b",
        " a",
        "a ",
        "ünïcode",
        "a\u00a0b",
        "東京",
        "a:b",
        "a\n",
        "a\tb",
    ],
)
def test_badly_formed_record_id_is_refused(record_id: str) -> None:
    problem = only_problem(body_of(order(record_id=record_id)))
    assert (problem.index, problem.record_id, problem.field) == (0, record_id, "record_id")
    assert problem.message.startswith("must be 1 to 64 characters: letters, digits")


@pytest.mark.parametrize("record_id", [1, None, ["a"], {"a": 1}, True])
def test_record_id_that_is_not_a_string_is_refused(record_id: Any) -> None:
    problem = only_problem(body_of(order(record_id=record_id)))
    assert (problem.index, problem.record_id, problem.field) == (0, None, "record_id")
    assert problem.message == "must be a string"


@pytest.mark.parametrize("record_id", ["a", "A" * 64, "0", "a-b_c.d", "a..b", "a-", "Z9", "1.5"])
def test_well_formed_record_ids_are_accepted(record_id: str) -> None:
    (parsed,) = parse_orders(body_of(order(record_id=record_id)), LIMITS)
    assert parsed.record_id == record_id


def test_record_id_repeated_in_one_request_names_the_later_index() -> None:
    body = body_of(order(record_id="a"), order(record_id="b"), order(record_id="a", parameter_2=5))
    problem = only_problem(body)
    assert (problem.index, problem.record_id, problem.field) == (2, "a", "record_id")
    assert "repeated" in problem.message
    assert "index 0" in problem.message


# --- parameter_1


@pytest.mark.parametrize("value", [1, 1.5, None, ["abc"], {"a": "b"}, True])
def test_parameter_1_that_is_not_a_string_is_refused(value: Any) -> None:
    problem = only_problem(body_of(order(parameter_1=value)))
    assert (problem.index, problem.record_id, problem.field) == (0, "r1", "parameter_1")
    assert problem.message == "must be a string"


@pytest.mark.parametrize(("value", "words"), [("", "at least 1"), ("x" * 257, "at most 256")])
def test_parameter_1_must_be_1_to_256_characters(value: str, words: str) -> None:
    problem = only_problem(body_of(order(parameter_1=value)))
    assert (problem.index, problem.record_id, problem.field) == (0, "r1", "parameter_1")
    assert words in problem.message


def test_parameter_1_of_256_characters_is_accepted() -> None:
    (parsed,) = parse_orders(body_of(order(parameter_1="é" * 256)), LIMITS)
    assert parsed.parameter_1 == "é" * 256


# --- parameter_2


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ("true", "must be a JSON number"),
        ("false", "must be a JSON number"),
        ('"4"', "must be a JSON number"),
        ('"2.1"', "must be a JSON number"),
        ("null", "must be a JSON number"),
        ("[4]", "must be a JSON number"),
        ('{"value": 4}', "must be a JSON number"),
        ("NaN", "must be a finite number (NaN and Infinity are refused)"),
        ("Infinity", "must be a finite number (NaN and Infinity are refused)"),
        ("-Infinity", "must be a finite number (NaN and Infinity are refused)"),
    ],
)
def test_parameter_2_must_be_a_finite_json_number(literal: str, message: str) -> None:
    body = f'[{{"record_id": "r1", "parameter_1": "x", "parameter_2": {literal}}}]'
    problem = only_problem(body)
    assert (problem.index, problem.record_id, problem.field) == (0, "r1", "parameter_2")
    assert problem.message == message


MAX_PARAMETER_2 = "9.9999999999999999999999999999999999999e125"  # 38 nines: the largest DynamoDB stores


@pytest.mark.parametrize(
    "literal",
    [
        MAX_PARAMETER_2,
        "-" + MAX_PARAMETER_2,
        "9.999e125",
        "1e125",
        "1e-130",
        "-1e-130",
        "1.23456789012345678901234567890123456e-130",  # its last digit is the 1e-165 place
    ],
)
def test_parameter_2_at_the_edges_of_dynamodbs_range_is_accepted(literal: str) -> None:
    (parsed,) = parse_orders(f'[{{"record_id": "r1", "parameter_1": "x", "parameter_2": {literal}}}]', LIMITS)
    assert parsed.parameter_2 == Decimal(literal)


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ("1e126", PARAMETER_2_RANGE_RULE),
        ("-1e126", PARAMETER_2_RANGE_RULE),
        ("10e125", PARAMETER_2_RANGE_RULE),
        ("9.9e-131", PARAMETER_2_RANGE_RULE),
        ("-1e-131", PARAMETER_2_RANGE_RULE),
        ("1.234567890123456789012345678901234567e-130", PARAMETER_2_PLACE_RULE),  # a digit at 1e-166
    ],
)
def test_parameter_2_just_outside_dynamodbs_range_is_refused_saying_the_rule(
    literal: str, message: str
) -> None:
    problem = only_problem(f'[{{"record_id": "r1", "parameter_1": "x", "parameter_2": {literal}}}]')
    assert (problem.field, problem.message) == ("parameter_2", message)


def test_the_readme_states_the_range_in_the_words_of_the_messages() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `parameter_2` |")]
    assert PARAMETER_2_RANGE_RULE in row
    assert PARAMETER_2_PLACE_RULE in row
    assert "9.9999999999999999999999999999999999999e125" in row


@pytest.mark.parametrize(
    "literal",
    [
        "123456789012345678901234567890123456789",  # 39 digits
        "1.000000000000000000000000000000000000001",  # 40 digits
        "0.12345678901234567890123456789012345678901",
        "-98765432109876543210987654321098765432.1",
    ],
)
def test_parameter_2_with_more_than_38_significant_digits_is_refused(literal: str) -> None:
    # DynamoDB keeps at most 38 significant digits; more could not be stored exactly.
    body = f'[{{"record_id": "r1", "parameter_1": "x", "parameter_2": {literal}}}]'
    problem = only_problem(body)
    assert (problem.index, problem.record_id, problem.field) == (0, "r1", "parameter_2")
    assert problem.message == "must have at most 38 significant digits"


def test_trailing_zeros_do_not_count_as_significant_digits() -> None:
    literal = "1" + "0" * 60  # 1e60: one significant digit
    (parsed,) = parse_orders(f'[{{"record_id": "r1", "parameter_1": "x", "parameter_2": {literal}}}]', LIMITS)
    assert parsed.parameter_2 == Decimal(literal)


# --- Unknown and missing fields


def test_unknown_fields_are_refused_by_name() -> None:
    problems = problems_of(body_of(order(price=3, Parameter_1="x")))
    assert sorted(p.field or "" for p in problems) == ["Parameter_1", "price"]
    assert all(p.index == 0 and p.record_id == "r1" for p in problems)
    assert all(p.message.startswith("is not a known field") for p in problems)


def test_every_missing_field_is_reported() -> None:
    problems = problems_of(body_of({}))
    assert [(p.index, p.record_id, p.field, p.message) for p in problems] == [
        (0, None, "record_id", "is required"),
        (0, None, "parameter_1", "is required"),
        (0, None, "parameter_2", "is required"),
    ]


# --- All problems at once


def test_several_bad_records_are_reported_together() -> None:
    # Given a request with good and bad records
    body = body_of(
        order(record_id="good-1"),
        order(record_id="bad/1"),
        order(record_id="good-2"),
        "not an order",
        order(record_id="bad-3", parameter_1=7, parameter_2=True),
    )

    # When it is parsed, then every problem is reported, each naming its record and field
    problems = problems_of(body)
    assert [(p.index, p.record_id, p.field) for p in problems] == [
        (1, "bad/1", "record_id"),
        (3, None, None),
        (4, "bad-3", "parameter_1"),
        (4, "bad-3", "parameter_2"),
    ]
    assert all(p.message for p in problems)


def test_problems_serialise_with_index_record_id_field_and_message() -> None:
    with pytest.raises(OrdersInvalid) as refused:
        parse_orders(body_of(order(parameter_1="")), LIMITS)
    details = refused.value.details()
    assert set(details["problems"][0]) == {"index", "record_id", "field", "message"}
    assert refused.value.code == "validation_failed"
    assert "nothing was stored" in refused.value.message


# --- Limits


def test_more_orders_than_the_limit_is_refused() -> None:
    limits = Limits(max_orders=3)
    assert len(parse_orders(body_of(*(order(record_id=f"r{i}") for i in range(3))), limits)) == 3

    with pytest.raises(TooManyOrders) as refused:
        parse_orders(body_of(*(order(record_id=f"r{i}") for i in range(4))), limits)
    assert refused.value.details() == {"limit": 3}
    assert "4 orders" in refused.value.message


def test_default_limit_is_100_orders() -> None:
    assert len(parse_orders(body_of(*(order(record_id=f"r{i}") for i in range(100))), LIMITS)) == 100
    with pytest.raises(TooManyOrders):
        parse_orders(body_of(*(order(record_id=f"r{i}") for i in range(101))), LIMITS)


def test_body_over_the_byte_limit_is_refused_before_parsing() -> None:
    body = body_of(order(parameter_1="x" * 200))
    size = len(body.encode())
    assert parse_orders(body, Limits(max_body_bytes=size))

    with pytest.raises(BodyTooLarge) as refused:
        parse_orders(body, Limits(max_body_bytes=size - 1))
    assert refused.value.details() == {"limit_bytes": size - 1}

    # the limit counts bytes, not characters, and applies even to invalid JSON
    with pytest.raises(BodyTooLarge):
        parse_orders("é" * 60, Limits(max_body_bytes=100))


# --- Submission and expiry


def test_new_orders_are_pending_for_24_hours_from_submission() -> None:
    requests = parse_orders(EXAMPLE, LIMITS)
    orders = new_orders(requests, START + 0.75, TRADER)

    assert {o.status for o in orders} == {OrderStatus.PENDING}
    assert {o.expires_at for o in orders} == {int(START) + 86400}
    assert ORDER_TTL_SECONDS == 86400
    submitted = orders[0].submitted_at
    assert submitted.endswith("Z")
    assert datetime.fromisoformat(submitted) == datetime.fromtimestamp(START + 0.75, UTC)
    assert submitted == "2027-01-15T08:00:00.750Z"


def test_submit_orders_stores_every_order_and_returns_a_receipt() -> None:
    store = MemoryStore()
    receipt = submit_orders(EXAMPLE, CALLER, store, LIMITS, now=START)

    assert receipt.as_dict() == {
        "stored": 2,
        "orders": [
            {"record_id": "unique_id_1", "status": "pending", "expires_at": int(START) + 86400},
            {"record_id": "unique_id_2", "status": "pending", "expires_at": int(START) + 86400},
        ],
    }
    assert store.orders[key("unique_id_2")].parameter_2 == Decimal("2.1")


def test_submit_orders_stores_nothing_when_any_record_is_invalid() -> None:
    store = MemoryStore()
    with pytest.raises(OrdersInvalid):
        submit_orders(body_of(order(record_id="fine"), order(record_id="")), CALLER, store, LIMITS, now=START)
    assert store.orders == {}


def test_find_order_returns_a_live_order_and_hides_it_once_expired() -> None:
    store = MemoryStore()
    submit_orders(EXAMPLE, CALLER, store, LIMITS, now=START)

    assert find_order(store, CALLER, "unique_id_1", now=START + 86399).parameter_2 == Decimal(4)
    # an expired order does not exist, even though the store still holds it
    with pytest.raises(OrderNotFound) as missing:
        find_order(store, CALLER, "unique_id_1", now=START + 86400)
    assert missing.value.code == "not_found"
    assert key("unique_id_1") in store.orders


def test_find_order_of_an_unknown_record_id_is_not_found() -> None:
    with pytest.raises(OrderNotFound):
        find_order(MemoryStore(), CALLER, "never-stored", now=START)


@pytest.mark.parametrize("record_id", ["a" * 65, "a/b", "-a", "a b", "ünï", "", "../etc/passwd"])
def test_find_order_refuses_malformed_record_ids_without_reading_the_store(record_id: str) -> None:
    store = MemoryStore()
    with pytest.raises(OrderNotFound):
        find_order(store, CALLER, record_id, now=START)
    assert store.reads == []


def test_find_order_refuses_a_record_id_with_a_trailing_newline_without_reading_the_store() -> None:
    # "abc\n" is refused on submission (see test_badly_formed_record_id_is_refused), so it can never be
    # stored and need not be looked up.
    store = MemoryStore()
    with pytest.raises(OrderNotFound):
        find_order(store, CALLER, "abc\n", now=START)
    assert store.reads == []


# --- Properties

record_ids = st.from_regex(VALID_RECORD_ID, fullmatch=True)


@st.composite
def exact_numbers(draw: st.DrawFn) -> Decimal:
    """Finite decimals DynamoDB stores exactly: at most 38 significant digits, magnitude at least 1e-130
    and less than 1e126, no digit below 1e-165 (the smallest boto3's DynamoDB context represents)."""
    coefficient = draw(st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1))
    if coefficient == 0:
        return Decimal(0)
    digits = len(str(abs(coefficient)))
    exponent = draw(st.integers(min_value=max(-165, -130 - digits + 1), max_value=125 - digits + 1))
    return Decimal(f"{coefficient}E{exponent}")


valid_records = st.fixed_dictionaries(
    {
        "record_id": record_ids,
        "parameter_1": st.text(min_size=1, max_size=256),
        "parameter_2": st.one_of(exact_numbers(), st.integers(min_value=-(10**20), max_value=10**20)),
    }
)
valid_requests = st.lists(valid_records, min_size=1, max_size=10, unique_by=lambda r: r["record_id"])


@settings(max_examples=100, deadline=None)
@given(valid_requests)
def test_valid_requests_always_parse_and_round_trip_exactly(records: list[dict[str, Any]]) -> None:
    parsed = parse_orders(codec.dumps(records), LIMITS)

    assert [o.record_id for o in parsed] == [r["record_id"] for r in records]
    assert [o.parameter_1 for o in parsed] == [r["parameter_1"] for r in records]
    for o, r in zip(parsed, records, strict=True):
        assert o.parameter_2 == Decimal(r["parameter_2"])
        assert str(o.parameter_2) == str(Decimal(r["parameter_2"]))
    # and the stored form reads back identically
    for stored in new_orders(parsed, START, TRADER):
        assert Order.model_validate(codec.loads(codec.dumps(stored.model_dump()))) == stored


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # includes NaN and infinities, written as NaN/Infinity literals
    st.text(max_size=20),
    st.sampled_from(["r1", "a/b", "", "x" * 70]),
)
json_documents = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(
            st.one_of(st.sampled_from(["record_id", "parameter_1", "parameter_2"]), st.text(max_size=10)),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)
order_like_requests = st.lists(
    st.fixed_dictionaries(
        {
            "record_id": st.one_of(record_ids, json_scalars),
            "parameter_1": st.one_of(st.text(min_size=1, max_size=10), json_scalars),
            "parameter_2": st.one_of(exact_numbers(), json_scalars),
        },
        optional={"extra": json_scalars},
    ),
    min_size=1,
    max_size=6,
)
EXPECTED_ERRORS = (InvalidJson, OrdersInvalid, TooManyOrders, BodyTooLarge)
SMALL_LIMITS = Limits(max_orders=4, max_body_bytes=600)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_documents, order_like_requests))
def test_any_json_document_is_either_accepted_or_refused_with_a_domain_error(document: Any) -> None:
    body = simplejson.dumps(document, use_decimal=True, allow_nan=True)  # NaN and Infinity literals too
    try:
        parsed = parse_orders(body, SMALL_LIMITS)
    except EXPECTED_ERRORS:
        return
    # accepted: then it was a non-empty array of valid orders
    assert isinstance(document, list)
    assert [o.record_id for o in parsed] == [r["record_id"] for r in document]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=700))
def test_any_bytes_are_either_accepted_or_refused_with_a_domain_error(body: bytes) -> None:
    with contextlib.suppress(*EXPECTED_ERRORS):
        parse_orders(body, SMALL_LIMITS)


invalid_record_ids = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="abcXYZ019_.-", min_size=65, max_size=90),
    st.builds(lambda head, tail: head + tail, st.sampled_from(["_", "-", ".", " ", "/", "é"]), record_ids),
).filter(lambda s: VALID_RECORD_ID.fullmatch(s) is None)


@settings(max_examples=200, deadline=None)
@given(invalid_record_ids)
def test_invalid_record_ids_are_always_refused_naming_record_id(record_id: str) -> None:
    problems = problems_of(body_of(order(record_id=record_id)))
    assert [(p.index, p.record_id, p.field) for p in problems] == [(0, record_id, "record_id")]


# --- The outcome a run settles


def test_a_settled_outcome_names_its_run_and_keeps_numbers_exact() -> None:
    outcome = settled_outcome("run-1", OrderStatus.ACCEPTED, {"power": 2.5})
    assert outcome == {"power": Decimal("2.5"), "run_id": "run-1"}


def test_an_outcome_is_settled_as_accepted_or_rejected_by_its_own_run() -> None:
    with pytest.raises(ValueError, match="accepted or rejected"):
        settled_outcome("run-1", OrderStatus.PENDING, {})
    with pytest.raises(ValueError, match="names run"):
        settled_outcome("run-1", OrderStatus.ACCEPTED, {"run_id": "run-9"})


# --- A run's tally


def test_a_batchs_tally_counts_each_way_its_orders_ended_as_one_batch() -> None:
    tally = BatchTally.of(["accepted", "rejected", "accepted", "failed", "accepted"])

    assert tally == BatchTally(accepted=3, rejected=1, failed=1, batches=1)
    assert tally.orders == 5
    assert BatchTally.of([]) == BatchTally(batches=1)  # a batch whose orders were all taken elsewhere


def test_tallies_add_up_field_by_field() -> None:
    total = BatchTally(3, 1, 0, 1) + BatchTally(0, 2, 1, 1) + BatchTally()

    assert total == BatchTally(accepted=3, rejected=3, failed=1, batches=2)
    assert total.orders == 7
    assert RunRecord() == RunRecord(0, 0, BatchTally(0, 0, 0, 0))


@pytest.mark.parametrize("status", ["pending", "released", "None", ""])
def test_a_tally_refuses_a_status_that_is_no_way_to_end(status: str) -> None:
    expected = f"ended ['{status}']; expected one of ['accepted', 'failed', 'rejected']"
    with pytest.raises(ValueError, match=re.escape(expected)):
        BatchTally.of(["accepted", status])
