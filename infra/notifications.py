"""The notification topic (alarms, pipeline notices, delivery failures) and its Slack notifier."""

from __future__ import annotations

from aws_cdk import Duration, SecretValue, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from energy_auction.deployment import slack_webhook_secret_name
from energy_auction.orders import RETENTION_SECONDS
from infra.capacity import FUNCTION_MEMORY_MB
from infra.config import NOTIFIER_TIMEOUT_SECONDS, StageConfig, settings_env
from infra.functions import LambdaPackage, ServiceFunction
from infra.nag import acknowledge
from infra.secure import dead_letter_queue

PIPELINE_FAILED_RULE = "energy-auction-delivery-failed"
"""Name of the delivery pipeline's EventBridge rule that publishes to a stage's topic."""

NOTIFIER_RETRY_ATTEMPTS = 2
"""Lambda's retries of a failed SNS event (asynchronous invocation) before it goes to the DLQ."""
NOTIFIER_MAX_EVENT_AGE = Duration.hours(1)
"""How long Lambda keeps trying an event (throttling included) before it goes to the DLQ: a notice
an hour late is better re-published by hand from the queue, where it is kept 14 days."""
DEAD_LETTER_RETENTION = Duration.seconds(RETENTION_SECONDS)
"""14 days, as long as the store keeps a rejected order (so a re-published dead letter is
recognised as delivered or not)."""


def topic_name(stage: str) -> str:
    """The topic's name, known in advance so the delivery pipeline stack can address it."""
    return f"energy-auction-{stage}-notifications"


class Notifications(Construct):
    """An encrypted, SSL-only SNS topic; the notifier Lambda posts each message to Slack."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        package: LambdaPackage,
        table: dynamodb.ITable,
    ):
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # A customer managed key: CloudWatch alarms and EventBridge cannot publish to a topic
        # encrypted with the AWS managed aws/sns key.
        self.key = kms.Key(
            self,
            "TopicKey",
            description=f"{config.resource_prefix}: notification topic encryption",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
            pending_window=Duration.days(7) if not config.is_production else None,
        )
        # AWS services that publish to the topic themselves must be able to use its key.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="Publish from cloudwatch",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                # Only for this account's alarms (confused deputy), as on the topic policy.
                conditions={
                    "ArnLike": {"aws:SourceArn": stack.format_arn(service="cloudwatch", resource="alarm:*")},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="Publish from events",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                # No aws:SourceAccount / aws:SourceArn condition here: the SNS developer guide
                # (sns-key-management, compatibility with AWS services) says they are not
                # supported in a key policy for EventBridge-to-encrypted-topic delivery; with
                # them, EventBridge's publish fails and the delivery failure notice is lost. The
                # topic policy limits EventBridge to the one delivery-failure rule.
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=topic_name(config.stage),
            display_name=f"Energy Auction {config.stage}",
            master_key=self.key,
            enforce_ssl=True,
        )
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": stack.format_arn(service="cloudwatch", resource="alarm:*")},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DeliveryPipelineFailuresPublish",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnEquals": {
                        "aws:SourceArn": stack.format_arn(
                            service="events", resource="rule", resource_name=PIPELINE_FAILED_RULE
                        )
                    }
                },
            )
        )

        # Created blank: the operator puts the webhook URL in (see the README runbook). Until
        # then the notifier logs each notice instead of posting it.
        self.slack_webhook_secret = secretsmanager.Secret(
            self,
            "SlackWebhookSecret",
            secret_name=slack_webhook_secret_name(config.stage),
            description="Slack incoming webhook URL for Energy Auction notices (fill in by hand)",
            secret_string_value=SecretValue.unsafe_plain_text(" "),
            removal_policy=config.removal_policy,
        )
        acknowledge(
            self.slack_webhook_secret,
            "SMG4",
            "A Slack incoming webhook URL cannot be rotated by AWS: a person creates a new one in Slack "
            "and stores it (README runbook: filling the Slack webhook)",
        )
        # SNS invokes the notifier asynchronously: an event that still fails after Lambda's
        # retries lands here (the message body is the SNS event) instead of being dropped.
        self.dead_letters = dead_letter_queue(
            self,
            "NotifierDeadLetters",
            queue_name=f"{config.resource_prefix}-notifier-dlq",
            retention=DEAD_LETTER_RETENTION,
            removal_policy=config.removal_policy,
        )
        # cdk-nag SQS3 (a queue without a DLQ of its own) sees the function's DeadLetterConfig and
        # does not flag this queue: it is a DLQ.
        self.notifier = ServiceFunction(
            self,
            "Notifier",
            config=config,
            package=package,
            handler="notify",
            description="Posts each notification topic message to Slack",
            memory_size=FUNCTION_MEMORY_MB["notify"],
            # Room for the notifier's own retries: 5 attempts of up to 10 s, and Slack's 429
            # Retry-After waits (capped at 30 s), before it fails and Lambda retries the event.
            timeout=Duration.seconds(NOTIFIER_TIMEOUT_SECONDS),
            environment=settings_env(
                backend="aws",
                slack_webhook_secret_id=slack_webhook_secret_name(config.stage),
                orders_table=table.table_name,
                notice_delivery_lease_seconds=config.notice_delivery_lease_seconds,
            ),
            dead_letter_queue=self.dead_letters,
            retry_attempts=NOTIFIER_RETRY_ATTEMPTS,
            max_event_age=NOTIFIER_MAX_EVENT_AGE,
        )
        self.slack_webhook_secret.grant_read(self.notifier.role)
        # A rejection notice is delivered once: the notifier takes, records or gives back its
        # delivery on the order with conditional updates (no reads, no other writes).
        self.notifier.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["dynamodb:UpdateItem"], resources=[table.table_arn])
        )
        self.topic.add_subscription(subscriptions.LambdaSubscription(self.notifier.function))
        if config.alert_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alert_email))
