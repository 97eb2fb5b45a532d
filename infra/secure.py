"""The one way this app makes an S3 bucket or an SQS queue: private and TLS-only."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct


def private_bucket(scope: Construct, construct_id: str, **options: Any) -> s3.Bucket:
    """A bucket no one outside the account reaches: public access blocked, TLS only, objects owned by
    the bucket owner (no ACLs), SSE-S3 unless ``encryption`` says otherwise."""
    return s3.Bucket(
        scope,
        construct_id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        **{"encryption": s3.BucketEncryption.S3_MANAGED, **options},
    )


def private_queue(
    scope: Construct,
    construct_id: str,
    *,
    queue_name: str,
    retention: Duration,
    removal_policy: RemovalPolicy | None = None,
    **options: Any,
) -> sqs.Queue:
    """A queue: SQS-managed encryption (AWS services, SNS included, can send to it without a key
    grant), TLS only, messages kept for ``retention``; ``options`` are the Queue's others."""
    return sqs.Queue(
        scope,
        construct_id,
        queue_name=queue_name,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=retention,
        removal_policy=removal_policy,
        **options,
    )


def dead_letter_queue(
    scope: Construct,
    construct_id: str,
    *,
    queue_name: str,
    retention: Duration,
    removal_policy: RemovalPolicy | None = None,
) -> sqs.Queue:
    """A dead-letter queue: a :func:`private_queue` that other queues or services send to."""
    return private_queue(
        scope, construct_id, queue_name=queue_name, retention=retention, removal_policy=removal_policy
    )
