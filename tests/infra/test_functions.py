"""Every Lambda: python3.13 on arm64, sized, traced, logged with retention, its own least-privilege
role, and exactly the settings its handler reads."""

from __future__ import annotations

from typing import Any

import pytest
from infra.config import StageConfig
from infra.functions import HANDLERS

from energy_auction.settings import PREFIX, Settings
from tests.infra.conftest import Synthesized
from tests.infra.templates import actions, functions, logical_id, resources_for, statements, text

BASE_ACTIONS = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
NOTICE_QUEUE_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
}
"""What the notifier's event source mapping polls its queue with (CDK's SqsEventSource grants it)."""
# What each function may do beyond logging and tracing: nothing else.
EXPECTED_ACTIONS = {
    "api": {
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    },
    "authorizer": {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"},
    "fetch_results": {
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "sns:Publish",
        "kms:GenerateDataKey",
        "kms:Decrypt",
    },
    "process_order": {"dynamodb:GetItem", "dynamodb:UpdateItem", "s3:PutObject"},
    "notify": {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        *NOTICE_QUEUE_ACTIONS,
        "dynamodb:UpdateItem",
    },
}
EXPECTED_SETTINGS = {
    "api": {"backend", "orders_table", "cursor_secret_id"},
    "authorizer": {"backend", "jwt_secret_id"},
    "fetch_results": {
        "backend",
        "orders_table",
        "work_bucket",
        "work_prefix",
        "claim_lease_seconds",
        "pipeline_batch_size",
        "pipeline_max_orders",
        "market_ready_probability",
        "market_accept_probability",
        "notification_topic_arn",
        "notice_redelivery_seconds",
    },
    "process_order": {"backend", "orders_table", "results_bucket", "notice_redelivery_seconds"},
    "notify": {"backend", "slack_webhook_secret_id", "orders_table", "notice_delivery_lease_seconds"},
}
POWERTOOLS = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}


def test_every_handler_is_deployed_once(stage_stack: Synthesized) -> None:
    assert sorted(functions(stage_stack)) == sorted(HANDLERS)


@pytest.mark.parametrize("handler", HANDLERS)
def test_function_runs_python_313_on_arm64_with_explicit_limits(
    stage_stack: Synthesized, handler: str
) -> None:
    _, function = functions(stage_stack)[handler]
    props = function["Properties"]
    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == f"energy_auction.handlers.{handler}.handler"
    assert 1 <= props["Timeout"] <= 300  # FetchResults streams a whole run's keys: the longest
    assert 128 <= props["MemorySize"] <= 2048
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert len(props["Layers"]) == 1, "third-party dependencies come from the one dependency layer"


@pytest.mark.parametrize("handler", HANDLERS)
def test_function_logs_to_its_own_log_group_with_retention(stage_stack: Synthesized, handler: str) -> None:
    _, function = functions(stage_stack)[handler]
    group = stage_stack.template["Resources"][logical_id(function["Properties"]["LoggingConfig"]["LogGroup"])]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] in {30, 365}
    assert group["Properties"]["LogGroupName"].endswith(handler.replace("_", "-"))


def test_each_function_has_its_own_role(stage_stack: Synthesized) -> None:
    roles = [logical_id(f["Properties"]["Role"]) for _, f in functions(stage_stack).values()]
    assert len(set(roles)) == len(HANDLERS)
    for role in roles:
        users = [
            lid
            for lid, r in stage_stack.resources("AWS::Lambda::Function").items()
            if r["Properties"].get("Role") == {"Fn::GetAtt": [role, "Arn"]}
        ]
        assert len(users) == 1, f"role {role} is shared by {users}"


