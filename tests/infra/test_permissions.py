"""What the deployed functions may do, checked offline against what they do.

Each handler runs on the AWS backend against moto, with the settings its deployed function gets
and the resources named as the dev template names them, through every action it has (the story
below). Every AWS call is recorded with the handler that made it (``tests/aws_calls.py``), turned
into the permissions IAM evaluates for it (``tests/infra/permissions.py``: transactions item by
item, index and object ARNs, the topic's KMS key), and checked against the role of that function
in the synthesized template: each call must be allowed, and each action and resource a role
allows must be needed by some call, or be one of the documented ``RUNTIME_PERMISSIONS``.

The story is one sequence of a trader's and the pipeline's steps, so that each handler finds the
state the previous ones left (an order claimed by a run, a rejection whose notice is owed).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from infra.functions import HANDLERS
from moto import mock_aws

from energy_auction import bootstrap, codec
from energy_auction.adapters import aws as aws_adapters
from energy_auction.adapters.aws import ORDERS_KEY
from energy_auction.bootstrap import Container
from energy_auction.errors import OrderRejected
from energy_auction.handlers.authorizer import Unauthorized
from energy_auction.local.engine import PipelineEngine
from energy_auction.local.lambdas import LocalLambdaContext
from energy_auction.orders import OrderStatus
from energy_auction.settings import Settings
from tests.adapters.stores import fast_moto_transactions
from tests.aws_calls import AwsCall, AwsCallRecorder, record_aws_calls
from tests.builders import key, store_orders
from tests.conftest import FakeClock
from tests.events import api_event, authorizer_event, bearer
from tests.fake_slack import FakeSlack
from tests.infra.conftest import Synthesized
from tests.infra.deployed import ACCOUNT, REGION, DeployedStage, create_stage
from tests.infra.permissions import (
    RUNTIME_PERMISSIONS,
    Need,
    Resolver,
    UnmappedCall,
    missing_permissions,
    needs,
    role_of,
    unused_permissions,
)
from tests.infra.templates import functions
from tests.sns import alarm_message, rejected_message, sns_record, sqs_event, sqs_record
from tests.workflow.conftest import FAST, ScriptedMarket

RUN_1, RUN_2 = "run-20270115T080000Z-aaaa", "run-20270115T081500Z-bbbb"


def forget_cached_secrets() -> None:
    """Drop Powertools' providers and the values they cache (process-wide, like a new instance)."""
    parameters.clear_caches()  # type: ignore[no-untyped-call]


@dataclass
class Lambdas:
    """Each deployed function as a warm Lambda in this process: its own container, built from the
    settings its function is deployed with, kept between invocations until a cold start, and the
    function's timeout."""

    stage: DeployedStage
    clock: FakeClock
    market: ScriptedMarket
    _containers: dict[str, Container] = field(default_factory=dict)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        if function not in self._containers:
            settings = self.stage.settings(function)
            self._containers[function] = Container(settings, self.clock, market=self.market)
        bootstrap.use(self._containers[function])
        handler = importlib.import_module(f"energy_auction.handlers.{function}").handler
        timeout = functions(self.stage.stack)[function][1]["Properties"]["Timeout"]
        # Lambda's runtime hands the handler JSON it parsed (numbers as floats).
        return handler(json.loads(codec.dumps(event)), LocalLambdaContext(function, timeout))

    def cold_start(self, function: str) -> None:
        """A new instance of the function: nothing built, no secret cached."""
        self._containers.pop(function, None)
        forget_cached_secrets()


@pytest.fixture
def stage(dev: Synthesized) -> Iterator[DeployedStage]:
    forget_cached_secrets()  # a secret another test cached would hide this test's reads
    with mock_aws(), fast_moto_transactions():
        yield create_stage(dev)
    forget_cached_secrets()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def fill_slack_secret(stage: DeployedStage, url: str) -> None:
    """What the operator does after the first deploy (README: filling the Slack webhook)."""
    (name,) = [n for n in stage.secret_values if n.endswith("/slack-webhook-url")]
    boto3.client("secretsmanager", region_name=REGION).put_secret_value(SecretId=name, SecretString=url)
    stage.secret_values[name] = url


