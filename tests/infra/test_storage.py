"""The orders table and the results bucket: durable, encrypted, private, and RETAIN in prod."""

from __future__ import annotations

import json
from typing import Any

from energy_auction.adapters.aws import (
    EXPIRES_ATTRIBUTE,
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
from tests.infra.conftest import Synthesized
from tests.infra.templates import logical_id, text


def _buckets(stack: Synthesized) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results bucket, access log bucket), told apart by which one logs to the other."""
    buckets = stack.resources("AWS::S3::Bucket")
    (results_id,) = [lid for lid, b in buckets.items() if "LoggingConfiguration" in b["Properties"]]
    access_id = logical_id(buckets[results_id]["Properties"]["LoggingConfiguration"]["DestinationBucketName"])
    return buckets[results_id], buckets[access_id]


def test_orders_table_is_on_demand_with_ttl_pitr_and_encryption(stage_stack: Synthesized) -> None:
    _, table = stage_stack.one("AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": ORDERS_KEY, "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_the_indexes_are_what_the_pipeline_queries(stage_stack: Synthesized) -> None:
    # The same indexes as tests.adapters.stores.create_orders_table, which the store tests run on
    _, table = stage_stack.one("AWS::DynamoDB::Table")
    indexes = {i["IndexName"]: i for i in table["Properties"]["GlobalSecondaryIndexes"]}
    assert set(indexes) == {PENDING_INDEX, NOTICES_INDEX, TRADER_INDEX, TIME_INDEX}
    for listing, partition in ((TRADER_INDEX, TRADER_KEY_ATTRIBUTE), (TIME_INDEX, LIST_SHARD_ATTRIBUTE)):
        assert indexes[listing]["KeySchema"] == [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": LISTED_AT_ATTRIBUTE, "KeyType": "RANGE"},
        ]
        assert indexes[listing]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert indexes[PENDING_INDEX]["KeySchema"] == [
        {"AttributeName": PENDING_SHARD_ATTRIBUTE, "KeyType": "HASH"},
        {"AttributeName": EXPIRES_ATTRIBUTE, "KeyType": "RANGE"},
    ]
    assert indexes[PENDING_INDEX]["Projection"] == {"ProjectionType": "ALL"}
    assert indexes[NOTICES_INDEX]["KeySchema"] == [
        {"AttributeName": NOTICE_SHARD_ATTRIBUTE, "KeyType": "HASH"},
        {"AttributeName": NOTICE_DUE_ATTRIBUTE, "KeyType": "RANGE"},
    ]
    assert indexes[NOTICES_INDEX]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    types = {a["AttributeName"]: a["AttributeType"] for a in table["Properties"]["AttributeDefinitions"]}
    assert types == {
        ORDERS_KEY: "S",
        PENDING_SHARD_ATTRIBUTE: "S",
        EXPIRES_ATTRIBUTE: "N",
        NOTICE_SHARD_ATTRIBUTE: "S",
        TRADER_KEY_ATTRIBUTE: "S",
        LIST_SHARD_ATTRIBUTE: "S",
        LISTED_AT_ATTRIBUTE: "S",
        NOTICE_DUE_ATTRIBUTE: "N",
    }


def test_prod_data_is_retained_and_dev_data_is_destroyed(dev: Synthesized, prod: Synthesized) -> None:
    for type_ in ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SecretsManager::Secret", "AWS::KMS::Key"):
        assert {r["DeletionPolicy"] for r in prod.resources(type_).values()} == {"Retain"}, type_
        assert {r["DeletionPolicy"] for r in dev.resources(type_).values()} == {"Delete"}, type_
    assert prod.one("AWS::DynamoDB::Table")[1]["Properties"]["DeletionProtectionEnabled"] is True
    assert dev.one("AWS::DynamoDB::Table")[1]["Properties"]["DeletionProtectionEnabled"] is False


def test_buckets_are_private_encrypted_and_ssl_only(stage_stack: Synthesized) -> None:
    buckets = stage_stack.resources("AWS::S3::Bucket")
    assert len(buckets) == 2
    for lid, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        (policy,) = [
            p
            for p in stage_stack.resources("AWS::S3::BucketPolicy").values()
            if p["Properties"]["Bucket"] == {"Ref": lid}
        ]
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies), lid


def test_results_bucket_is_versioned_logged_and_named(stage_stack: Synthesized) -> None:
    results, _ = _buckets(stage_stack)
    props = results["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "order-results/"
    assert text(props["BucketName"]).startswith('{"Fn::Join": ["", ["order-results-')


def test_work_prefix_expires_within_a_day_and_old_versions_go(stage_stack: Synthesized) -> None:
    results, access_logs = _buckets(stage_stack)
    rules = {r["Id"]: r for r in results["Properties"]["LifecycleConfiguration"]["Rules"]}
    work = rules["expire-pipeline-work-data"]
    assert (work["Prefix"], work["Status"], work["ExpirationInDays"]) == ("work/", "Enabled", 1)
    assert work["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    versions = rules["expire-old-versions"]
    assert "Prefix" not in versions
    assert versions["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert versions["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    assert json.dumps(access_logs["Properties"]["LifecycleConfiguration"]).count("ExpirationInDays") == 1


def test_access_log_bucket_accepts_s3_server_access_logs(stage_stack: Synthesized) -> None:
    results, _ = _buckets(stage_stack)
    access_id = logical_id(results["Properties"]["LoggingConfiguration"]["DestinationBucketName"])
    (policy,) = [
        p
        for p in stage_stack.resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": access_id}
    ]
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert any(s["Principal"] == {"Service": "logging.s3.amazonaws.com"} for s in allows)
