"""Alarms on everything that can break, each wired to the notification topic; one dashboard."""

from __future__ import annotations

import json
from typing import Any

from infra.functions import HANDLERS

from energy_auction.deployment import SERVICE
from energy_auction.observability import NAMESPACE
from tests.infra.conftest import Synthesized
from tests.infra.templates import functions


def _alarms(stack: Synthesized) -> list[dict[str, Any]]:
    return [a["Properties"] for a in stack.resources("AWS::CloudWatch::Alarm").values()]


def _find(stack: Synthesized, namespace: str, metric: str, dimension: str, value: Any) -> dict[str, Any]:
    found = [
        a
        for a in _alarms(stack)
        if a["Namespace"] == namespace
        and a["MetricName"] == metric
        and {"Name": dimension, "Value": value} in a["Dimensions"]
    ]
    assert len(found) == 1, f"expected one {namespace} {metric} alarm on {value}, found {len(found)}"
    return found[0]


def test_every_alarm_notifies_the_topic(stage_stack: Synthesized) -> None:
    (topic_id,) = stage_stack.resources("AWS::SNS::Topic")
    alarms = _alarms(stage_stack)
    assert len(alarms) == 2 + 2 * len(HANDLERS) + 3 + 2
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": topic_id}], alarm["AlarmName"]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmDescription"]


def test_each_function_alarms_on_errors_and_throttles(stage_stack: Synthesized) -> None:
    for handler, (function_id, _) in functions(stage_stack).items():
        errors = _find(stage_stack, "AWS/Lambda", "Errors", "FunctionName", {"Ref": function_id})
        throttles = _find(stage_stack, "AWS/Lambda", "Throttles", "FunctionName", {"Ref": function_id})
        assert throttles["Threshold"] == 1
        # Refused tokens and rejected orders are Lambda errors by design; the others alarm on the first.
        assert (errors["Threshold"] > 1) == (handler in {"authorizer", "process_order"})


def test_api_alarms_on_5xx_and_p99_latency(stage_stack: Synthesized) -> None:
    (api_id,) = stage_stack.resources("AWS::ApiGateway::RestApi")
    api_name = stage_stack.template["Resources"][api_id]["Properties"]["Name"]
    assert _find(stage_stack, "AWS/ApiGateway", "5XXError", "ApiName", api_name)["Threshold"] == 1
    latency = _find(stage_stack, "AWS/ApiGateway", "Latency", "ApiName", api_name)
    assert latency["ExtendedStatistic"] == "p99"
    assert latency["Threshold"] == 2000


def test_state_machine_alarms_on_failed_and_timed_out_executions(stage_stack: Synthesized) -> None:
    (machine_id,) = stage_stack.resources("AWS::StepFunctions::StateMachine")
    for metric in ("ExecutionsFailed", "ExecutionsTimedOut"):
        assert (
            _find(stage_stack, "AWS/States", metric, "StateMachineArn", {"Ref": machine_id})["Threshold"] == 1
        )


def test_schedule_alarms_when_it_cannot_start_a_run(stage_stack: Synthesized) -> None:
    (rule_id,) = [
        lid
        for lid, r in stage_stack.resources("AWS::Events::Rule").items()
        if "ScheduleExpression" in r["Properties"]
    ]
    _find(stage_stack, "AWS/Events", "FailedInvocations", "RuleName", {"Ref": rule_id})


def test_notifier_dead_letters_alarm_on_the_first_message_and_show_on_the_dashboard(
    stage_stack: Synthesized,
) -> None:
    (queue_id,) = [
        lid
        for lid, q in stage_stack.resources("AWS::SQS::Queue").items()
        if q["Properties"]["QueueName"].endswith("-notifier-dlq")
    ]
    queue_name = {"Fn::GetAtt": [queue_id, "QueueName"]}
    alarm = _find(stage_stack, "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue_name)
    # More than 0 messages: one undelivered notice is enough.
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["Statistic"] == "Maximum"
    # Its notice goes through the topic to Slack, which may be what is down: the dashboard shows it.
    _, dashboard = stage_stack.one("AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    assert "ApproximateNumberOfMessagesVisible" in body
    assert queue_id in body


def test_dashboard_shows_every_function_and_the_alarms(stage_stack: Synthesized) -> None:
    _, dashboard = stage_stack.one("AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for function_id, _ in functions(stage_stack).values():
        assert function_id in body
    assert '\\"type\\":\\"alarm\\"' in body


def test_notices_the_notifier_could_not_deliver_alarm_at_once(stage_stack: Synthesized) -> None:
    # A notice the notifier fails on is a batch item failure, not a Lambda error: its own metric
    # alarms long before the notice has failed often enough to reach the dead-letter queue.
    alarm = _find(stage_stack, NAMESPACE, "NotificationsFailed", "service", SERVICE)
    assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
    _, dashboard = stage_stack.one("AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in ("NoticesDigested", "SlackMessagesPosted", "ApproximateAgeOfOldestMessage"):
        assert metric in body