def staged_batches(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The batches of order keys FetchResults wrote for the Distributed Map, as its ItemReader reads them."""
    s3 = boto3.client("s3", region_name=REGION)
    body = s3.get_object(Bucket=answer["items"]["bucket"], Key=answer["items"]["key"])["Body"].read()
    batches: list[dict[str, Any]] = codec.loads(body)
    return batches


def child_input(items: list[dict[str, Any]], record_id: str, run_id: str) -> dict[str, Any]:
    """ProcessOrder's input in a batch (the inline Map's ItemSelector) for one order."""
    (item,) = [i for i in items if i["record_id"] == record_id]
    return {"result": item, "run_id": run_id}


def order(stage: DeployedStage, record_id: str) -> dict[str, Any]:
    table = stage.one("AWS::DynamoDB::Table")
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=table, Key={ORDERS_KEY: {"S": key(record_id)}}, ConsistentRead=True
    )["Item"]
    return item


def operations(made: list[AwsCall]) -> list[str]:
    return [f"{c.service}.{c.operation}" for c in made]


def run_story(stage: DeployedStage, slack: FakeSlack) -> AwsCallRecorder:
    """Every action of every handler, in the order a day of trading brings them; returns the calls."""
    clock = FakeClock()
    market = ScriptedMarket(reject={"r1", "r2"})
    lambdas = Lambdas(stage, clock, market)
    fill_slack_secret(stage, slack.url)
    (jwt_secret,) = [v for n, v in stage.secret_values.items() if n.endswith("/jwt-signing-secret")]

    with record_aws_calls() as calls:
        # --- the API's authorizer and handler
        with calls.scenario("authorizer: a valid token, cold start") as made:
            answer = lambdas.invoke("authorizer", authorizer_event(bearer(secret=jwt_secret)))
        assert answer["policyDocument"]["Statement"][0]["Effect"] == "Allow"
        assert operations(made) == ["secretsmanager.GetSecretValue"]

        lambdas.cold_start("authorizer")
        with calls.scenario("authorizer: a bad token, cold start") as made, pytest.raises(Unauthorized):
            lambdas.invoke("authorizer", authorizer_event(bearer(secret="not-the-signing-secret" * 3)))
        assert operations(made) == ["secretsmanager.GetSecretValue"]

        with calls.scenario("fetch_results: ready, no pending orders"):
            answer = lambdas.invoke("fetch_results", {"run_id": "run-empty", "attempt": 1})
        assert (answer["results"], answer["count"]) == (True, 0)

        body = [
            {"record_id": record_id, "parameter_1": "lot", "parameter_2": 2.5}
            for record_id in ("a1", "a2", "r1", "r2")
        ]
        with calls.scenario("api: POST /orders"):
            answer = lambdas.invoke("api", api_event("POST", "/orders", body))
        assert (answer["statusCode"], json.loads(answer["body"])["stored"]) == (201, 4)

        with calls.scenario("api: GET /orders/{record_id}"):
            answer = lambdas.invoke("api", api_event("GET", "/orders/a1"))
        assert (answer["statusCode"], json.loads(answer["body"])["status"]) == (200, "pending")
        with calls.scenario("api: GET an unknown order"):
            answer = lambdas.invoke("api", api_event("GET", "/orders/nobody"))
        assert answer["statusCode"] == 404

        with calls.scenario("api: GET /orders, a trader's listing, cold start"):
            answer = lambdas.invoke("api", api_event("GET", "/orders"))
        assert (answer["statusCode"], len(json.loads(answer["body"])["orders"])) == (200, 4)
        with calls.scenario("api: GET /orders, an operator's listing of every trader"):
            answer = lambdas.invoke("api", api_event("GET", "/orders", principal="ops", role="operator"))
        assert (answer["statusCode"], len(json.loads(answer["body"])["orders"])) == (200, 4)

        cancelled = [{"record_id": "c1", "parameter_1": "lot", "parameter_2": 1}]
        assert lambdas.invoke("api", api_event("POST", "/orders", cancelled))["statusCode"] == 201
        with calls.scenario("api: DELETE /orders/{record_id}"):
            answer = lambdas.invoke("api", api_event("DELETE", "/orders/c1"))
        assert (answer["statusCode"], json.loads(answer["body"])["status"]) == (200, "cancelled")

        # --- a pipeline run: FetchResults, then one ProcessOrder per order
        with calls.scenario("fetch_results: redeliver, nothing owed"):
            answer = lambdas.invoke("fetch_results", {"action": "redeliver", "run_id": RUN_1})
        assert answer["redelivered"] == 0

        market.ready_after = {RUN_1: 2}
        with calls.scenario("fetch_results: not ready") as made:
            answer = lambdas.invoke("fetch_results", {"run_id": RUN_1, "attempt": 1})
        assert answer["results"] is False
        assert made == [], "asking the market touches no AWS resource"

        with calls.scenario("fetch_results: ready, stages the orders' keys"):
            answer = lambdas.invoke("fetch_results", {"run_id": RUN_1, "attempt": 2})
        assert (answer["count"], answer["batches"], answer["left"]) == (4, 1, 0)
        (batch,) = staged_batches(answer)
        with calls.scenario("fetch_results: claim a batch") as made:
            claimed = lambdas.invoke("fetch_results", {"action": "claim", "run_id": RUN_1, **batch})
        items = claimed["results"]
        # The claim's updates run on worker threads: still the handler's calls, checked like the rest
        assert [(c.function, c.operation) for c in made if c.operation == "UpdateItem"] == [
            ("fetch_results", "UpdateItem")
        ] * len(items)
        assert sorted(i["status"] for i in items) == ["accepted", "accepted", "rejected", "rejected"]

        with calls.scenario("process_order: accepted"):
            answer = lambdas.invoke("process_order", child_input(items, "a1", RUN_1))
        assert answer["status"] == "accepted"
        s3 = boto3.client("s3", region_name=REGION)
        assert s3.head_object(
            Bucket=stage.environment("process_order")["ENERGY_AUCTION_RESULTS_BUCKET"],
            Key=answer["result_key"],
        )
        with calls.scenario("process_order: accepted, retried after it completed") as made:
            assert lambdas.invoke("process_order", child_input(items, "a1", RUN_1)) == answer
        assert operations(made) == ["dynamodb.GetItem", "s3.PutObject"]

        for record_id in ("r1", "r2"):
            with calls.scenario("process_order: rejected"), pytest.raises(OrderRejected):
                lambdas.invoke("process_order", child_input(items, record_id, RUN_1))
            assert order(stage, record_id)["status"]["S"] == OrderStatus.REJECTED.value

        with calls.scenario("process_order: release after failed processing"):
            answer = lambdas.invoke("process_order", {**child_input(items, "a2", RUN_1), "action": "release"})
        assert answer == {"record_id": "a2", "status": "released"}
        assert "claim_run_id" not in order(stage, "a2")

        with calls.scenario("api: POST an order the auction processed"):
            answer = lambdas.invoke("api", api_event("POST", "/orders", body[:1]))
        assert answer["statusCode"] == 409

        # --- the notifier: the notice queue's batches to Slack, deliveries recorded on the orders
        # (r2's notice stays owed, for the redelivery below)
        rejection = sns_record(
            rejected_message("r1", RUN_1), "order_rejected", "Energy Auction: order rejected"
        )
        delivered: dict[str, list[Any]] = {"batchItemFailures": []}
        with calls.scenario("notify: a rejection notice and its copy in one batch, cold start"):
            assert (
                lambdas.invoke("notify", sqs_event(sqs_record(rejection), sqs_record(rejection))) == delivered
            )
        assert "notice_due_at" not in order(stage, "r1")
        with calls.scenario("notify: the same notice again"):
            assert lambdas.invoke("notify", sqs_event(sqs_record(rejection))) == delivered
        with calls.scenario("notify: an alarm"):
            alarm = sns_record(alarm_message(), None, 'ALARM: "energy-auction-dev-notify-errors"')
            assert lambdas.invoke("notify", sqs_event(sqs_record(alarm))) == delivered
        assert len(slack.posts()) == 2, "the rejection, then the alarm; the copies were skipped"

        outcomes = [
            {"status": "accepted"},
            {"status": "rejected"},
            {"status": "rejected"},
            {"status": "failed"},
        ]
        tally = {"action": "tally", "run_id": RUN_1, "batch": batch["batch"], "outcomes": outcomes}
        with calls.scenario("fetch_results: tally a batch"):
            answer = lambdas.invoke("fetch_results", tally)
        assert (answer["accepted"], answer["rejected"], answer["failed"]) == (1, 2, 1)
        with calls.scenario("fetch_results: summarise the run"):
            started = "2027-01-15T08:00:00Z"
            answer = lambdas.invoke(
                "fetch_results", {"action": "summarise", "run_id": RUN_1, "started_at": started}
            )
        assert (answer["staged"], answer["orders"]) == (4, 4)

        # --- a run whose staging fails half-way (here: parts smaller than S3 takes) aborts its upload
        market.ready_after = {}
        with (
            mock.patch.object(aws_adapters, "WORK_PART_BYTES", 1),
            calls.scenario("fetch_results: staging fails half-way, the upload is aborted"),
            pytest.raises(Exception),  # noqa: B017, PT011 (what it raises is not this test's point)
        ):
            lambdas.invoke("fetch_results", {"run_id": RUN_2, "attempt": 1})
        work_bucket = stage.environment("fetch_results")["ENERGY_AUCTION_WORK_BUCKET"]
        assert (
            not boto3.client("s3", region_name=REGION)
            .list_multipart_uploads(Bucket=work_bucket)
            .get("Uploads")
        )

        # --- the next run publishes the rejection notice still owed (r2's) again
        clock.advance(stage.settings("fetch_results").notice_redelivery_seconds + 1)
        with calls.scenario("fetch_results: redeliver an overdue notice"):
            answer = lambdas.invoke("fetch_results", {"action": "redeliver", "run_id": "run-3"})
        assert answer["redelivered"] == 1
    return calls


def report(problems: list[str]) -> str:
    return "\n  ".join(["", *problems])


def test_each_call_a_function_makes_is_allowed_by_its_role(
    dev: Synthesized, stage: DeployedStage, slack: FakeSlack
) -> None:
    # Given every action of every handler, run on moto with the dev stage's settings and names
    calls = run_story(stage, slack)

    # When each call's permissions are compared with its function's role in the dev template
    needed = needs(calls, stage.resolver)
    assert sorted(needed) == sorted(HANDLERS), "every deployed function takes part in the story"
    problems = [
        p
        for function in HANDLERS
        for p in missing_permissions(dev, function, needed[function], stage.resolver)
    ]

    # Then the role allows each of them
    assert not problems, f"permissions missing:{report(problems)}"


def test_no_role_allows_what_its_function_never_does(
    dev: Synthesized, stage: DeployedStage, slack: FakeSlack
) -> None:
    # Given every action of every handler, run on moto with the dev stage's settings and names
    needed = needs(run_story(stage, slack), stage.resolver)

    # When each statement of each function's role is compared with what its calls needed
    problems = [
        p
        for function in HANDLERS
        for p in unused_permissions(dev, function, needed.get(function, []), stage.resolver)
    ]

    # Then each action on each resource is needed, or Lambda itself uses it (RUNTIME_PERMISSIONS)
    assert not problems, f"permissions no call needs:{report(problems)}"


def test_a_pipeline_run_on_the_stage_names_makes_only_calls_the_roles_allow(
    dev: Synthesized, tmp_path: Path, slack: FakeSlack
) -> None:
    # Given the ASL file on moto's interpreter with the real handlers on the AWS backend: the dev
    # stage's table, bucket, topic and Slack secret, and the pipeline functions' deployed settings
    forget_cached_secrets()
    with mock_aws(), fast_moto_transactions(), contextlib.ExitStack() as cleanup:
        cleanup.callback(forget_cached_secrets)
        stage = create_stage(dev, buckets=False)  # the engine creates its work bucket: the results bucket
        fill_slack_secret(stage, slack.url)
        pipeline = {
            name: value
            for function in ("fetch_results", "process_order", "notify")
            for name, value in stage.environment(function).items()
        }
        settings = Settings.from_env(pipeline, home=tmp_path / "home", **FAST)
        container = Container(settings, FakeClock(), market=ScriptedMarket(reject={"o1"}))
        store_orders(container, 3)
        engine = PipelineEngine(container)
        engine.open()
        cleanup.callback(engine.close)

        # When a run settles the three orders (one rejected, its notice posted to Slack)
        with record_aws_calls() as calls:
            summary = engine.run(timeout=60)

    # Then every call each handler made is allowed by its function's role
    assert (summary.status, summary.accepted, summary.rejected) == ("SUCCEEDED", 2, 1)
    texts = [post["blocks"][0]["text"]["text"] for post in slack.posts()]
    assert texts[0] == "Order o1 of trader-1 rejected"
    assert len(texts) == 2, texts  # and the run's summary
    needed = needs(calls, stage.resolver)
    assert sorted(needed) == ["fetch_results", "notify", "process_order"]
    problems = [
        p
        for function, need in needed.items()
        for p in missing_permissions(dev, function, need, stage.resolver)
    ]
    assert not problems, f"permissions missing:{report(problems)}"


# --- the check itself: it fails when a permission is missing or left over


def edited(stack: Synthesized) -> Synthesized:
    """A copy of the stack's template to edit."""
    return Synthesized(stack.name, stack.directory, copy.deepcopy(stack.template))