def test_no_role_uses_aws_managed_policies(stage_stack: Synthesized) -> None:
    for lid, role in stage_stack.resources("AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], f"{lid} attaches managed policies"
    assert not stage_stack.resources("AWS::IAM::ManagedPolicy")


@pytest.mark.parametrize("handler", HANDLERS)
def test_function_may_do_exactly_what_its_handler_needs(stage_stack: Synthesized, handler: str) -> None:
    _, function = functions(stage_stack)[handler]
    role = logical_id(function["Properties"]["Role"])
    assert actions(stage_stack, role) == BASE_ACTIONS | EXPECTED_ACTIONS[handler]
    assert all(s["Effect"] == "Allow" for s in statements(stage_stack, role))
    # Wildcard resources only where AWS requires them (X-Ray is not resource-scoped).
    for statement in statements(stage_stack, role):
        if "*" in (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        ):
            assert set(statement["Action"]) <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_pipeline_functions_write_only_under_their_prefixes(dev: Synthesized) -> None:
    fetch_role = logical_id(functions(dev)["fetch_results"][1]["Properties"]["Role"])
    process_role = logical_id(functions(dev)["process_order"][1]["Properties"]["Role"])
    assert [
        text(r).endswith('"/work/runs/*"]]}') for r in resources_for(dev, fetch_role, "s3:PutObject")
    ] == [True]
    assert [text(r).endswith('"/orders/*"]]}') for r in resources_for(dev, process_role, "s3:PutObject")] == [
        True
    ]
    assert sorted(text(r).split("/index/")[1] for r in resources_for(dev, fetch_role, "dynamodb:Query")) == [
        'owed-notices"]]}',
        'pending-keys"]]}',
    ]


@pytest.mark.parametrize("handler", HANDLERS)
def test_function_gets_exactly_the_settings_it_reads(stage_stack: Synthesized, handler: str) -> None:
    _, function = functions(stage_stack)[handler]
    variables: dict[str, Any] = function["Properties"]["Environment"]["Variables"]
    assert set(variables) - POWERTOOLS == {PREFIX + name.upper() for name in EXPECTED_SETTINGS[handler]}
    assert set(variables) >= POWERTOOLS
    # And the Lambda accepts them: resource names are tokens here, so stand in plain strings.
    plain = {
        name: value if isinstance(value, str) else "resolved-at-deploy" for name, value in variables.items()
    }
    settings = Settings.from_env(plain)
    assert settings.backend == "aws"
    assert settings.claim_lease_seconds == StageConfig(stage="dev").claim_lease_seconds


def test_process_order_reads_and_updates_only_the_orders_table(stage_stack: Synthesized) -> None:
    # pipeline.process_order reads the order first (GetItem, strongly consistent), then updates it.
    (table_id,) = stage_stack.resources("AWS::DynamoDB::Table")
    role = logical_id(functions(stage_stack)["process_order"][1]["Properties"]["Role"])
    for action in ("dynamodb:GetItem", "dynamodb:UpdateItem"):
        assert resources_for(stage_stack, role, action) == [{"Fn::GetAtt": [table_id, "Arn"]}], action


def test_fetch_results_stages_claims_and_tallies_on_the_orders_table_only(stage_stack: Synthesized) -> None:
    # Staging queries the pending-orders index and writes the run's record; a batch's claim reads
    # its orders and updates them; a tally updates the run's record; a summary reads it.
    (table_id,) = stage_stack.resources("AWS::DynamoDB::Table")
    role = logical_id(functions(stage_stack)["fetch_results"][1]["Properties"]["Role"])
    queries = [text(q) for q in resources_for(stage_stack, role, "dynamodb:Query")]
    assert text({"Fn::Join": ["", [{"Fn::GetAtt": [table_id, "Arn"]}, "/index/pending-keys"]]}) in queries
    for action in ("dynamodb:UpdateItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:GetItem"):
        assert resources_for(stage_stack, role, action) == [{"Fn::GetAtt": [table_id, "Arn"]}]


def test_fetch_results_can_redeliver_owed_notices_to_the_topic_only(stage_stack: Synthesized) -> None:
    # {"action": "redeliver"}: query the owed-notices index, read and postpone those orders,
    # publish each notice to the stage's (encrypted) topic.
    (table_id,) = stage_stack.resources("AWS::DynamoDB::Table")
    (topic_id,) = stage_stack.resources("AWS::SNS::Topic")
    role = logical_id(functions(stage_stack)["fetch_results"][1]["Properties"]["Role"])
    queries = [text(q) for q in resources_for(stage_stack, role, "dynamodb:Query")]
    assert text({"Fn::Join": ["", [{"Fn::GetAtt": [table_id, "Arn"]}, "/index/owed-notices"]]}) in queries
    assert resources_for(stage_stack, role, "sns:Publish") == [{"Ref": topic_id}]
    (key,) = resources_for(stage_stack, role, "kms:GenerateDataKey")
    assert key["Fn::GetAtt"][1] == "Arn"
    assert stage_stack.template["Resources"][key["Fn::GetAtt"][0]]["Type"] == "AWS::KMS::Key"


def test_the_notifier_records_deliveries_on_the_orders_table_only(stage_stack: Synthesized) -> None:
    (table_id,) = stage_stack.resources("AWS::DynamoDB::Table")
    role = logical_id(functions(stage_stack)["notify"][1]["Properties"]["Role"])
    assert resources_for(stage_stack, role, "dynamodb:UpdateItem") == [{"Fn::GetAtt": [table_id, "Arn"]}]


def test_pipeline_function_timeouts(stage_stack: Synthesized) -> None:
    # FetchResults streams a whole run's keys to S3 (and claims one batch at a time); ProcessOrder is
    # one order, inside an EXPRESS child (test_state_machine checks the child against its 5 minutes).
    fns = functions(stage_stack)
    assert fns["fetch_results"][1]["Properties"]["Timeout"] == 300
    assert fns["process_order"][1]["Properties"]["Timeout"] == 10


def test_the_notifiers_queue_is_the_only_one_it_may_use(stage_stack: Synthesized) -> None:
    # The event source mapping polls the notice queue with the notifier's role; SQS itself moves a
    # failing notice to the dead-letter queue, so the role may do nothing on that one.
    _, notifier = functions(stage_stack)["notify"]
    (mapping,) = stage_stack.resources("AWS::Lambda::EventSourceMapping").values()
    queue = mapping["Properties"]["EventSourceArn"]
    role = logical_id(notifier["Properties"]["Role"])
    sqs_actions = {a for a in actions(stage_stack, role) if a.startswith("sqs:")}
    assert sqs_actions == NOTICE_QUEUE_ACTIONS
    for action in sqs_actions:
        assert resources_for(stage_stack, role, action) == [queue], action
    assert "DeadLetterConfig" not in notifier["Properties"]
