"""The delivery pipeline stack (CDK Pipelines): GitHub through CodeConnections, `make test` and
synth, dev deployed automatically, prod after a manual approval, failures sent to Slack (and kept
in a dead-letter queue with an alarm when they cannot be published)."""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Duration, Environment, RemovalPolicy, Stack, Stage, pipelines
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from energy_auction.deployment import stack_name
from infra.config import PRODUCTION_STAGE, ConfigError, StageConfig
from infra.nag import acknowledge, acknowledge_wildcards
from infra.notifications import DEAD_LETTER_RETENTION, PIPELINE_FAILED_RULE, topic_name
from infra.secure import dead_letter_queue, private_bucket
from infra.stack import EnergyAuctionStack

PIPELINE_NAME = "energy-auction-delivery"
CONNECTION_PARAMETER = "/energy-auction/codeconnections-arn"
"""SSM parameter holding the CodeConnections connection ARN, unless context ``connection_arn`` gives it."""
DEFAULT_BRANCH = "main"
SYNTH_COMMANDS = ["make test", "make synth"]
FAILURE_NOTICE_MAX_EVENT_AGE = Duration.hours(2)
"""How long EventBridge keeps retrying to publish a failure notice before it goes to the DLQ."""
FAILURE_NOTICE_RETRY_ATTEMPTS = 10
FAILURE_NOTICE_DLQ = f"{PIPELINE_NAME}-failure-notices-dlq"
FAILURE_NOTICE_ALARM = f"{PIPELINE_NAME}-FailureNoticeDeadLetters"