def without_action(stack: Synthesized, function: str, action: str) -> Synthesized:
    """The template with ``action`` taken out of every statement of ``function``'s role."""
    changed = edited(stack)
    resources = changed.template["Resources"]
    for policy in changed.resources("AWS::IAM::Policy"):
        document = resources[policy]["Properties"]["PolicyDocument"]
        if {"Ref": role_of(changed, function)} not in resources[policy]["Properties"]["Roles"]:
            continue
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            statement["Action"] = [a for a in actions if a != action]
        document["Statement"] = [s for s in document["Statement"] if s["Action"]]
    return changed


def with_statement(stack: Synthesized, function: str, statement: dict[str, Any]) -> Synthesized:
    """The template with one more statement in ``function``'s role policy."""
    changed = edited(stack)
    (policy,) = [
        p
        for p in changed.resources("AWS::IAM::Policy").values()
        if {"Ref": role_of(changed, function)} in p["Properties"]["Roles"]
    ]
    policy["Properties"]["PolicyDocument"]["Statement"].append(statement)
    return changed


def call(function: str, service: str, operation: str, **params: Any) -> AwsCall:
    return AwsCall(function, service, operation, REGION, params)


def needed_by(stack: Synthesized, function: str, *calls: AwsCall) -> list[Need]:
    return needs(calls, Resolver(stack, ACCOUNT, REGION)).get(function, [])


