"""SNS records and the SQS events the notifier receives them in, and the messages the topic carries.

The state machine's messages are ``States.JsonToString($)`` of the state at its ``sns:publish``
states (see workflow/pipeline.asl.json): compact JSON, with a Catch's ``{"Error", "Cause"}`` where
``Cause`` is the Lambda error serialised as a JSON string.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.builders import TRADER

TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:energy-auction-notifications"
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:energy-auction-notices"
TIMESTAMP = "2027-01-15T08:05:00.123Z"


def state_json(state: dict[str, Any]) -> str:
    """What ``States.JsonToString`` makes of a state: compact JSON."""
    return json.dumps(state, separators=(",", ":"))


def lambda_error(error_type: str, message: str) -> dict[str, str]:
    """A Catch's ``$.error`` for a Lambda function that raised."""
    cause = {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": str(uuid.uuid4()),
        "stackTrace": ['  File "/var/task/energy_auction/pipeline.py", line 120, in process_order\n'],
    }
    return {"Error": error_type, "Cause": json.dumps(cause)}


def order_result(record_id: str = "unique_id_1", **changes: Any) -> dict[str, Any]:
    result = {
        "record_id": record_id,
        "trader": TRADER,
        "status": "rejected",
        "power": 0,
        "parameter_1": "abc",
        "parameter_2": 2.1,
        "reason": "price above the clearing price",
        "auction_date": "2027-01-15",
        "decided_at": "2027-01-15T08:04:59Z",
    }
    return {**result, **changes}


def rejected_message(record_id: str = "unique_id_1", run_id: str = "run-1", **changes: Any) -> str:
    return state_json(
        {
            "result": order_result(record_id, **changes),
            "run_id": run_id,
            "error": lambda_error("OrderRejected", f"Order status is rejected! record_id={record_id}"),
        }
    )


def processing_failed_message(
    record_id: str = "unique_id_2", run_id: str = "run-1", error: dict[str, str] | None = None
) -> str:
    return state_json(
        {
            "result": order_result(record_id, status="accepted", reason=None, power=12.5),
            "run_id": run_id,
            "error": error or lambda_error("ClaimLost", f"run {run_id} does not hold order {record_id}"),
        }
    )


def not_ready_message(run_id: str = "run-1", attempt: int = 10) -> str:
    return state_json({"results": False, "run_id": run_id, "attempt": attempt})


def fetch_failed_message(run_id: str = "run-1", attempt: int = 2, error: dict[str, str] | None = None) -> str:
    return state_json(
        {
            "run_id": run_id,
            "attempt": attempt,
            "error": error or lambda_error("TransientFailure", "ThrottlingException"),
        }
    )


def alarm_message(name: str = "energy-auction-notify-errors", state: str = "ALARM") -> str:
    """A CloudWatch alarm state change, as CloudWatch publishes it to SNS."""
    return json.dumps(
        {
            "AlarmName": name,
            "AlarmDescription": "The notifier Lambda reported errors",
            "AWSAccountId": "123456789012",
            "AlarmConfigurationUpdatedTimestamp": "2027-01-10T10:00:00.000+0000",
            "NewStateValue": state,
            "NewStateReason": "Threshold Crossed: 1 datapoint [2.0 (15/01/27 08:00:00)] was greater than "
            "or equal to the threshold (1.0).",
            "StateChangeTime": "2027-01-15T08:01:00.000+0000",
            "Region": "EU (Ireland)",
            "AlarmArn": f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{name}",
            "OldStateValue": "OK" if state != "OK" else "ALARM",
            "OKActions": [],
            "AlarmActions": [TOPIC_ARN],
            "InsufficientDataActions": [],
            "Trigger": {
                "MetricName": "Errors",
                "Namespace": "AWS/Lambda",
                "StatisticType": "Statistic",
                "Statistic": "SUM",
                "Unit": None,
                "Dimensions": [{"value": "energy-auction-notify", "name": "FunctionName"}],
                "Period": 60,
                "EvaluationPeriods": 1,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "Threshold": 1.0,
                "TreatMissingData": "notBreaching",
            },
        }
    )


def sns_record(message: str, kind: str | None = None, subject: str | None = None) -> dict[str, Any]:
    message_id = str(uuid.uuid4())
    attributes = {} if kind is None else {"kind": {"Type": "String", "Value": kind}}
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": f"{TOPIC_ARN}:{uuid.uuid4()}",
        "Sns": {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": TOPIC_ARN,
            "Subject": subject,
            "Message": message,
            "Timestamp": TIMESTAMP,
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
            "UnsubscribeUrl": f"https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC_ARN}",
            "MessageAttributes": attributes,
        },
    }


def sns_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def sqs_record(sns: dict[str, Any]) -> dict[str, Any]:
    """What the notice queue holds for one topic message (no raw message delivery): the SNS
    envelope as the SQS message body, in the record the event source mapping gives the notifier.
    ``sns`` is an :func:`sns_record`."""
    envelope = {
        (
            "SigningCertURL"
            if name == "SigningCertUrl"
            else "UnsubscribeURL"
            if name == "UnsubscribeUrl"
            else name
        ): value
        for name, value in sns["Sns"].items()
        if not (name == "Subject" and value is None) and not (name == "MessageAttributes" and not value)
    }
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": f"AQEB{uuid.uuid4().hex}",
        "body": json.dumps(envelope),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1800000300123",
            "SenderId": "AIDAIT2UOQQY3AUEKVGXU",
            "ApproximateFirstReceiveTimestamp": "1800000300125",
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "eu-west-1",
    }


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    """The notifier's event for a batch of the queue's messages (each an :func:`sqs_record`)."""
    return {"Records": list(records)}


def notices_event(*messages: tuple[str, str | None, str | None]) -> dict[str, Any]:
    """The notifier's event for topic messages given as ``(message, kind, subject)``."""
    return sqs_event(*(sqs_record(sns_record(*message)) for message in messages))


def run_summary_message(run_id: str = "run-1", **changes: Any) -> str:
    """The run summary the state machine publishes at the end of a run that settled anything."""
    summary = {
        "run_id": run_id,
        "staged": 1200,
        "orders": 1000,
        "accepted": 700,
        "rejected": 290,
        "failed": 10,
        "left": 200,
        "started_at": "2027-01-15T08:00:00Z",
        "duration_seconds": 42.34,
    }
    return state_json({**summary, **changes})
