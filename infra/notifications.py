"""The notification topic (alarms, pipeline notices, delivery failures), the notice queue that
buffers it for Slack, and the notifier that posts digests from that queue."""

from __future__ import annotations

from aws_cdk import Duration, SecretValue, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from energy_auction.deployment import slack_webhook_secret_name
from energy_auction.digest import BATCH_SIZE
from energy_auction.orders import RETENTION_SECONDS
from infra.capacity import FUNCTION_MEMORY_MB, NOTICE_BATCHING_WINDOW_SECONDS
from infra.config import NOTIFIER_TIMEOUT_SECONDS, StageConfig, settings_env
from infra.functions import LambdaPackage, ServiceFunction
from infra.nag import acknowledge
from infra.secure import dead_letter_queue, private_queue

PIPELINE_FAILED_RULE = "energy-auction-delivery-failed"
"""Name of the delivery pipeline's EventBridge rule that publishes to a stage's topic."""

NOTICE_BATCHING_WINDOW = Duration.seconds(NOTICE_BATCHING_WINDOW_SECONDS)
"""How long the event source mapping gathers notices before it invokes the notifier (unless a
batch fills first): a burst of rejections arrives as one batch, so as one digest. Declared in
``infra.capacity``, whose cost model bills the notifier per batch."""
NOTIFIER_MAX_CONCURRENCY = 2
"""Notifier invocations at once: the event source mapping's MaximumConcurrency, whose least value
is 2. Reserved concurrency would bound the function, not the mapping: the mapping does not see it
and sends more batches than the function may run, which are throttled, and each throttled receive
counts towards the dead-letter queue (Lambda developer guide: SQS scaling). Each notifier keeps
MIN_POST_INTERVAL_SECONDS between its own posts, so a channel gets at most 2 messages per 3 s."""
NOTICE_MAX_RECEIVES = 5
"""Deliveries of one notice the notifier may fail (or be throttled on) before SQS moves it to the
dead-letter queue: with the visibility timeout, about an hour and a half of a Slack that is down."""
NOTICE_VISIBILITY_TIMEOUT = Duration.seconds(
    6 * NOTIFIER_TIMEOUT_SECONDS + NOTICE_BATCHING_WINDOW.to_seconds()
)
"""Six times the notifier's timeout, plus the batching window (Lambda developer guide: configuring
a queue for Lambda): room for Lambda's own retries of a throttled batch. A notice reported failed
comes back after it."""
NOTICE_RETENTION = Duration.days(4)
"""How long the queue keeps a notice: shorter than its dead-letter queue's, as SQS advises (a
message keeps its first enqueue time when it moves there)."""
DEAD_LETTER_RETENTION = Duration.seconds(RETENTION_SECONDS)
"""14 days, as long as the store keeps a rejected order (so a redriven dead letter is recognised
as delivered or not)."""


def topic_name(stage: str) -> str:
    """The topic's name, known in advance so the delivery pipeline stack can address it."""
    return f"energy-auction-{stage}-notifications"


class Notifications(Construct):
    """An encrypted, SSL-only SNS topic; an encrypted, SSL-only queue subscribed to it; the notifier
    Lambda that posts the queue's notices to Slack as digests."""

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
        # The topic's notices wait in a queue for the notifier, which takes them in batches and
        # posts digests: Slack takes about one message a second per webhook, a run rejects more.
        # A notice the notifier fails on NOTICE_MAX_RECEIVES times moves to the dead-letter queue
        # (its body the SNS envelope), to be redriven once Slack works (README runbook).
        self.dead_letters = dead_letter_queue(
            self,
            "NotifierDeadLetters",
            queue_name=f"{config.resource_prefix}-notifier-dlq",
            retention=DEAD_LETTER_RETENTION,
            removal_policy=config.removal_policy,
        )
        self.queue = private_queue(
            self,
            "NoticeQueue",
            queue_name=f"{config.resource_prefix}-notices",
            retention=NOTICE_RETENTION,
            visibility_timeout=NOTICE_VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=NOTICE_MAX_RECEIVES, queue=self.dead_letters
            ),
        )
        # Not raw: each message is the SNS envelope, with the subject, the kind attribute, the
        # message id and the time the notifier reads.
        self.topic.add_subscription(subscriptions.SqsSubscription(self.queue, raw_message_delivery=False))
        self.notifier = ServiceFunction(
            self,
            "Notifier",
            config=config,
            package=package,
            handler="notify",
            description="Posts the notice queue's messages to Slack as digests",
            memory_size=FUNCTION_MEMORY_MB["notify"],
            # Room for a batch: its rejections' conditional writes, and a few posts, each with up
            # to 5 attempts of 10 s and Slack's 429 Retry-After waits (capped at 30 s).
            timeout=Duration.seconds(NOTIFIER_TIMEOUT_SECONDS),
            environment=settings_env(
                backend="aws",
                slack_webhook_secret_id=slack_webhook_secret_name(config.stage),
                orders_table=table.table_name,
                notice_delivery_lease_seconds=config.notice_delivery_lease_seconds,
            ),
        )
        # CDK grants the role what the mapping polls with (receive, delete, change visibility,
        # the queue's attributes); the handler itself never calls SQS.
        self.notifier.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=BATCH_SIZE,
                max_batching_window=NOTICE_BATCHING_WINDOW,
                report_batch_item_failures=True,
                max_concurrency=NOTIFIER_MAX_CONCURRENCY,
            )
        )
        self.slack_webhook_secret.grant_read(self.notifier.role)
        # A rejection notice is delivered once: the notifier takes, records or gives back its
        # delivery on the order with conditional updates (no reads, no other writes).
        self.notifier.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["dynamodb:UpdateItem"], resources=[table.table_arn])
        )
        # Every notice reaches e-mail as it is published, digests or not.
        if config.alert_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alert_email))