TABLE = "energy-auction-dev-order-book"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}"


def test_a_call_the_role_does_not_allow_names_function_action_and_resource(dev: Synthesized) -> None:
    # Given ProcessOrder's first call, and the dev template without ProcessOrder's dynamodb:GetItem
    get = call("process_order", "dynamodb", "GetItem", TableName=TABLE, Key={})
    broken = without_action(dev, "process_order", "dynamodb:GetItem")
    assert (
        missing_permissions(dev, "process_order", needed_by(dev, "process_order", get), stage_resolver(dev))
        == []
    )

    # When the check compares the call with the role
    problems = missing_permissions(
        broken, "process_order", needed_by(broken, "process_order", get), stage_resolver(broken)
    )

    # Then it names the function, the action and the table's ARN
    assert problems == [
        f"process_order may not dynamodb:GetItem on {TABLE_ARN} (for process_order: dynamodb.GetItem) "
        f"(role {role_of(dev, 'process_order')})"
    ]


@pytest.mark.parametrize(
    ("made", "refused"),
    [
        (
            call("fetch_results", "dynamodb", "Query", TableName=TABLE, IndexName="all-orders"),
            f"dynamodb:Query on {TABLE_ARN}/index/all-orders",
        ),
        (
            call("fetch_results", "dynamodb", "Query", TableName=TABLE),
            f"dynamodb:Query on {TABLE_ARN}",  # the table itself: only its two indexes are granted
        ),
        (
            call(
                "process_order",
                "s3",
                "PutObject",
                Bucket=f"order-results-dev-{ACCOUNT}-{REGION}",
                Key="work/runs/run-1/results.json",
            ),
            f"s3:PutObject on arn:aws:s3:::order-results-dev-{ACCOUNT}-{REGION}/work/runs/run-1/results.json",
        ),
        (
            call("fetch_results", "sns", "Publish", TopicArn=f"arn:aws:sns:{REGION}:{ACCOUNT}:other-topic"),
            f"sns:Publish on arn:aws:sns:{REGION}:{ACCOUNT}:other-topic",
        ),
        (
            call(
                "authorizer",
                "secretsmanager",
                "GetSecretValue",
                SecretId="energy-auction/dev/slack-webhook-url",
            ),
            f"secretsmanager:GetSecretValue on arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:"
            "energy-auction/dev/slack-webhook-url-??????",
        ),
        (
            call(
                "api",
                "dynamodb",
                "TransactWriteItems",
                TransactItems=[
                    {"Put": {"TableName": TABLE, "Item": {}}},
                    {"ConditionCheck": {"TableName": TABLE, "Key": {}}},
                ],
            ),
            f"dynamodb:ConditionCheckItem on {TABLE_ARN}",  # the Put is allowed (PutItem)
        ),
    ],
    ids=[
        "other-index",
        "table-query",
        "key-outside-prefix",
        "other-topic",
        "other-secret",
        "transaction-item",
    ],
)
def test_a_resource_or_item_action_outside_the_grants_is_refused(
    dev: Synthesized, made: AwsCall, refused: str
) -> None:
    assert made.function is not None
    problems = missing_permissions(
        dev, made.function, needed_by(dev, made.function, made), stage_resolver(dev)
    )
    assert [p.split(" may not ", 1)[1].split(" (")[0] for p in problems] == [refused]


