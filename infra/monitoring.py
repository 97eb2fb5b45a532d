"""CloudWatch alarms (each published to the notification topic) and the service's dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from energy_auction.deployment import SERVICE
from energy_auction.observability import NAMESPACE
from infra.config import StageConfig
from infra.functions import ServiceFunction

PERIOD = Duration.minutes(5)


@dataclass(frozen=True)
class WatchedFunction:
    """A function and how many errors in one period are worth waking someone for."""

    label: str
    function: ServiceFunction
    errors_threshold: int = 1


class Monitoring(Construct):
    """Alarms on the API, every function, the state machine and the schedule; one dashboard."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        topic: sns.ITopic,
        api: apigw.RestApi,
        functions: list[WatchedFunction],
        state_machine: sfn.StateMachine,
        schedule: events.Rule,
        notice_queue: sqs.IQueue,
        notifier_dead_letters: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._action = actions.SnsAction(topic)
        self.alarms: list[cloudwatch.Alarm] = []

        api_5xx = api.metric_server_error(period=PERIOD, statistic="Sum")
        api_latency = api.metric_latency(period=PERIOD, statistic="p99")
        self._alarm("Api5xx", api_5xx, 1, "The API answered 5xx: a handler, authorizer or DynamoDB failure")
        self._alarm(
            "ApiLatencyP99",
            api_latency,
            config.api_latency_p99_ms,
            f"API p99 latency above {config.api_latency_p99_ms} ms for 15 minutes",
            evaluation_periods=3,
        )
        for watched in functions:
            fn = watched.function.function
            self._alarm(
                f"{watched.label}Errors",
                fn.metric_errors(period=PERIOD, statistic="Sum"),
                watched.errors_threshold,
                f"{watched.label}: {watched.errors_threshold} or more errors in 5 minutes",
            )
            self._alarm(
                f"{watched.label}Throttles",
                fn.metric_throttles(period=PERIOD, statistic="Sum"),
                1,
                f"{watched.label}: invocations throttled (account or reserved concurrency exhausted)",
            )
        self._alarm(
            "PipelineFailed",
            state_machine.metric_failed(period=PERIOD, statistic="Sum"),
            1,
            "An auction pipeline execution failed (results not ready, or FetchResults kept failing)",
        )
        self._alarm(
            "PipelineTimedOut",
            state_machine.metric_timed_out(period=PERIOD, statistic="Sum"),
            1,
            f"An auction pipeline execution ran past {config.pipeline_timeout_seconds} s",
        )
        self._alarm(
            "ScheduleFailedInvocations",
            cloudwatch.Metric(
                namespace="AWS/Events",
                metric_name="FailedInvocations",
                dimensions_map={"RuleName": schedule.rule_name},
                period=PERIOD,
                statistic="Sum",
            ),
            1,
            "EventBridge could not start the auction pipeline",
        )
        undelivered = notifier_dead_letters.metric_approximate_number_of_messages_visible(
            period=PERIOD, statistic="Maximum"
        )
        self._alarm(
            "NotifierDeadLetters",
            undelivered,
            1,
            "Notices Slack never got: the notifier failed on them each time the notice queue gave them "
            "to it, and they wait in its dead-letter queue (README runbook: redrive them once Slack works)",
        )
        # The notifier reports a notice it could not post as a batch item failure, which is no
        # Lambda error: its own metric says so, long before the notice reaches the dead letters.
        failed_notices = self._notifier_metric("NotificationsFailed")
        self._alarm(
            "NotificationsFailed",
            failed_notices,
            1,
            "The notifier could not deliver notices (Slack refused or was down, or the order table "
            "failed); the notice queue gives them to it again",
        )

        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=f"{config.resource_prefix}", default_interval=Duration.hours(6)
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=24, height=4)
        )
        # On the dashboard itself: this alarm's own notice goes through the topic to Slack, which
        # may be what is failing.
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Undelivered notices (notifier dead-letter queue)",
                left=[undelivered],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=1, label="any message: redrive (runbook)")
                ],
                width=12,
                height=4,
            ),
            cloudwatch.GraphWidget(
                title="Notices to Slack (notice queue, digests)",
                left=[
                    notice_queue.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum"
                    ),
                    self._notifier_metric("NoticesDigested"),
                    self._notifier_metric("SlackMessagesPosted"),
                    failed_notices,
                ],
                right=[
                    notice_queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum")
                ],
                width=12,
                height=4,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="API requests and errors",
                left=[
                    api.metric_count(period=PERIOD, statistic="Sum"),
                    api.metric_client_error(period=PERIOD, statistic="Sum"),
                    api_5xx,
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="API latency",
                left=[api.metric_latency(period=PERIOD, statistic="p50"), api_latency],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            *(
                cloudwatch.GraphWidget(
                    title=f"Lambda {watched.label}",
                    left=[
                        watched.function.function.metric_invocations(period=PERIOD, statistic="Sum"),
                        watched.function.function.metric_errors(period=PERIOD, statistic="Sum"),
                        watched.function.function.metric_throttles(period=PERIOD, statistic="Sum"),
                    ],
                    right=[watched.function.function.metric_duration(period=PERIOD, statistic="p99")],
                    width=8,
                )
                for watched in functions
            )
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Auction pipeline executions",
                left=[
                    state_machine.metric_started(period=PERIOD, statistic="Sum"),
                    state_machine.metric_succeeded(period=PERIOD, statistic="Sum"),
                    state_machine.metric_failed(period=PERIOD, statistic="Sum"),
                    state_machine.metric_timed_out(period=PERIOD, statistic="Sum"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Auction pipeline duration",
                left=[state_machine.metric_time(period=PERIOD, statistic="p99")],
                width=12,
            ),
        )

    @staticmethod
    def _notifier_metric(name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=name,
            dimensions_map={"service": SERVICE},
            period=PERIOD,
            statistic="Sum",
        )

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=f"{self._config.resource_prefix}-{construct_id}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        self.alarms.append(alarm)
