"""A synthesized stage as moto holds it: its table, buckets, topic, queue and secrets under the
names the template gives them, and each function's settings from its deployed environment.

A handler run on a container built from :meth:`DeployedStage.settings` reads exactly the
variables CloudFormation would give its function, and calls the resources by the names they would
have in moto's account and region, so the ARNs it touches are the ARNs the template's policies
name (see ``tests/infra/permissions.Resolver``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.core.models import DEFAULT_ACCOUNT_ID

from energy_auction.settings import Settings
from tests.adapters.stores import create_orders_table
from tests.infra.conftest import Synthesized
from tests.infra.permissions import Resolver
from tests.infra.templates import functions

ACCOUNT = DEFAULT_ACCOUNT_ID
REGION = "eu-west-1"


@dataclass
class DeployedStage:
    stack: Synthesized
    resolver: Resolver
    secret_values: dict[str, str] = field(default_factory=dict)
    """Secret name -> the value it was created with (generated ones included)."""

    def names(self, kind: str) -> dict[str, str]:
        """Logical id -> physical name of the template's resources of one type."""
        return {lid: self.resolver.name(lid) for lid in self.stack.resources(kind)}

    def one(self, kind: str) -> str:
        """The physical name of the template's only resource of ``kind``."""
        (name,) = self.names(kind).values()
        return name

    def environment(self, function: str) -> dict[str, str]:
        """The function's variables as CloudFormation sets them, plus the region Lambda sets."""
        variables = functions(self.stack)[function][1]["Properties"]["Environment"]["Variables"]
        return {name: self.resolver.resolve(value) for name, value in variables.items()} | {
            "AWS_REGION": REGION
        }

    def settings(self, function: str, **overrides: Any) -> Settings:
        return Settings.from_env(self.environment(function), **overrides)


def create_stage(stack: Synthesized, *, buckets: bool = True) -> DeployedStage:
    """Create the stage's resources in moto (call inside ``mock_aws``); ``buckets=False`` leaves the
    buckets to the caller (the local pipeline engine creates its work bucket itself)."""
    stage = DeployedStage(stack, Resolver(stack, ACCOUNT, REGION))
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for name in stage.names("AWS::DynamoDB::Table").values():
        create_orders_table(dynamodb, name)
    if buckets:
        s3 = boto3.client("s3", region_name=REGION)
        for name in stage.names("AWS::S3::Bucket").values():
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})  # type: ignore[typeddict-item]
    sns = boto3.client("sns", region_name=REGION)
    for lid, name in stage.names("AWS::SNS::Topic").items():
        arn = sns.create_topic(Name=name)["TopicArn"]
        assert arn == stage.resolver.ref(lid), "moto's topic ARN is not the one the template resolves to"
    sqs = boto3.client("sqs", region_name=REGION)
    for name in stage.names("AWS::SQS::Queue").values():
        sqs.create_queue(QueueName=name)
    manager = boto3.client("secretsmanager", region_name=REGION)
    for lid, name in stage.names("AWS::SecretsManager::Secret").items():
        properties = stack.template["Resources"][lid]["Properties"]
        value = properties.get("SecretString") or secrets.token_urlsafe(48)  # generated at deploy
        manager.create_secret(Name=name, SecretString=value)
        stage.secret_values[name] = value
    return stage
