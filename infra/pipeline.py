"""The auction pipeline: the package's state machine, its two Lambdas and the schedule."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from energy_auction import workflow
from energy_auction.adapters.aws import NOTICES_INDEX
from infra import REPO_ROOT
from infra.capacity import FUNCTION_MEMORY_MB
from infra.config import StageConfig, settings_env
from infra.functions import LambdaPackage, ServiceFunction
from infra.nag import acknowledge_wildcards
from infra.storage import RESULTS_PREFIX, pending_indexes

MAP_EXECUTION_TYPE = "EXPRESS"
"""Child executions of the Distributed Map: short, cheap, and outside the parent's history."""
MAP_RESULTS = "map-runs"
WORK_RUNS = "runs/"
"""FetchResults writes ``<work prefix>runs/<run_id>/results.json`` (S3WorkStore)."""


RENDERED_ROOT = REPO_ROOT / "build" / "state-machine"
"""``<stage>/pipeline.asl.json``: the package's ASL file with the tunables filled in at synth."""

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
"""The same ``${Name}`` placeholders as energy_auction.workflow."""


def render_tunables(text: str, values: Mapping[str, object]) -> str:
    """``text`` with each ``${Name}`` that ``values`` names replaced by ``str(value)``, as
    energy_auction.workflow.render does; any other placeholder is left as it is."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(values[name]) if name in values else match.group(0)

    return _PLACEHOLDER.sub(replace, text)


BATCH_TASK_TIMEOUT_SECONDS = 60
"""How long a batch's ClaimBatch or TallyBatch may take on AWS (one batch read and a conditional
update per order, a few at once, or a one-item transaction): well inside the EXPRESS child's 5
minutes."""


def tunables(config: StageConfig) -> dict[str, object]:
    """The ASL file's non-ARN values on AWS (numbers, the work prefix, the child execution type)."""
    return workflow.tunables(
        config.settings(),
        execution_type=MAP_EXECUTION_TYPE,
        batch_task_timeout_seconds=BATCH_TASK_TIMEOUT_SECONDS,
    )


def render_definition(config: StageConfig, directory: Path | None = None) -> Path:
    """Write the package's ASL file with the stage's tunables filled in; return its path.

    CloudFormation then fills in only the quoted string placeholders (ARNs, bucket name) with
    DefinitionSubstitutions: it is not documented to substitute an unquoted number into a
    definition read from S3 (cloudformation-coverage-roadmap#591), and this way the deployed file
    is valid JSON by itself.
    """
    text = render_tunables(workflow.template(), tunables(config))
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        left = sorted(set(_PLACEHOLDER.findall(text)))
        raise ValueError(
            f"the state machine definition is not JSON after the synth-time substitutions ({err}); "
            f"placeholders left for CloudFormation: {left} (each must be a whole quoted string)"
        ) from None
    target = (directory or RENDERED_ROOT / config.stage) / workflow.ASL_PATH.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_text() != text:
        # Atomic: a concurrent synth never reads a half-written file.
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, target)
    return target


def substitutions(
    *, fetch_results_arn: str, process_order_arn: str, topic_arn: str, work_bucket: str
) -> dict[str, str]:
    """The values CloudFormation puts in for the rendered file's remaining ``"${Name}"`` strings."""
    return {
        "FetchResultsFunctionArn": fetch_results_arn,
        "ProcessOrderFunctionArn": process_order_arn,
        "NotificationTopicArn": topic_arn,
        "WorkBucketName": work_bucket,
    }


