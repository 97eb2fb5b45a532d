"""The application stack of one stage: composes the capabilities, nothing else."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from energy_auction.deployment import SERVICE
from infra.api import OrdersApi
from infra.config import StageConfig
from infra.functions import LambdaPackage
from infra.monitoring import Monitoring, WatchedFunction
from infra.notifications import Notifications
from infra.pipeline import AuctionPipeline
from infra.storage import Storage


class EnergyAuctionStack(Stack):
    """API, storage, auction pipeline, notifications and monitoring of one stage."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, description=f"Energy Auction ({config.stage})", **kwargs)
        Tags.of(self).add("service", SERVICE)
        Tags.of(self).add("stage", config.stage)

        package = LambdaPackage(self, "LambdaPackage")
        storage = Storage(self, "Storage", config=config)
        notifications = Notifications(
            self, "Notifications", config=config, package=package, table=storage.table
        )
        api = OrdersApi(self, "Api", config=config, package=package, table=storage.table)
        pipeline = AuctionPipeline(
            self,
            "AuctionPipeline",
            config=config,
            package=package,
            table=storage.table,
            bucket=storage.results,
            topic=notifications.topic,
        )
        Monitoring(
            self,
            "Monitoring",
            config=config,
            topic=notifications.topic,
            api=api.rest_api,
            functions=[
                WatchedFunction("Api", api.handler),
                WatchedFunction(
                    "Authorizer", api.authorizer_function, config.authorizer_errors_per_5_minutes
                ),
                WatchedFunction("FetchResults", pipeline.fetch_results),
                WatchedFunction("ProcessOrder", pipeline.process_order, config.rejected_orders_per_5_minutes),
                WatchedFunction("Notifier", notifications.notifier),
            ],
            state_machine=pipeline.state_machine,
            schedule=pipeline.schedule,
            notice_queue=notifications.queue,
            notifier_dead_letters=notifications.dead_letters,
        )

        CfnOutput(self, "ApiUrl", value=api.rest_api.url, description="Base URL of the orders API")
        CfnOutput(self, "OrdersTableName", value=storage.table.table_name)
        CfnOutput(self, "ResultsBucketName", value=storage.results.bucket_name)
        CfnOutput(self, "AccessLogsBucketName", value=storage.access_logs.bucket_name)
        CfnOutput(self, "StateMachineArn", value=pipeline.state_machine.state_machine_arn)
        CfnOutput(self, "NotificationTopicArn", value=notifications.topic.topic_arn)
        CfnOutput(
            self,
            "NotifierDeadLetterQueueUrl",
            value=notifications.dead_letters.queue_url,
            description="Notices the notifier could not post to Slack, to redrive (README runbook)",
        )
        CfnOutput(self, "JwtSecretName", value=api.jwt_secret.secret_name)
        CfnOutput(self, "SlackWebhookSecretName", value=notifications.slack_webhook_secret.secret_name)
