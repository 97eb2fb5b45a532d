"""The orders table and the results bucket: durable, encrypted, private, and RETAIN in prod."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App
from infra.config import ConfigError, StageConfig

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
from tests.infra.conftest import Assembly, Synthesized, _assembly
from tests.infra.templates import functions, logical_id, resources_for, text


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
    # Keys only: a claim sets attributes the index does not hold, so it writes no index entry
    assert indexes[PENDING_INDEX]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
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


@pytest.fixture(scope="module")
def upgrading(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """The app as the first deploy of an upgraded stage synthesizes it (``-c legacy_pending_index=true``)."""
    return _assembly(tmp_path_factory.mktemp("cdk.out"), legacy_pending_index="true")


def test_an_upgraded_stage_keeps_the_earlier_pending_index_for_one_deploy(
    dev: Synthesized, upgrading: Assembly
) -> None:
    # With the flag, the earlier index (projection ALL) is declared beside the keys-only one, on the
    # same keys, so the first deploy only creates the new one (one index per table update)
    _, table = upgrading.dev.one("AWS::DynamoDB::Table")
    indexes = {i["IndexName"]: i for i in table["Properties"]["GlobalSecondaryIndexes"]}
    assert set(indexes) == {PENDING_INDEX, LEGACY_PENDING_INDEX, NOTICES_INDEX, TRADER_INDEX, TIME_INDEX}
    assert indexes[LEGACY_PENDING_INDEX]["Projection"] == {"ProjectionType": "ALL"}
    assert indexes[LEGACY_PENDING_INDEX]["KeySchema"] == indexes[PENDING_INDEX]["KeySchema"]
    # and the functions not yet updated may still query it; without the flag (the next deploy) it
    # is gone, with its grant, so that deploy only deletes it
    granted = {text(r).split("/index/")[1][: -len('"]]}')] for r in _queries(upgrading.dev)}
    assert granted == {PENDING_INDEX, LEGACY_PENDING_INDEX, NOTICES_INDEX}
    _, plain = dev.one("AWS::DynamoDB::Table")
    assert LEGACY_PENDING_INDEX not in {i["IndexName"] for i in plain["Properties"]["GlobalSecondaryIndexes"]}
    assert {text(r).split("/index/")[1][: -len('"]]}')] for r in _queries(dev)} == {
        PENDING_INDEX,
        NOTICES_INDEX,
    }


def test_the_upgrade_flag_must_be_true_or_false() -> None:
    app = App(context={"legacy_pending_index": "yes"})
    with pytest.raises(ConfigError, match="legacy_pending_index"):
        StageConfig.from_context(app.node)
    assert StageConfig.from_context(App(context={"legacy_pending_index": True}).node).legacy_pending_index
    assert not StageConfig.from_context(
        App(context={"legacy_pending_index": "false"}).node
    ).legacy_pending_index
    assert not StageConfig.from_context(App().node).legacy_pending_index


def _queries(stack: Synthesized) -> list[Any]:
    role = logical_id(functions(stack)["fetch_results"][1]["Properties"]["Role"])
    return resources_for(stack, role, "dynamodb:Query")


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
