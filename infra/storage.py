"""The orders table and the results bucket (with the pipeline's short-lived work prefix)."""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from energy_auction.adapters.aws import (
    EXPIRES_ATTRIBUTE,
    LEGACY_PENDING_INDEX,
    LIST_SHARD_ATTRIBUTE,
    LISTED_AT_ATTRIBUTE,
    NOTICE_DUE_ATTRIBUTE,
    NOTICE_SHARD_ATTRIBUTE,
    NOTICES_INDEX,
    ORDERS_KEY,
    PENDING_INDEX,
    PENDING_SHARD_ATTRIBUTE,
    TIME_INDEX,
    TRADER_INDEX,
    TRADER_KEY_ATTRIBUTE,
    TTL_ATTRIBUTE,
)
from infra.config import StageConfig
from infra.secure import private_bucket

RESULTS_PREFIX = "orders/"
"""Accepted results: ``orders/<YYYY-MM-DD>/<record_id>.json``."""
WORK_EXPIRY_DAYS = 1
NONCURRENT_VERSION_DAYS = 30
ACCESS_LOG_DAYS = 90


def pending_indexes(config: StageConfig) -> list[str]:
    """The table's pending-orders indexes: the keys-only one, and while a stage is upgraded from
    earlier versions (``legacy_pending_index``) theirs."""
    return [PENDING_INDEX, LEGACY_PENDING_INDEX] if config.legacy_pending_index else [PENDING_INDEX]


class Storage(Construct):
    """DynamoDB orders table (on demand, TTL, PITR, encrypted, pending-orders index) and S3 buckets."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        # The order book: keyed by trader and record_id (Order.key). It replaced the table keyed by
        # record_id alone ("<prefix>-orders"), under a new name, as a key schema cannot change in
        # place; see the README runbook, "Upgrading to the order book".
        self.table = dynamodb.Table(
            self,
            "OrderBook",
            table_name=f"{config.resource_prefix}-order-book",
            partition_key=dynamodb.Attribute(name=ORDERS_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            deletion_protection=config.is_production,
            removal_policy=config.removal_policy,
        )
        # Sparse: only pending orders carry the shard attribute, so FetchResults queries (never
        # scans) exactly the orders waiting for the auction. Keys only: a claim sets attributes the
        # index does not hold, so it writes no index entry; the batch reads the orders themselves.
        shard = dynamodb.Attribute(name=PENDING_SHARD_ATTRIBUTE, type=dynamodb.AttributeType.STRING)
        expiry = dynamodb.Attribute(name=EXPIRES_ATTRIBUTE, type=dynamodb.AttributeType.NUMBER)
        self.table.add_global_secondary_index(
            index_name=PENDING_INDEX,
            partition_key=shard,
            sort_key=expiry,
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        if config.legacy_pending_index:
            # The earlier versions' index, kept for one deploy of an upgraded stage (a table update
            # creates or deletes one index at most); README, "Upgrading to the keys-only pending index".
            self.table.add_global_secondary_index(
                index_name=LEGACY_PENDING_INDEX,
                partition_key=shard,
                sort_key=expiry,
                projection_type=dynamodb.ProjectionType.ALL,
            )
        # The outbox: only a rejected order whose notice is owed carries the shard attribute, so
        # FetchResults finds overdue notices with a query. Keys only: it then reads those orders.
        self.table.add_global_secondary_index(
            index_name=NOTICES_INDEX,
            partition_key=dynamodb.Attribute(name=NOTICE_SHARD_ATTRIBUTE, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=NOTICE_DUE_ATTRIBUTE, type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        # Listings, newest first: a trader's orders, and everyone's over a few shards. Keys only,
        # and keys that never change after a submission, so the pipeline's updates never write to
        # them; a page reads its orders from the table.
        for index_name, partition in (
            (TRADER_INDEX, TRADER_KEY_ATTRIBUTE),
            (TIME_INDEX, LIST_SHARD_ATTRIBUTE),
        ):
            self.table.add_global_secondary_index(
                index_name=index_name,
                partition_key=dynamodb.Attribute(name=partition, type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name=LISTED_AT_ATTRIBUTE, type=dynamodb.AttributeType.STRING),
                projection_type=dynamodb.ProjectionType.KEYS_ONLY,
            )

        self.access_logs = private_bucket(
            self,
            "AccessLogs",
            bucket_name=f"order-results-logs-{config.stage}-{Aws.ACCOUNT_ID}-{Aws.REGION}",
            # SSE-S3: the only encryption a server access log destination supports.
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(ACCESS_LOG_DAYS)),
            ],
            removal_policy=config.removal_policy,
        )
        self.results = private_bucket(
            self,
            "Results",
            bucket_name=f"order-results-{config.stage}-{Aws.ACCOUNT_ID}-{Aws.REGION}",
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="order-results/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-pipeline-work-data",
                    prefix=config.work_prefix,
                    expiration=Duration.days(WORK_EXPIRY_DAYS),
                    noncurrent_version_expiration=Duration.days(WORK_EXPIRY_DAYS),
                ),
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                    expired_object_delete_marker=True,
                ),
            ],
            removal_policy=config.removal_policy,
        )
        self.work_prefix = config.work_prefix
