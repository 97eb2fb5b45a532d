"""The notification topic: encrypted with a rotating key, SSL only, the notice queue subscribed (SNS
envelopes, a dead-letter queue) and the notifier reading it in batches, an e-mail subscription when
configured; the secrets named as the CLI expects."""

from __future__ import annotations

import json
from typing import Any

from infra.config import NOTIFIER_TIMEOUT_SECONDS
from infra.nag import flatten
from infra.notifications import (
    NOTICE_BATCHING_WINDOW,
    NOTICE_MAX_RECEIVES,
    NOTIFIER_MAX_CONCURRENCY,
    PIPELINE_FAILED_RULE,
    topic_name,
)

from energy_auction.deployment import cursor_secret_name, jwt_secret_name, slack_webhook_secret_name
from energy_auction.digest import BATCH_SIZE
from tests.infra.conftest import CUSTOM_CONTEXT, Assembly, Synthesized
from tests.infra.templates import functions, logical_id


def test_topic_is_encrypted_with_a_rotating_customer_key(stage_stack: Synthesized) -> None:
    _, topic = stage_stack.one("AWS::SNS::Topic")
    key = stage_stack.template["Resources"][logical_id(topic["Properties"]["KmsMasterKeyId"])]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    services = {
        s["Principal"]["Service"]
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if "Service" in s.get("Principal", {})
    }
    assert services == {"cloudwatch.amazonaws.com", "events.amazonaws.com"}, "alarms and EventBridge publish"


def test_key_serves_only_this_accounts_alarms(stage_stack: Synthesized) -> None:
    _, topic = stage_stack.one("AWS::SNS::Topic")
    key = stage_stack.template["Resources"][logical_id(topic["Properties"]["KmsMasterKeyId"])]
    by_service = {
        s["Principal"]["Service"]: s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if "Service" in s.get("Principal", {})
    }
    alarms = by_service["cloudwatch.amazonaws.com"]["Condition"]
    assert alarms["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert flatten(alarms["ArnLike"]["aws:SourceArn"]).endswith(":<AWS::AccountId>:alarm:*")
    # EventBridge-to-encrypted-topic delivery does not support aws:SourceAccount/aws:SourceArn in
    # the key policy (SNS developer guide): such a condition would drop the delivery failure notices.
    # The topic policy scopes EventBridge to the one rule instead.
    assert "aws:Source" not in json.dumps(by_service["events.amazonaws.com"].get("Condition", {}))


def test_topic_refuses_requests_without_ssl(stage_stack: Synthesized) -> None:
    (topic_id,) = stage_stack.resources("AWS::SNS::Topic")
    _, policy = stage_stack.one("AWS::SNS::TopicPolicy")
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )


def test_only_the_delivery_failure_rule_and_alarms_may_publish_as_services(stage_stack: Synthesized) -> None:
    _, policy = stage_stack.one("AWS::SNS::TopicPolicy")
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    by_service = {s["Principal"]["Service"]: s for s in allows}
    assert set(by_service) == {"cloudwatch.amazonaws.com", "events.amazonaws.com"}
    source = by_service["events.amazonaws.com"]["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert flatten(source).endswith(f":rule/{PIPELINE_FAILED_RULE}")
    alarms = by_service["cloudwatch.amazonaws.com"]["Condition"]["ArnLike"]["aws:SourceArn"]
    assert flatten(alarms).endswith(":alarm:*")


def notice_queue(stack: Synthesized) -> tuple[str, dict[str, Any]]:
    """The queue subscribed to the topic (the other queue is its dead-letter queue)."""
    (found,) = [
        (lid, q)
        for lid, q in stack.resources("AWS::SQS::Queue").items()
        if "RedrivePolicy" in q["Properties"]
    ]
    return found


def test_the_topic_feeds_the_notice_queue_with_sns_envelopes_not_raw_messages(
    stage_stack: Synthesized,
) -> None:
    # The notifier reads the subject, the kind attribute, the message id and the time from the
    # envelope: raw message delivery would drop them.
    queue_id, _ = notice_queue(stage_stack)
    (topic_id,) = stage_stack.resources("AWS::SNS::Topic")
    (subscription,) = [s["Properties"] for s in stage_stack.resources("AWS::SNS::Subscription").values()]
    assert subscription == {
        "Protocol": "sqs",
        "TopicArn": {"Ref": topic_id},
        "Endpoint": {"Fn::GetAtt": [queue_id, "Arn"]},
        "RawMessageDelivery": False,
    }
    # No SNS to Lambda path is left: SNS may not invoke the notifier.
    assert not [
        p
        for p in stage_stack.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "sns.amazonaws.com"
    ]


def test_only_the_topic_may_send_to_the_queue_and_only_over_tls(stage_stack: Synthesized) -> None:
    queue_id, _ = notice_queue(stage_stack)
    (topic_id,) = stage_stack.resources("AWS::SNS::Topic")
    (policy,) = [
        p["Properties"]
        for p in stage_stack.resources("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    statements = policy["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "sns.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": topic_id}}}


