"""The notification topic: encrypted with a rotating key, SSL only, the Slack notifier subscribed,
an e-mail subscription when configured; the secrets named as the CLI expects."""

from __future__ import annotations

import json

from infra.nag import flatten
from infra.notifications import PIPELINE_FAILED_RULE, topic_name

from energy_auction.deployment import cursor_secret_name, jwt_secret_name, slack_webhook_secret_name
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


def test_notifier_is_subscribed(stage_stack: Synthesized) -> None:
    notifier_id, _ = functions(stage_stack)["notify"]
    (topic_id,) = stage_stack.resources("AWS::SNS::Topic")
    subscriptions = [s["Properties"] for s in stage_stack.resources("AWS::SNS::Subscription").values()]
    assert subscriptions == [
        {
            "Protocol": "lambda",
            "TopicArn": {"Ref": topic_id},
            "Endpoint": {"Fn::GetAtt": [notifier_id, "Arn"]},
        }
    ]
    (permission,) = [
        p
        for p in stage_stack.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "sns.amazonaws.com"
    ]
    assert permission["Properties"]["SourceArn"] == {"Ref": topic_id}


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
    assert sorted(s["Properties"]["Protocol"] for s in subscriptions) == ["email", "lambda"]
    (email,) = [s for s in subscriptions if s["Properties"]["Protocol"] == "email"]
    assert email["Properties"]["Endpoint"] == CUSTOM_CONTEXT["alert_email"]
    assert [s["Properties"]["Protocol"] for s in dev.resources("AWS::SNS::Subscription").values()] == [
        "lambda"
    ]


def test_schedule_rate_comes_from_context(customised: Assembly) -> None:
    rules = customised.dev.resources("AWS::Events::Rule").values()
    assert [r["Properties"].get("ScheduleExpression") for r in rules] == ["rate(15 minutes)"]
