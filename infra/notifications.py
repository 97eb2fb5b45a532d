"""The notification topic (alarms, pipeline notices, delivery failures) and its Slack notifier."""

from __future__ import annotations

from aws_cdk import Duration, SecretValue, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from energy_auction.deployment import slack_webhook_secret_name
from infra.config import StageConfig, settings_env
from infra.functions import LambdaPackage, ServiceFunction
from infra.nag import acknowledge

PIPELINE_FAILED_RULE = "energy-auction-delivery-failed"
"""Name of the delivery pipeline's EventBridge rule that publishes to a stage's topic."""

# AWS services that publish to the topic themselves and so must be able to use its key.
_PUBLISHING_SERVICES = ("cloudwatch.amazonaws.com", "events.amazonaws.com")


def topic_name(stage: str) -> str:
    """The topic's name, known in advance so the delivery pipeline stack can address it."""
    return f"energy-auction-{stage}-notifications"


class Notifications(Construct):
    """An encrypted, SSL-only SNS topic; the notifier Lambda posts each message to Slack."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, package: LambdaPackage):
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
        for service in _PUBLISHING_SERVICES:
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=f"Publish from {service.split('.')[0]}",
                    principals=[iam.ServicePrincipal(service)],
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    resources=["*"],  # in a key policy, "*" is this key
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
        self.notifier = ServiceFunction(
            self,
            "Notifier",
            config=config,
            package=package,
            handler="notify",
            description="Posts each notification topic message to Slack",
            memory_size=256,
            # Room for the notifier's own retries: 5 attempts of up to 10 s, and Slack's 429
            # Retry-After waits (capped at 30 s), before it fails and Lambda retries the event.
            timeout=Duration.minutes(3),
            environment=settings_env(
                backend="aws", slack_webhook_secret_id=slack_webhook_secret_name(config.stage)
            ),
        )
        self.slack_webhook_secret.grant_read(self.notifier.role)
        self.topic.add_subscription(subscriptions.LambdaSubscription(self.notifier.function))
        if config.alert_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alert_email))