class AuctionPipeline(Construct):
    """FetchResults and ProcessOrder, the Step Functions state machine and its EventBridge schedule."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        package: LambdaPackage,
        table: dynamodb.ITable,
        bucket: s3.IBucket,
        topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        work_runs = f"{config.work_prefix}{WORK_RUNS}*"

        self.fetch_results = ServiceFunction(
            self,
            "FetchResults",
            config=config,
            package=package,
            handler="fetch_results",
            description="Lambda A: asks the market; stages the pending orders' keys in batches; claims a "
            "batch and answers its results; tallies batches and summarises runs; republishes overdue "
            "rejection notices",
            memory_size=FUNCTION_MEMORY_MB["fetch_results"],
            # Staging streams the keys page by page (a million orders: about 500 query pages and 10
            # parts of upload); claiming a batch is one batch read and an update per order.
            timeout=Duration.minutes(5),
            environment=settings_env(
                backend="aws",
                orders_table=table.table_name,
                work_bucket=bucket.bucket_name,
                work_prefix=config.work_prefix,
                claim_lease_seconds=config.claim_lease_seconds,
                pipeline_batch_size=config.pipeline_batch_size,
                pipeline_max_orders=config.pipeline_max_orders,
                market_ready_probability=config.market_ready_probability,
                market_accept_probability=config.market_accept_probability,
                market_seed=config.market_seed,
                notification_topic_arn=topic.topic_arn,
                notice_redelivery_seconds=config.notice_redelivery_seconds,
            ),
        )
        # Staging queries the pending-orders index (during an upgrade, the functions not yet
        # updated query the earlier one: legacy_pending_index); the redelivery of owed notices
        # (action "redeliver") queries the owed-notices index.
        _allow(
            self.fetch_results.role,
            ["dynamodb:Query"],
            *(f"{table.table_arn}/index/{name}" for name in pending_indexes(config)),
            f"{table.table_arn}/index/{NOTICES_INDEX}",
        )
        # A batch's orders are read (BatchGetItem) and claimed with conditional updates (UpdateItem);
        # a batch's tally is a one-item transaction (authorised as UpdateItem); the owed notices are
        # read back and postponed (UpdateItem). The run's record is written when it is staged
        # (PutItem) and read for its summary (GetItem).
        _allow(
            self.fetch_results.role,
            ["dynamodb:UpdateItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:GetItem"],
            table.table_arn,
        )
        _allow(self.fetch_results.role, ["sns:Publish"], topic.topic_arn)
        if topic.master_key is not None:  # publishing to an encrypted topic encrypts with its key
            _allow(self.fetch_results.role, ["kms:GenerateDataKey", "kms:Decrypt"], topic.master_key.key_arn)
        # The batches file is one PutObject, or a multipart upload (authorised as PutObject), aborted
        # should the staging fail half-way.
        _allow(
            self.fetch_results.role,
            ["s3:PutObject", "s3:AbortMultipartUpload"],
            bucket.arn_for_objects(work_runs),
        )
        acknowledge_wildcards(
            self.fetch_results.role,
            "FetchResults writes one object per run, <work prefix>runs/<run_id>/batches.json; the run id is "
            "the execution name, so only the prefix is known",
            bucket.arn_for_objects(work_runs),
        )

        self.process_order = ServiceFunction(
            self,
            "ProcessOrder",
            config=config,
            package=package,
            handler="process_order",
            description="Lambda B: stores an accepted result, marks the order; raises OrderRejected",
            memory_size=FUNCTION_MEMORY_MB["process_order"],
            # Short: an EXPRESS child (5-minute limit) settles a batch of orders, each with up to 5
            # attempts of ProcessOrder and of its release, with backoff between them.
            timeout=Duration.seconds(10),
            environment=settings_env(
                backend="aws",
                orders_table=table.table_name,
                results_bucket=bucket.bucket_name,
                notice_redelivery_seconds=config.notice_redelivery_seconds,
            ),
        )
        # It reads the order first (GetItem, strongly consistent), then completes or releases it.
        _allow(self.process_order.role, ["dynamodb:GetItem", "dynamodb:UpdateItem"], table.table_arn)
        _allow(self.process_order.role, ["s3:PutObject"], bucket.arn_for_objects(f"{RESULTS_PREFIX}*"))
        acknowledge_wildcards(
            self.process_order.role,
            "ProcessOrder writes one object per accepted order, orders/<date>/<record_id>.json; only the "
            "prefix is known in advance",
            bucket.arn_for_objects(f"{RESULTS_PREFIX}*"),
        )

        # Named in advance: the role must name the state machine (Distributed Map child executions)
        # and a reference to the machine's own ARN would be circular.
        name = f"{config.resource_prefix}-pipeline"
        state_machine_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role = iam.Role(
            self,
            "StateMachineRole",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description=f"{name}: invoke the pipeline Lambdas, run the Distributed Map, publish notices",
        )
        executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{name}/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        map_results = bucket.arn_for_objects(f"{config.work_prefix}{MAP_RESULTS}/*")
        # The Distributed Map starts, watches and stops child executions of this state machine.
        _allow(self.role, ["states:StartExecution"], state_machine_arn)
        _allow(self.role, ["states:DescribeExecution", "states:StopExecution"], executions)
        _allow(
            self.role,
            ["lambda:InvokeFunction"],
            self.fetch_results.function.function_arn,
            self.process_order.function.function_arn,
        )
        _allow(self.role, ["sns:Publish"], topic.topic_arn)
        if topic.master_key is not None:  # publishing to an encrypted topic encrypts with its key
            _allow(self.role, ["kms:GenerateDataKey", "kms:Decrypt"], topic.master_key.key_arn)
        _allow(self.role, ["s3:GetObject"], bucket.arn_for_objects(work_runs))  # the ItemReader
        _allow(  # the ResultWriter
            self.role,
            ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
            map_results,
        )
        acknowledge_wildcards(
            self.role,
            "Distributed Map: child executions are named by Step Functions (<name>/<map run>:<id>); the "
            "ItemReader reads the object of the run (runs/<run_id>/...) and the ResultWriter writes "
            "<work prefix>map-runs/<map run id>/..., so only these prefixes are known",
            executions,
            bucket.arn_for_objects(work_runs),
            map_results,
        )
        acknowledge_wildcards(
            self.role,
            "Resource '*' is what AWS requires for the actions CDK adds for logging ALL and X-Ray: "
            "logs:CreateLogDelivery/GetLogDelivery/UpdateLogDelivery/DeleteLogDelivery/ListLogDeliveries/"
            "PutResourcePolicy/DescribeResourcePolicies/DescribeLogGroups and xray:PutTraceSegments/"
            "PutTelemetryRecords/GetSamplingRules/GetSamplingTargets are not resource-scoped",
            "*",
        )

        self.log_group = config.log_group(self, "Logs", f"/aws/vendedlogs/states/{name}")
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_file(str(render_definition(config))),
            definition_substitutions=substitutions(
                fetch_results_arn=self.fetch_results.function.function_arn,
                process_order_arn=self.process_order.function.function_arn,
                topic_arn=topic.topic_arn,
                work_bucket=bucket.bucket_name,
            ),
            role=self.role,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
        )

        self.schedule = events.Rule(
            self,
            "Schedule",
            rule_name=f"{name}-schedule",
            description=f"Runs the auction pipeline every {config.schedule_minutes} minutes",
            schedule=events.Schedule.rate(Duration.minutes(config.schedule_minutes)),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    retry_attempts=2,
                    # A start older than one period is superseded by the next scheduled run.
                    max_event_age=Duration.minutes(config.schedule_minutes),
                )
            ],
        )


def _allow(role: iam.IRole, actions: list[str], *resources: str) -> None:
    role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=list(resources)))