class ApplicationStage(Stage):
    """One deployment stage of the application (its stack keeps the name `make deploy` uses)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        EnergyAuctionStack(self, "App", stack_name=stack_name(config.stage), config=config)


class DeliveryPipelineStack(Stack):
    """Source -> `make test` + synth -> self-update -> dev -> approval -> prod."""

    def __init__(self, scope: Construct, construct_id: str, *, env: Environment, **kwargs: Any) -> None:
        super().__init__(
            scope, construct_id, description="Energy Auction delivery pipeline", env=env, **kwargs
        )
        context = self.node.try_get_context
        repository = context("repository")
        if not repository or "/" not in str(repository):
            raise ConfigError("set the GitHub repository as context: -c repository=<owner>/<name> (cdk.json)")
        branch = str(context("branch") or DEFAULT_BRANCH)
        # Never in code: from context, else resolved by CloudFormation from SSM at deploy time.
        connection_arn = str(
            context("connection_arn")
            or ssm.StringParameter.value_for_string_parameter(self, CONNECTION_PARAMETER)
        )

        key = kms.Key(
            self,
            "ArtifactsKey",
            description=f"{PIPELINE_NAME}: pipeline artifacts",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        access_logs = private_bucket(
            self,
            "ArtifactsAccessLogs",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        artifacts = private_bucket(
            self,
            "Artifacts",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(30))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        code_pipeline = codepipeline.Pipeline(
            self,
            "CodePipeline",
            pipeline_name=PIPELINE_NAME,
            pipeline_type=codepipeline.PipelineType.V2,
            artifact_bucket=artifacts,
            restart_execution_on_update=True,
        )
        source = pipelines.CodePipelineSource.connection(
            str(repository), branch, connection_arn=connection_arn
        )
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            code_pipeline=code_pipeline,
            synth=pipelines.ShellStep(
                "Synth",
                input=source,
                commands=SYNTH_COMMANDS,
                primary_output_directory="cdk.out",
            ),
            docker_enabled_for_synth=False,
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(
                    build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                    compute_type=codebuild.ComputeType.MEDIUM,
                ),
                partial_build_spec=codebuild.BuildSpec.from_object(
                    {"phases": {"install": {"runtime-versions": {"python": "3.12", "nodejs": "20"}}}}
                ),
                timeout=Duration.minutes(60),
            ),
        )
        self.pipeline.add_stage(
            ApplicationStage(self, "Dev", config=StageConfig.from_context(self.node, "dev"), env=env)
        )
        self.pipeline.add_stage(
            ApplicationStage(
                self, "Prod", config=StageConfig.from_context(self.node, PRODUCTION_STAGE), env=env
            ),
            pre=[pipelines.ManualApprovalStep("PromoteToProd", comment="Deploy this change to prod?")],
        )
        self.pipeline.build_pipeline()
        self._acknowledge_generated_permissions(code_pipeline, artifacts)

        alerts_stage = str(context("pipeline_alerts_stage") or PRODUCTION_STAGE)
        topic = sns.Topic.from_topic_arn(
            self,
            "AlertsTopic",
            self.format_arn(
                service="sns", resource=topic_name(alerts_stage), arn_format=ArnFormat.NO_RESOURCE_NAME
            ),
        )
        # A notice the rule cannot publish (no prod stack yet, a key or topic policy broken, the
        # topic throttled past the retries) waits here instead of being dropped unseen.
        self.failure_notice_dead_letters = dead_letter_queue(
            self, "FailureNoticeDeadLetters", queue_name=FAILURE_NOTICE_DLQ, retention=DEAD_LETTER_RETENTION
        )
        acknowledge(
            self.failure_notice_dead_letters,
            "SQS3",
            "This queue is itself the dead-letter queue of the pipeline-failure rule's SNS target; "
            "cdk-nag only recognises dead-letter queues of SQS queues and Lambda functions",
        )
        self.failed_rule = events.Rule(
            self,
            "PipelineFailed",
            rule_name=PIPELINE_FAILED_RULE,
            description=f"{PIPELINE_NAME} execution failed -> the {alerts_stage} notification topic (Slack)",
            event_pattern=events.EventPattern(
                source=["aws.codepipeline"],
                detail_type=["CodePipeline Pipeline Execution State Change"],
                detail={"pipeline": [PIPELINE_NAME], "state": ["FAILED"]},
            ),
            targets=[
                targets.SnsTopic(
                    topic,
                    message=events.RuleTargetInput.from_object(
                        {
                            "kind": "pipeline_failed",
                            "title": f"Delivery pipeline {PIPELINE_NAME} failed",
                            "pipeline": events.EventField.from_path("$.detail.pipeline"),
                            "execution_id": events.EventField.from_path("$.detail.execution-id"),
                            "state": events.EventField.from_path("$.detail.state"),
                            "time": events.EventField.time,
                            "region": events.EventField.region,
                        }
                    ),
                    max_event_age=FAILURE_NOTICE_MAX_EVENT_AGE,
                    retry_attempts=FAILURE_NOTICE_RETRY_ATTEMPTS,
                    # CDK adds the queue policy: sqs:SendMessage for events.amazonaws.com, only
                    # from this rule (aws:SourceArn).
                    dead_letter_queue=self.failure_notice_dead_letters,
                )
            ],
        )
        self.failure_notice_alarm = cloudwatch.Alarm(
            self,
            "FailureNoticeDeadLettersAlarm",
            alarm_name=FAILURE_NOTICE_ALARM,
            alarm_description=f"Delivery pipeline failure notices EventBridge could not publish to the "
            f"{alerts_stage} topic wait in {FAILURE_NOTICE_DLQ} (README runbook)",
            metric=self.failure_notice_dead_letters.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        # To the same topic: it reaches Slack when the topic works and only the rule's publish
        # failed; when the topic is missing, the alarm shows in the CloudWatch console.
        self.failure_notice_alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))

    def _acknowledge_generated_permissions(
        self, code_pipeline: codepipeline.Pipeline, artifacts: s3.IBucket
    ) -> None:
        """CDK Pipelines writes these policies itself; each wildcard is scoped as far as it allows.

        Acknowledged on the pipeline's constructs only, not on the stack: the stages below it hold the
        application stacks, whose findings stay checked.
        """
        for scope in (code_pipeline, self.pipeline):
            self._acknowledge_on(scope, artifacts)

    def _acknowledge_on(self, scope: Construct, artifacts: s3.IBucket) -> None:
        acknowledge(
            scope,
            "IAM5",
            "CDK's grants on the pipeline's own artifact bucket and KMS key: every stage reads and writes "
            "the artifacts of its executions (object keys per execution) and re-encrypts them with the key",
            *(
                f"Action::{action}"
                for action in (
                    "kms:GenerateDataKey*",
                    "kms:ReEncrypt*",
                    "s3:Abort*",
                    "s3:DeleteObject*",
                    "s3:GetBucket*",
                    "s3:GetObject*",
                    "s3:List*",
                )
            ),
        )
        acknowledge_wildcards(
            scope,
            "Artifacts of each pipeline execution are objects under keys CodePipeline chooses",
            artifacts.arn_for_objects("*"),
        )
        projects = [self.pipeline.synth_project, self.pipeline.self_mutation_project]
        acknowledge_wildcards(
            scope,
            "CodeBuild names each build's log stream and report group at run time, under the project's "
            "log group and report group prefix",
            *(self._codebuild_log_group(project.project_name) for project in projects),
            *(self._codebuild_report_groups(f"{project.project_name}-*") for project in projects),
        )
        acknowledge_wildcards(
            scope,
            "The asset publishing CodeBuild project is created per asset by CDK Pipelines; its role covers "
            "their log groups and report groups by prefix",
            self._codebuild_log_group("*", suffix=""),
            self._codebuild_report_groups("*"),
        )
        acknowledge_wildcards(
            scope,
            "Self-mutation and asset publishing: codebuild:StartBuild/BatchGetBuilds/StopBuild for the "
            "generated asset projects, cloudformation:DescribeStacks and s3:ListBucket (not scoped by CDK "
            "Pipelines), and sts:AssumeRole on the account's CDK bootstrap roles only (the policy "
            "conditions on the iam:ResourceTag aws-cdk:bootstrap-role)",
            "*",
            f"arn:*:iam::{self.account}:role/*",
        )

    def _codebuild_log_group(self, project: str, suffix: str = ":*") -> str:
        return self.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"/aws/codebuild/{project}{suffix}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def _codebuild_report_groups(self, name: str) -> str:
        return self.format_arn(service="codebuild", resource="report-group", resource_name=name)
