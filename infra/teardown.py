"""Prepares a non-production stage for `cdk destroy`: CloudFormation cannot delete a bucket that
still holds objects, so this empties the stage's buckets (every version) first; after the stack is
gone it deletes the stage's secrets without the 30-day recovery window, so the stage can be
deployed again under the same names. Uses the caller's AWS credentials.

    python -m infra.teardown empty-buckets dev
    python -m infra.teardown delete-secrets dev
"""

from __future__ import annotations

import sys

import boto3
from botocore.exceptions import ClientError

from energy_auction.deployment import jwt_secret_name, slack_webhook_secret_name, stack_name
from infra.config import PRODUCTION_STAGE

BUCKET_OUTPUTS = ("ResultsBucketName", "AccessLogsBucketName")


def empty_buckets(stage: str) -> None:
    outputs = _stack_outputs(stage)
    s3 = boto3.resource("s3")
    for output in BUCKET_OUTPUTS:
        name = outputs.get(output)
        if name:
            print(f"emptying s3://{name} (all versions)")
            s3.Bucket(name).object_versions.delete()


def delete_secrets(stage: str) -> None:
    client = boto3.client("secretsmanager")
    for name in (jwt_secret_name(stage), slack_webhook_secret_name(stage)):
        try:
            client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
            print(f"deleted secret {name}")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise


def _stack_outputs(stage: str) -> dict[str, str]:
    try:
        stacks = boto3.client("cloudformation").describe_stacks(StackName=stack_name(stage))["Stacks"]
    except ClientError as err:
        if "does not exist" in str(err):
            return {}
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"empty-buckets", "delete-secrets"}:
        print(__doc__, file=sys.stderr)
        return 2
    action, stage = argv
    if stage == PRODUCTION_STAGE:
        print("refusing: prod keeps its data (RETAIN); delete it by hand if you mean to", file=sys.stderr)
        return 1
    {"empty-buckets": empty_buckets, "delete-secrets": delete_secrets}[action](stage)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