def test_the_notice_queue_is_encrypted_and_hands_failing_notices_to_its_dead_letter_queue(
    stage_stack: Synthesized,
) -> None:
    _, queue = notice_queue(stage_stack)
    props = queue["Properties"]
    assert props["SqsManagedSseEnabled"] is True
    assert props["VisibilityTimeout"] >= 6 * NOTIFIER_TIMEOUT_SECONDS, "AWS: six times the function's timeout"
    redrive = props["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == NOTICE_MAX_RECEIVES >= 5
    dead_letters = stage_stack.template["Resources"][logical_id(redrive["deadLetterTargetArn"])]["Properties"]
    assert dead_letters["QueueName"].endswith("-notifier-dlq")
    assert dead_letters["SqsManagedSseEnabled"] is True
    # A message keeps its first enqueue time in the dead-letter queue: that one must keep it longer.
    assert dead_letters["MessageRetentionPeriod"] == 14 * 24 * 3600 > props["MessageRetentionPeriod"]


def test_the_notifier_takes_the_queue_in_batches_over_a_window_with_bounded_concurrency(
    stage_stack: Synthesized,
) -> None:
    notifier_id, notifier = functions(stage_stack)["notify"]
    queue_id, _ = notice_queue(stage_stack)
    (mapping,) = [m["Properties"] for m in stage_stack.resources("AWS::Lambda::EventSourceMapping").values()]
    assert mapping["FunctionName"] == {"Ref": notifier_id}
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert mapping["BatchSize"] == BATCH_SIZE
    assert 1 <= mapping["MaximumBatchingWindowInSeconds"] == NOTICE_BATCHING_WINDOW.to_seconds() <= 10
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": NOTIFIER_MAX_CONCURRENCY}
    assert NOTIFIER_MAX_CONCURRENCY == 2, (
        "the least the mapping allows: Slack's rate, not throughput, is the limit"
    )
    # Reserved concurrency below the mapping's would throttle batches into the dead-letter queue.
    assert "ReservedConcurrentExecutions" not in notifier["Properties"]
    # Nothing of the SNS-invoked notifier is left: no asynchronous dead-letter queue or retries.
    assert "DeadLetterConfig" not in notifier["Properties"]
    assert not [
        c
        for c in stage_stack.resources("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": notifier_id}
    ]


def test_topic_name_is_what_the_delivery_pipeline_addresses(stage_stack: Synthesized) -> None:
    _, topic = stage_stack.one("AWS::SNS::Topic")
    stage = stage_stack.name.removeprefix("EnergyAuction-")
    assert topic["Properties"]["TopicName"] == topic_name(stage)


def test_secrets_jwt_and_cursor_generated_and_slack_blank_under_the_cli_names(
    stage_stack: Synthesized,
) -> None:
    stage = stage_stack.name.removeprefix("EnergyAuction-")
    secrets = {
        s["Properties"]["Name"]: s["Properties"]
        for s in stage_stack.resources("AWS::SecretsManager::Secret").values()
    }
    generated_names = (jwt_secret_name(stage), cursor_secret_name(stage))
    assert set(secrets) == {*generated_names, slack_webhook_secret_name(stage)}
    for generated_name in generated_names:
        generated = secrets[generated_name]["GenerateSecretString"]
        assert generated["PasswordLength"] >= 64
        assert "SecretString" not in secrets[generated_name]
    assert secrets[slack_webhook_secret_name(stage)]["SecretString"].strip() == "", "the operator fills it"


def test_email_subscription_only_when_configured(dev: Synthesized, customised: Assembly) -> None:
    subscriptions = list(customised.dev.resources("AWS::SNS::Subscription").values())
    assert sorted(s["Properties"]["Protocol"] for s in subscriptions) == ["email", "sqs"]
    (email,) = [s for s in subscriptions if s["Properties"]["Protocol"] == "email"]
    assert email["Properties"]["Endpoint"] == CUSTOM_CONTEXT["alert_email"]
    assert [s["Properties"]["Protocol"] for s in dev.resources("AWS::SNS::Subscription").values()] == ["sqs"]


def test_schedule_rate_comes_from_context(customised: Assembly) -> None:
    rules = customised.dev.resources("AWS::Events::Rule").values()
    assert [r["Properties"].get("ScheduleExpression") for r in rules] == ["rate(15 minutes)"]
