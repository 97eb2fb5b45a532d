"""The delivery pipeline: CodeConnections source (ARN never in code), `make test` + synth, dev
automatically, prod after approval, and failures published to Slack's topic."""

from __future__ import annotations

from typing import Any

from infra.delivery import (
    CONNECTION_PARAMETER,
    FAILURE_NOTICE_ALARM,
    FAILURE_NOTICE_DLQ,
    PIPELINE_NAME,
    SYNTH_COMMANDS,
)
from infra.nag import flatten
from infra.notifications import PIPELINE_FAILED_RULE, topic_name

from energy_auction.deployment import stack_name
from tests.infra.conftest import CUSTOM_CONTEXT, Assembly, Synthesized
from tests.infra.templates import logical_id


def _stages(delivery: Synthesized) -> list[dict[str, Any]]:
    _, pipeline = delivery.one("AWS::CodePipeline::Pipeline")
    assert pipeline["Properties"]["Name"] == PIPELINE_NAME
    return pipeline["Properties"]["Stages"]  # type: ignore[no-any-return]


def test_source_is_github_through_codeconnections_from_ssm(assembly: Assembly) -> None:
    source = _stages(assembly.delivery)[0]
    (action,) = source["Actions"]
    assert action["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    config = action["Configuration"]
    assert (config["FullRepositoryId"], config["BranchName"]) == ("your-org/energy-auction", "main")
    parameter = assembly.delivery.template["Parameters"][config["ConnectionArn"]["Ref"]]
    assert parameter == {"Type": "AWS::SSM::Parameter::Value<String>", "Default": CONNECTION_PARAMETER}


def test_connection_arn_from_context_when_given(customised: Assembly) -> None:
    (action,) = _stages(customised.delivery)[0]["Actions"]
    assert action["Configuration"]["ConnectionArn"] == CUSTOM_CONTEXT["connection_arn"]


def test_synth_step_runs_the_tests_then_synth(assembly: Assembly) -> None:
    (build,) = [s for s in _stages(assembly.delivery) if s["Name"] == "Build"]
    (action,) = build["Actions"]
    project = assembly.delivery.template["Resources"][action["Configuration"]["ProjectName"]["Ref"]]
    buildspec = project["Properties"]["Source"]["BuildSpec"]
    assert SYNTH_COMMANDS == ["make test", "make synth"]
    assert '"make test",\n        "make synth"' in buildspec
    assert project["Properties"]["Environment"]["PrivilegedMode"] is False, "synth needs no Docker"


def test_dev_deploys_automatically_and_prod_only_after_approval(assembly: Assembly) -> None:
    names = [s["Name"] for s in _stages(assembly.delivery)]
    assert names.index("Build") < names.index("UpdatePipeline") < names.index("Dev") < names.index("Prod")
    stages = {s["Name"]: s["Actions"] for s in _stages(assembly.delivery)}
    assert all(a["ActionTypeId"]["Category"] != "Approval" for a in stages["Dev"])
    approval = [a for a in stages["Prod"] if a["ActionTypeId"]["Category"] == "Approval"]
    deploys = [a for a in stages["Prod"] if a["ActionTypeId"]["Provider"] == "CloudFormation"]
    assert len(approval) == 1
    assert deploys
    assert all(a["RunOrder"] > approval[0]["RunOrder"] for a in deploys)
    for stage, name in (("Dev", "dev"), ("Prod", "prod")):
        assert {
            a["Configuration"]["StackName"] for a in stages[stage] if "StackName" in a["Configuration"]
        } == {stack_name(name)}


def _failure_rule(delivery: Synthesized) -> tuple[str, dict[str, Any]]:
    rules = delivery.resources("AWS::Events::Rule").items()
    (found,) = [(lid, r) for lid, r in rules if r["Properties"].get("Name") == PIPELINE_FAILED_RULE]
    return found


def _failure_notice_queue(delivery: Synthesized) -> str:
    _, rule = _failure_rule(delivery)
    (target,) = rule["Properties"]["Targets"]
    return logical_id(target["DeadLetterConfig"]["Arn"])


def test_failed_executions_are_published_to_the_prod_topic(assembly: Assembly) -> None:
    _, rule = _failure_rule(assembly.delivery)
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.codepipeline"]
    assert pattern["detail-type"] == ["CodePipeline Pipeline Execution State Change"]
    assert pattern["detail"] == {"pipeline": [PIPELINE_NAME], "state": ["FAILED"]}
    (target,) = rule["Properties"]["Targets"]
    assert flatten(target["Arn"]).endswith(f":{topic_name('prod')}")
    assert "pipeline_failed" in target["InputTransformer"]["InputTemplate"]


def test_a_failure_notice_is_retried_then_kept_in_a_dead_letter_queue_not_dropped(assembly: Assembly) -> None:
    # The prod topic may not exist yet, or refuse the publish: the rule retries, then keeps it.
    _, rule = _failure_rule(assembly.delivery)
    (target,) = rule["Properties"]["Targets"]
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 2 * 3600, "MaximumRetryAttempts": 10}
    queue = assembly.delivery.template["Resources"][_failure_notice_queue(assembly.delivery)]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["QueueName"] == FAILURE_NOTICE_DLQ
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_only_the_failure_rule_may_send_to_its_dead_letter_queue_and_only_over_tls(
    assembly: Assembly,
) -> None:
    rule_id, _ = _failure_rule(assembly.delivery)
    queue_id = _failure_notice_queue(assembly.delivery)
    (policy,) = [
        p["Properties"]
        for p in assembly.delivery.resources("AWS::SQS::QueuePolicy").values()
        if {"Ref": queue_id} in p["Properties"]["Queues"]
    ]
    statements = policy["PolicyDocument"]["Statement"]
    allows = [{k: v for k, v in s.items() if k != "Sid"} for s in statements if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": [queue_id, "Arn"]},
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}},
        }
    ]
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Action"] == "sqs:*"


def test_an_undelivered_failure_notice_raises_an_alarm(assembly: Assembly) -> None:
    queue_id = _failure_notice_queue(assembly.delivery)
    alarms = [a["Properties"] for a in assembly.delivery.resources("AWS::CloudWatch::Alarm").values()]
    (alarm,) = [a for a in alarms if a["AlarmName"] == FAILURE_NOTICE_ALARM]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    # One message is enough: each is a pipeline failure nobody was told about.
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["Statistic"] == "Maximum"
    assert alarm["TreatMissingData"] == "notBreaching"
    (action,) = alarm["AlarmActions"]
    assert flatten(action).endswith(f":{topic_name('prod')}")


def test_delivery_stack_holds_no_account_or_connection_literal(assembly: Assembly) -> None:
    import re

    body = str(assembly.delivery.template)
    assert not re.search(r"\b\d{12}\b", body), "no account id may be hard-coded"
    assert "connection/" not in body