def test_publishing_to_the_encrypted_topic_needs_its_key(dev: Synthesized) -> None:
    # Given FetchResults' publish to the stage's topic (encrypted with a customer managed key)
    topic = stage_resolver(dev).ref(dev.one("AWS::SNS::Topic")[0])
    publish = call("fetch_results", "sns", "Publish", TopicArn=topic, Message="{}")
    assert (
        missing_permissions(
            dev, "fetch_results", needed_by(dev, "fetch_results", publish), stage_resolver(dev)
        )
        == []
    )

    # When the role lacks the key's permissions
    broken = without_action(
        without_action(dev, "fetch_results", "kms:GenerateDataKey"), "fetch_results", "kms:Decrypt"
    )
    problems = missing_permissions(
        broken, "fetch_results", needed_by(broken, "fetch_results", publish), stage_resolver(broken)
    )

    # Then both are reported, as needed with the publish
    key = stage_resolver(dev).attribute(dev.one("AWS::KMS::Key")[0], "Arn")
    assert [p.split(" (")[0] for p in problems] == [
        f"fetch_results may not kms:Decrypt on {key}",
        f"fetch_results may not kms:GenerateDataKey on {key}",
    ]
    assert all("needed with fetch_results: sns.Publish" in p for p in problems)


def test_an_action_no_call_needs_is_reported(dev: Synthesized) -> None:
    # Given what the api function does, and a role that may also delete orders
    made = [
        call(
            "api", "dynamodb", "TransactWriteItems", TransactItems=[{"Put": {"TableName": TABLE, "Item": {}}}]
        ),
        call("api", "dynamodb", "GetItem", TableName=TABLE, Key={}),
    ]
    table = {"Fn::GetAtt": [dev.one("AWS::DynamoDB::Table")[0], "Arn"]}
    loose = with_statement(
        dev, "api", {"Action": "dynamodb:DeleteItem", "Effect": "Allow", "Resource": table}
    )
    # (these calls leave the listing, cancel and cursor grants unneeded: compare with those)
    before = unused_permissions(dev, "api", needed_by(dev, "api", *made), stage_resolver(dev))

    # When the role is compared with the calls
    problems = unused_permissions(loose, "api", needed_by(loose, "api", *made), stage_resolver(loose))

    # Then the extra action is named with its resource
    assert [p for p in problems if p not in before] == [
        f"api's role {role_of(dev, 'api')} allows dynamodb:DeleteItem on {TABLE_ARN}, "
        "which none of its calls needs"
    ]


