"""From a topic message to a notice: the state machine's messages, alarms, anything else, and limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_auction import codec
from energy_auction.adapters.channels import LogNotifier
from energy_auction.notifications import (
    LABEL_LIMIT,
    MAX_FIELDS,
    TEXT_LIMIT,
    TITLE_LIMIT,
    VALUE_LIMIT,
    Notice,
    NoticeKind,
    notice_from_message,
)

from ..logs import captured_logs
from ..sns import (
    alarm_message,
    fetch_failed_message,
    lambda_error,
    not_ready_message,
    order_result,
    processing_failed_message,
    rejected_message,
    state_json,
)

WEBHOOK = "https://hooks.slack.com/services/T0SECRET/B0SECRET/xoxSecretWebhookToken"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0cmFkZXItMSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def fields(notice: Notice) -> dict[str, str]:
    return dict(notice.fields)


def assert_within_limits(notice: Notice) -> None:
    assert notice.kind in set(NoticeKind)
    assert 0 < len(notice.title) <= TITLE_LIMIT
    assert 0 < len(notice.text) <= TEXT_LIMIT
    assert "\n" not in notice.title
    assert "\n" not in notice.text
    assert len(notice.fields) <= MAX_FIELDS
    for label, value in notice.fields:
        assert 0 < len(label) <= LABEL_LIMIT
        assert 0 < len(value) <= VALUE_LIMIT
    assert notice.severity in {"info", "warning", "error"}
    assert notice.occurred_at is None or 0 < len(notice.occurred_at) <= 64
    json.loads(codec.dumps(notice.as_dict()))
    json.dumps(notice.as_dict(), ensure_ascii=False).encode("utf-8")  # what Slack and log lines need


# --- The state machine's messages -------------------------------------------------------------


def test_a_rejected_order_names_the_order_its_parameters_the_run_and_the_reason() -> None:
    # Given the message NotifyOrderRejected publishes
    message = rejected_message("unique_id_1", run_id="run-42")

    # When it is read
    notice = notice_from_message(message, "order_rejected", "Energy Auction: order rejected")

    # Then it is a warning about that order
    assert notice.kind is NoticeKind.ORDER_REJECTED
    assert notice.severity == "warning"
    assert notice.title == "Order unique_id_1 of trader-1 rejected"
    assert fields(notice) == {
        "record_id": "unique_id_1",
        "trader": "trader-1",
        "parameter_1": "abc",
        "parameter_2": "2.1",
        "auction_date": "2027-01-15",
        "run_id": "run-42",
        "reason": "price above the clearing price",
    }
    assert "unique_id_1" in notice.text
    assert "price above the clearing price" in notice.text
    assert notice.occurred_at == "2027-01-15T08:04:59Z"
    assert_within_limits(notice)


def test_a_rejected_order_without_a_reason_shows_the_lambda_error_message() -> None:
    # Given a rejection whose result has no reason
    message = rejected_message("unique_id_1", reason=None)

    # When it is read
    notice = notice_from_message(message, "order_rejected", None)

    # Then the reason is the errorMessage from the Cause
    assert fields(notice)["reason"] == "Order status is rejected! record_id=unique_id_1"


def test_parameter_2_keeps_its_exact_decimal_digits() -> None:
    # Given a parameter_2 a float would round
    message = '{"result":{"record_id":"r","parameter_2":0.1000000000000000055511151231257827},"run_id":"x"}'

    # When it is read
    notice = notice_from_message(message, "order_rejected", None)

    # Then the digits are the message's own
    assert fields(notice)["parameter_2"] == "0.1000000000000000055511151231257827"


def test_an_order_whose_processing_failed_says_it_stays_pending_and_why() -> None:
    # Given the message NotifyProcessingFailed publishes after a ClaimLost error
    message = processing_failed_message("unique_id_2", run_id="run-7")

    # When it is read
    notice = notice_from_message(
        message, "order_processing_failed", "Energy Auction: order processing failed"
    )

    # Then it is an error naming the order, the run and the Lambda error
    assert notice.kind is NoticeKind.ORDER_PROCESSING_FAILED
    assert notice.severity == "error"
    assert notice.title == "Processing of order unique_id_2 failed; it stays pending for the next run"
    assert fields(notice) == {
        "record_id": "unique_id_2",
        "trader": "trader-1",
        "parameter_1": "abc",
        "parameter_2": "2.1",
        "run_id": "run-7",
        "error": "ClaimLost",
        "error_message": "run run-7 does not hold order unique_id_2",
    }
    assert "ClaimLost: run run-7 does not hold order unique_id_2" in notice.text


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"Error": "States.Timeout"}, {"error": "States.Timeout"}),
        (
            {"Error": "States.TaskFailed", "Cause": "The Lambda function\nwas throttled"},
            {"error": "States.TaskFailed", "error_message": "The Lambda function was throttled"},
        ),
        ({"Error": "Lambda.Unknown", "Cause": ""}, {"error": "Lambda.Unknown"}),
    ],
    ids=["no cause", "plain text cause", "empty cause"],
)
def test_a_processing_failure_without_a_json_cause_still_names_the_error(
    error: dict[str, str], expected: dict[str, str]
) -> None:
    # Given a Catch whose Cause is not a Lambda error document
    message = processing_failed_message("unique_id_2", error=error)

    # When it is read
    notice = notice_from_message(message, "order_processing_failed", None)

    # Then the error fields are what there is, and nothing is invented
    shown = {k: v for k, v in fields(notice).items() if k.startswith("error")}
    assert shown == expected
    assert notice.kind is NoticeKind.ORDER_PROCESSING_FAILED


def test_results_not_ready_says_after_how_many_attempts_and_which_run() -> None:
    # Given the message NotifyResultsNotReady publishes
    message = not_ready_message("run-3", attempt=10)

    # When it is read
    notice = notice_from_message(message, "results_not_ready", "Energy Auction: auction results not ready")

    # Then
    assert notice.kind is NoticeKind.RESULTS_NOT_READY
    assert notice.severity == "error"
    assert notice.title == "Auction results not ready after 10 attempts (run run-3)"
    assert fields(notice) == {"run_id": "run-3", "attempts": "10"}


def test_fetch_failed_names_the_error_and_the_attempt_that_failed() -> None:
    # Given FetchResults failed on its third call (two calls had answered "not ready")
    message = fetch_failed_message("run-4", attempt=2, error=lambda_error("KeyError", "'items'"))

    # When it is read
    notice = notice_from_message(message, "fetch_failed", "Energy Auction: fetching auction results failed")

    # Then
    assert notice.kind is NoticeKind.FETCH_FAILED
    assert notice.severity == "error"
    assert notice.title == "Fetching auction results failed (run run-4)"
    assert fields(notice) == {
        "run_id": "run-4",
        "attempt": "3",
        "error": "KeyError",
        "error_message": "'items'",
    }
    assert "KeyError: 'items'" in notice.text


# --- Alarms and everything else ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "severity"), [("ALARM", "error"), ("INSUFFICIENT_DATA", "warning"), ("OK", "info")]
)
def test_a_cloudwatch_alarm_is_recognised_by_its_shape(state: str, severity: str) -> None:
    # Given a CloudWatch alarm's message (no kind attribute)
    message = alarm_message("energy-auction-notify-errors", state=state)

    # When it is read
    notice = notice_from_message(message, None, f'{state}: "energy-auction-notify-errors" in EU (Ireland)')

    # Then it is an alarm notice whose severity follows the new state
    assert notice.kind is NoticeKind.ALARM
    assert notice.severity == severity
    assert notice.title == f"{state}: energy-auction-notify-errors"
    assert fields(notice)["metric"] == "AWS/Lambda/Errors"
    assert fields(notice)["reason"].startswith("Threshold Crossed")
    assert notice.occurred_at == "2027-01-15T08:01:00.000+0000"


def test_plain_text_becomes_a_generic_notice_with_the_subject_as_title() -> None:
    # Given a message that is not JSON
    message = "Deployment finished\nwith   warnings"

    # When it is read
    notice = notice_from_message(message, None, "Pipeline news")

    # Then
    assert notice.kind is NoticeKind.OTHER
    assert notice.title == "Pipeline news"
    assert notice.text == "Deployment finished with warnings"
    assert notice.fields == ()


def test_an_eventbridge_event_without_subject_is_titled_by_its_detail_type() -> None:
    # Given a CodePipeline failure event forwarded to the topic
    event = {
        "version": "0",
        "detail-type": "CodePipeline Pipeline Execution State Change",
        "source": "aws.codepipeline",
        "detail": {"pipeline": "energy-auction", "state": "FAILED"},
    }

    # When it is read
    notice = notice_from_message(json.dumps(event), None, None)

    # Then its fields are the event's keys
    assert notice.kind is NoticeKind.OTHER
    assert notice.title == "CodePipeline Pipeline Execution State Change"
    assert fields(notice)["source"] == "aws.codepipeline"
    assert json.loads(fields(notice)["detail"]) == {"pipeline": "energy-auction", "state": "FAILED"}


def test_a_known_kind_with_a_message_of_another_shape_is_not_lost() -> None:
    # Given an order_rejected message without its result
    message = state_json({"run_id": "run-1", "surprise": True})

    # When it is read
    notice = notice_from_message(message, "order_rejected", "Energy Auction: order rejected")

    # Then it is delivered generically, saying which kind it claimed to be
    assert notice.kind is NoticeKind.OTHER
    assert notice.title == "Energy Auction: order rejected"
    assert fields(notice) == {"kind": "order_rejected", "run_id": "run-1", "surprise": "true"}
    assert notice.severity == "warning"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("", None),
        ("null", "order_rejected"),
        ("[1, 2]", "results_not_ready"),
        ('"a string"', "fetch_failed"),
        ('{"results": true, "run_id": "x"}', "results_not_ready"),
        ('{"result": "not an object", "run_id": "x"}', "order_processing_failed"),
        ('{"AlarmName": "a"}', None),
        ("{" * 5000, None),
        ("[" * 50_000 + "]" * 50_000, "order_rejected"),
    ],
)
def test_malformed_messages_give_a_generic_notice(message: str, kind: str | None) -> None:
    # When a message of an unexpected shape is read
    notice = notice_from_message(message, kind, None)

    # Then a notice comes out all the same
    assert_within_limits(notice)
    assert notice.kind is NoticeKind.OTHER


@pytest.mark.parametrize("attempt", ["1e999999999", "true", '"2"', "-1", "null"])
def test_fetch_failed_with_an_odd_attempt_count_leaves_the_attempt_out(attempt: str) -> None:
    # Given a fetch_failed message whose attempt is not a count
    message = f'{{"run_id": "run-1", "attempt": {attempt}, "error": {{"Error": "States.Timeout"}}}}'

    # When it is read
    notice = notice_from_message(message, "fetch_failed", None)

    # Then the notice is still about the failed fetch, without an attempt number
    assert notice.kind is NoticeKind.FETCH_FAILED
    assert fields(notice) == {"run_id": "run-1", "error": "States.Timeout"}


# --- Limits and secrets -----------------------------------------------------------------------


def test_long_values_are_cut_to_what_slack_accepts() -> None:
    # Given a rejection with a very long record_id and reason
    long_id = "r" * 500
    message = rejected_message(long_id, reason="x" * 10_000)

    # When it is read
    notice = notice_from_message(message, "order_rejected", None)

    # Then title, text and fields are cut with an ellipsis
    assert len(notice.title) == TITLE_LIMIT
    assert notice.title.endswith("…")
    assert len(notice.text) == TEXT_LIMIT
    assert len(fields(notice)["reason"]) == VALUE_LIMIT
    assert fields(notice)["reason"].endswith("…")


def test_at_most_ten_fields_are_kept_and_the_rest_are_named() -> None:
    # Given a message with 15 keys
    message = json.dumps({f"key_{i:02}": i for i in range(15)})

    # When it is read
    notice = notice_from_message(message, None, "Many keys")

    # Then nine are shown, and the last field names the others
    assert len(notice.fields) == MAX_FIELDS
    assert notice.fields[-1] == ("more", ", ".join(f"key_{i:02}" for i in range(9, 15)))


def test_credentials_in_a_message_never_reach_the_notice() -> None:
    # Given messages that quote a webhook URL, a bearer token and credential-named keys
    rejection = rejected_message("r1", reason=f"posting to {WEBHOOK} failed with Bearer {JWT}")
    unknown = json.dumps(
        {"token": "t0ps3cret", "detail": {"clientSecret": "s3cr3t", "items": [{"password": "hunter2"}]}}
    )

    # When they are read
    notices = [
        notice_from_message(rejection, "order_rejected", None),
        notice_from_message(unknown, None, f"webhook {WEBHOOK}"),
    ]

    # Then none of the secrets is in any notice
    shown = codec.dumps([n.as_dict() for n in notices])
    for secret in ("xoxSecretWebhookToken", JWT, "t0ps3cret", "s3cr3t", "hunter2"):
        assert secret not in shown
    assert "<redacted>" in shown


def test_as_dict_is_json_with_the_fields_as_an_object() -> None:
    # Given a notice
    notice = notice_from_message(not_ready_message("run-9", 3), "results_not_ready", None)

    # When it is written as JSON (what the local stack's JSONL file holds)
    document = json.loads(codec.dumps(notice.as_dict()))

    # Then
    assert document == {
        "kind": "results_not_ready",
        "severity": "error",
        "title": "Auction results not ready after 3 attempts (run run-9)",
        "text": notice.text,
        "fields": {"run_id": "run-9", "attempts": "3"},
        "occurred_at": None,
        "key": None,
    }


@pytest.mark.parametrize(
    ("message", "kind", "subject"),
    [
        (rejected_message("unique_id_1", reason="bad \udc00 byte"), "order_rejected", None),
        (r'{"AlarmName": "a\ud800", "NewStateValue": "ALARM", "NewStateReason": "x \udfff"}', None, None),
        (r'{"\udc00key": "\udbff value", "detail-type": "E\udc80vent"}', None, None),
        ("plain text \udc00", None, "subject \ud800"),
    ],
    ids=["order_rejected", "alarm", "generic JSON", "plain text"],
)
def test_lone_surrogates_become_replacement_characters_so_every_channel_can_encode_the_notice(
    message: str, kind: str | None, subject: str | None
) -> None:
    # Given a message with lone surrogates: legal JSON escapes that no UTF-8 channel can encode

    # When it is read and logged
    notice = notice_from_message(message, kind, subject)
    with captured_logs() as lines:
        LogNotifier().notify(notice)

    # Then each one shows as U+FFFD, and the notice and its log line encode as UTF-8
    shown = json.dumps(notice.as_dict(), ensure_ascii=False)
    assert "\ufffd" in shown
    shown.encode("utf-8")
    [line] = lines
    line.encode("utf-8")
    assert_within_limits(notice)


def test_a_surrogate_pair_written_as_two_halves_is_kept_as_its_character() -> None:
    notice = Notice(NoticeKind.OTHER, "t", "sun \ud83c\udf1e", fields=(("k", "\ud83c\udf1e"),))
    assert notice.text == "sun \U0001f31e"
    assert notice.fields == (("k", "\U0001f31e"),)


def test_a_notice_refuses_an_unknown_severity() -> None:
    with pytest.raises(ValueError, match="severity"):
        Notice(NoticeKind.OTHER, "t", "x", severity="critical")  # type: ignore[arg-type]


# --- Never an exception, whatever arrives -----------------------------------------------------

# st.text() never draws surrogates; any_text mixes them in, as JSON's "\\udXXX" escapes can.
any_text = st.lists(st.characters() | st.integers(0xD800, 0xDFFF).map(chr)).map("".join)


kinds = st.one_of(st.none(), st.sampled_from([k.value for k in NoticeKind]), st.text(max_size=20))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(message=any_text, kind=kinds, subject=st.none() | any_text)
def test_any_text_gives_a_notice_within_limits(message: str, kind: str | None, subject: str | None) -> None:
    assert_within_limits(notice_from_message(message, kind, subject))


@given(
    document=st.fixed_dictionaries(
        {},
        optional={
            "result": json_values | st.builds(order_result, st.text(), reason=json_values),
            "run_id": json_values,
            "attempt": json_values,
            "results": json_values,
            "error": json_values
            | st.fixed_dictionaries({"Error": json_values, "Cause": json_values | st.text()}),
            "AlarmName": json_values,
            "NewStateValue": json_values,
            "NewStateReason": json_values,
            "Trigger": json_values,
        },
    ),
    kind=kinds,
)
def test_any_json_of_the_known_shapes_gives_a_notice_within_limits(
    document: dict[str, Any], kind: str | None
) -> None:
    assert_within_limits(notice_from_message(json.dumps(document), kind, None))


# --- The log notifier -------------------------------------------------------------------------


def test_the_log_notifier_writes_the_notice_as_one_structured_line_at_its_severity() -> None:
    # Given an error notice
    notice = notice_from_message(not_ready_message("run-5", 10), "results_not_ready", None)

    # When it is logged
    with captured_logs() as lines:
        LogNotifier().notify(notice)

    # Then one JSON line holds the notice
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["level"] == "ERROR"
    assert line["message"] == notice.title
    assert line["notice"] == notice.as_dict()


def test_a_delivery_pipeline_failure_is_its_own_kind() -> None:
    # Given the message the delivery pipeline's EventBridge rule publishes (no message attributes)
    message = json.dumps(
        {
            "kind": "pipeline_failed",
            "title": "Delivery pipeline energy-auction-delivery failed",
            "pipeline": "energy-auction-delivery",
            "execution_id": "0c1d2e3f",
            "state": "FAILED",
            "time": "2026-11-21T23:00:00Z",
            "region": "eu-west-1",
        }
    )

    notice = notice_from_message(message, None, None)

    assert notice.kind is NoticeKind.PIPELINE_FAILED
    assert notice.severity == "error"
    assert "energy-auction-delivery" in notice.title
    assert notice.as_dict()["fields"]["execution_id"] == "0c1d2e3f"
    # and it happened when the event says, not when it was published
    assert notice.occurred_at == "2026-11-21T23:00:00Z"