def test_lambdas_own_uses_of_a_role_excuse_only_their_own_resources(dev: Synthesized) -> None:
    # Given the api function's role granted the notifier's notice queue and a wildcard X-Ray
    # action: no event source mapping feeds the api, and X-Ray needs only the two actions tracing uses
    (mapping,) = dev.resources("AWS::Lambda::EventSourceMapping").values()
    queue = mapping["Properties"]["EventSourceArn"]
    loose = with_statement(dev, "api", {"Action": "sqs:ReceiveMessage", "Effect": "Allow", "Resource": queue})
    loose = with_statement(
        loose, "api", {"Action": "xray:GetSamplingRules", "Effect": "Allow", "Resource": "*"}
    )
    made = call("api", "dynamodb", "GetItem", TableName=TABLE, Key={})
    resolver = stage_resolver(loose)

    # When the role is compared with the api's calls
    problems = unused_permissions(loose, "api", needed_by(loose, "api", made), resolver)
    before = unused_permissions(dev, "api", needed_by(dev, "api", made), stage_resolver(dev))

    # Then neither is excused by RUNTIME_PERMISSIONS (the notifier's own grant on its queue is)
    assert [p.split(" allows ")[1].split(",")[0] for p in problems if p not in before] == [
        f"sqs:ReceiveMessage on {resolver.resolve(queue)}",
        "xray:GetSamplingRules on *",
    ]
    assert any("sqs:ReceiveMessage" in p.actions for p in RUNTIME_PERMISSIONS)


def test_a_call_without_an_iam_rule_fails_loudly(dev: Synthesized) -> None:
    made = call("notify", "s3", "PutBucketPolicy", Bucket="b", Policy="{}")
    with pytest.raises(UnmappedCall, match=r"no IAM rule for notify: s3\.PutBucketPolicy"):
        needed_by(dev, "notify", made)


def test_a_statement_the_check_cannot_judge_fails_loudly(dev: Synthesized) -> None:
    conditional = with_statement(
        dev,
        "api",
        {
            "Action": "dynamodb:Query",
            "Effect": "Allow",
            "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "true"}},
        },
    )
    with pytest.raises(AssertionError, match="cannot judge"):
        missing_permissions(conditional, "api", [], stage_resolver(conditional))


def stage_resolver(stack: Synthesized) -> Resolver:
    return Resolver(stack, ACCOUNT, REGION)
