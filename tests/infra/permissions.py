"""What IAM needs for a recorded AWS call, what a synthesized role allows, and the difference.

This module is the one place that says how a call maps to IAM:

- :func:`permissions_for`: the actions and resource ARNs one API call is authorised as. A DynamoDB,
  Secrets Manager or SQS operation is the action of the same name on the table, secret or queue its
  parameters name, except: ``TransactWriteItems`` is authorised item by item as ``PutItem``,
  ``UpdateItem``, ``DeleteItem`` or ``ConditionCheckItem`` (``TransactGetItems`` as ``GetItem``)
  on each item's table; ``BatchGetItem``/``BatchWriteItem`` on every table they name; a ``Query``
  or ``Scan`` with ``IndexName`` on ``<table ARN>/index/<name>``; a secret's ARN ends in six
  characters Secrets Manager chooses (``<name>-??????`` when the call gives a name); the ``*Batch``
  SQS operations are their single actions. S3 operations are the actions in ``S3_ACTIONS``, on
  ``<bucket ARN>/<key>`` when they name a key; SNS ``Publish`` is on its ``TopicArn`` (or
  ``TargetArn``). Any other call is an :class:`UnmappedCall`, so a new kind of call fails the test
  until its rule is written here.
- :func:`implied_permissions`: what IAM also evaluates for a call, against the template: ``Publish``
  to a topic encrypted with a customer managed KMS key needs ``kms:GenerateDataKey`` and
  ``kms:Decrypt`` on that key. A call on a table, bucket or secret encrypted with a customer
  managed key fails here until its rule is written.
- :data:`RUNTIME_PERMISSIONS`: what a role may allow that no handler call needs, because Lambda
  uses the role itself (logs, X-Ray, the queue an event source mapping polls) or CDK grants it
  alongside (see each reason). These are the only exceptions to "a role allows nothing its
  function never does".

The template's intrinsics are resolved as CloudFormation would in one account and region
(:class:`Resolver`): ``Ref``, ``Fn::GetAtt`` and ``Fn::Join`` become the ARNs (or ARN patterns)
of the table, bucket, topic, secret, key, queue or log group they name, so a grant on
``<bucket ARN>/orders/*`` matches a ``PutObject`` on ``orders/2026-12-01/x.json`` of that bucket
and no other, and a ``Query`` on index ``owed-notices`` needs a grant on ``<table>/index/owed-notices``
(or a wildcard that covers it). Resource patterns match as IAM matches them: ``*`` any run of
characters, ``?`` one character, actions case-insensitively.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from tests.aws_calls import AwsCall
from tests.infra.conftest import Synthesized
from tests.infra.templates import functions, logical_id, statements


class UnmappedCall(AssertionError):
    """A recorded call this module has no IAM rule for (add one to :func:`permissions_for`)."""


@dataclass(frozen=True, order=True)
class Permission:
    """One action on one resource ARN, as IAM evaluates a request."""

    action: str
    resource: str

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


# --- what a call is authorised as

_TRANSACT_WRITE_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
S3_ACTIONS = {
    "PutObject": "s3:PutObject",
    # A multipart upload is authorised as PutObject, but for its abort (Amazon S3 User Guide,
    # "Multipart upload API and permissions").
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "DeleteObject": "s3:DeleteObject",
    "ListObjectsV2": "s3:ListBucket",
}
"""The IAM action of each S3 operation with a rule here (S3 names several of them differently);
any other S3 operation is an :class:`UnmappedCall` until its rule is written."""
_SQS_ACTIONS = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage"}


def permissions_for(call: AwsCall, account: str) -> list[Permission]:
    """The permissions IAM evaluates for ``call``, made in ``account``."""
    params, service, operation = call.params, call.service, call.operation
    prefix = f"arn:aws:{service}:{call.region}:{account}"
    if service == "dynamodb":

        def table(name: str) -> str:
            return name if name.startswith("arn:") else f"{prefix}:table/{name}"

        if operation == "TransactWriteItems":
            found = []
            for item in params["TransactItems"]:
                ((kind, request),) = item.items()
                found.append(
                    Permission(f"dynamodb:{_TRANSACT_WRITE_ACTIONS[kind]}", table(request["TableName"]))
                )
            return found
        if operation == "TransactGetItems":
            return [
                Permission("dynamodb:GetItem", table(item["Get"]["TableName"]))
                for item in params["TransactItems"]
            ]
        if operation in {"BatchGetItem", "BatchWriteItem"}:
            return [Permission(f"dynamodb:{operation}", table(name)) for name in params["RequestItems"]]
        if "TableName" in params:
            index = f"/index/{params['IndexName']}" if params.get("IndexName") else ""
            return [Permission(f"dynamodb:{operation}", table(params["TableName"]) + index)]
    if service == "s3" and operation in S3_ACTIONS and "Bucket" in params:
        key = f"/{params['Key']}" if "Key" in params else ""
        return [Permission(S3_ACTIONS[operation], f"arn:aws:s3:::{params['Bucket']}{key}")]
    if service == "sns" and operation in {"Publish", "PublishBatch"}:
        return [Permission("sns:Publish", params.get("TopicArn") or params["TargetArn"])]
    if service == "secretsmanager" and "SecretId" in params:
        secret = str(params["SecretId"])
        arn = secret if secret.startswith("arn:") else f"{prefix}:secret:{secret}-??????"
        return [Permission(f"secretsmanager:{operation}", arn)]
    if service == "sqs" and "QueueUrl" in params:
        name = str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[1]
        return [Permission(f"sqs:{_SQS_ACTIONS.get(operation, operation)}", f"{prefix}:{name}")]
    raise UnmappedCall(
        f"no IAM rule for {call} (parameters {sorted(params)}): add one to permissions_for in "
        "tests/infra/permissions.py"
    )


# --- the template's values, as CloudFormation resolves them in one account and region

_NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Lambda::Function": "FunctionName",
}


class Resolver:
    """Resolves ``Ref``, ``Fn::GetAtt`` and ``Fn::Join`` of a template as CloudFormation would.

    A resource's physical name is its name property (``TableName``, ``BucketName``, ...), or its
    logical id when it has none (a KMS key, an unnamed resource). A secret's ARN ends in six
    characters Secrets Manager chooses: it resolves to the pattern ``...:secret:<name>-??????``.
    """

    def __init__(self, stack: Synthesized, account: str, region: str) -> None:
        self.resources: dict[str, dict[str, Any]] = stack.template["Resources"]
        self.account = account
        self.region = region
        self._pseudo = {
            "AWS::AccountId": account,
            "AWS::Region": region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def resolve(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref":
                return self._pseudo[argument] if argument in self._pseudo else self.ref(argument)
            if function == "Fn::GetAtt":
                return self.attribute(argument[0], argument[1])
            if function == "Fn::Join":
                separator, parts = argument
                return str(separator).join(self.resolve(part) for part in parts)
        raise AssertionError(f"cannot resolve {json.dumps(value)}: add the intrinsic to Resolver")

    def type_of(self, logical_id: str) -> str:
        return str(self.resources[logical_id]["Type"])

    def name(self, logical_id: str) -> str:
        prop = _NAME_PROPERTY.get(self.type_of(logical_id))
        value = self.resources[logical_id].get("Properties", {}).get(prop) if prop else None
        return logical_id if value is None else self.resolve(value)

    def ref(self, logical_id: str) -> str:
        kind, name = self.type_of(logical_id), self.name(logical_id)
        region, account = self.region, self.account
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{region}:{account}:{name}"
        if kind == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{region}:{account}:secret:{name}-??????"
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{region}.amazonaws.com/{account}/{name}"
        return name  # tables, buckets, log groups, functions, keys (the key id): their name

    def attribute(self, logical_id: str, attribute: str) -> str:
        kind, name = self.type_of(logical_id), self.name(logical_id)
        region, account = self.region, self.account
        arns = {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{region}:{account}:table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{region}:{account}:{name}",
            "AWS::KMS::Key": f"arn:aws:kms:{region}:{account}:key/{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{region}:{account}:log-group:{name}:*",
            "AWS::Lambda::Function": f"arn:aws:lambda:{region}:{account}:function:{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{account}:role/{name}",
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if attribute == "TopicArn" and kind == "AWS::SNS::Topic":
            return self.ref(logical_id)
        raise AssertionError(
            f"cannot resolve Fn::GetAtt {logical_id}.{attribute} ({kind}): add it to Resolver"
        )

    def owner(self, kind: str, resource: str) -> str | None:
        """The logical id of the ``kind`` resource that ``resource`` (an ARN) is, or is inside of."""
        for lid, spec in self.resources.items():
            if spec["Type"] == kind:
                arn = self.attribute(lid, "Arn") if kind in _ARN_ATTRIBUTE else self.ref(lid)
                if _matches(arn, resource) or _matches(f"{arn}/*", resource):
                    return lid
        return None


_ARN_ATTRIBUTE = {"AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue", "AWS::KMS::Key"}
"""Types whose ARN is ``Fn::GetAtt <id>.Arn`` (a topic's and a secret's is their ``Ref``)."""


# --- what else IAM evaluates for a call

_CUSTOMER_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "AWS::DynamoDB::Table": lambda p: (p.get("SSESpecification") or {}).get("KMSMasterKeyId"),
    "AWS::S3::Bucket": lambda p: [
        rule.get("ServerSideEncryptionByDefault", {}).get("KMSMasterKeyID")
        for rule in (p.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration", [])
        if rule.get("ServerSideEncryptionByDefault", {}).get("KMSMasterKeyID")
    ],
    "AWS::SecretsManager::Secret": lambda p: p.get("KmsKeyId"),
}
"""Where a table, bucket or secret names a customer managed key (which its callers would need)."""


def implied_permissions(permission: Permission, resolver: Resolver) -> list[Permission]:
    """What IAM also evaluates for ``permission`` in this template (its KMS keys)."""
    if permission.action == "sns:Publish":
        topic = resolver.owner("AWS::SNS::Topic", permission.resource)
        key = resolver.resources[topic]["Properties"].get("KmsMasterKeyId") if topic else None
        if key is None or (isinstance(key, str) and key.startswith("alias/aws/")):
            return []  # not encrypted, or with the AWS managed key, which SNS uses for the caller
        key_arn = resolver.resolve(key)
        if not key_arn.startswith("arn:"):
            key_arn = f"arn:aws:kms:{resolver.region}:{resolver.account}:key/{key_arn}"
        return [Permission("kms:GenerateDataKey", key_arn), Permission("kms:Decrypt", key_arn)]
    for kind, customer_key in _CUSTOMER_KEYS.items():
        owner = resolver.owner(kind, permission.resource)
        if owner and customer_key(resolver.resources[owner].get("Properties", {})):
            raise AssertionError(
                f"{owner} is encrypted with a customer managed key: write the KMS permissions a call "
                "on it needs into implied_permissions (tests/infra/permissions.py)"
            )
    return []


# --- what Lambda itself does with a function's role


@dataclass(frozen=True)
class RuntimePermission:
    """Permissions a role may hold though no handler call needs them, and why."""

    actions: frozenset[str]
    reason: str
    resources: Callable[[dict[str, Any], Resolver, Sequence[Permission]], list[str]]
    """The resources it covers, given the function's properties, the resolver and what the
    function's calls need."""


def _log_group(function: dict[str, Any], resolver: Resolver, _: Sequence[Permission]) -> list[str]:
    group = (function.get("LoggingConfig") or {}).get("LogGroup")
    return [resolver.attribute(logical_id(group), "Arn")] if group else []


def _traced(function: dict[str, Any], _: Resolver, __: Sequence[Permission]) -> list[str]:
    return ["*"] if (function.get("TracingConfig") or {}).get("Mode") == "Active" else []


def _polled_queues(function: dict[str, Any], resolver: Resolver, _: Sequence[Permission]) -> list[str]:
    """The queues an event source mapping of this function reads."""
    name = function.get("FunctionName")
    return [
        resolver.resolve(mapping["Properties"]["EventSourceArn"])
        for mapping in resolver.resources.values()
        if mapping["Type"] == "AWS::Lambda::EventSourceMapping"
        and name is not None
        and resolver.resolve(mapping["Properties"]["FunctionName"]) == resolver.resolve(name)
        and ":sqs:" in resolver.resolve(mapping["Properties"]["EventSourceArn"])
    ]


def _secrets_read(_: dict[str, Any], __: Resolver, needed: Sequence[Permission]) -> list[str]:
    return [p.resource for p in needed if p.action == "secretsmanager:GetSecretValue"]


RUNTIME_PERMISSIONS = (
    RuntimePermission(
        frozenset({"logs:CreateLogStream", "logs:PutLogEvents"}),
        "the Lambda runtime writes the function's output to its own log group with the role",
        _log_group,
    ),
    RuntimePermission(
        frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"}),
        "active tracing: Lambda sends the invocation's X-Ray segments with the role (X-Ray has no "
        "resource-level permissions, hence '*')",
        _traced,
    ),
    RuntimePermission(
        frozenset(
            {
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
            }
        ),
        "the function's SQS event source mapping polls its queue with the role (CDK's SqsEventSource "
        "grants these): it receives the batches, deletes what the handler did not report failed, and "
        "reads the queue's attributes; the handler never calls SQS",
        _polled_queues,
    ),
    RuntimePermission(
        frozenset({"secretsmanager:DescribeSecret"}),
        "CDK's Secret.grantRead grants it with GetSecretValue; Powertools' SecretsProvider only calls "
        "GetSecretValue, so this covers only a secret the function does read",
        _secrets_read,
    ),
)


# --- a function's role in the template


@dataclass(frozen=True)
class Grant:
    """One statement of a role: action patterns on resolved resource patterns."""

    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def allows(self, permission: Permission) -> bool:
        return any(_matches(a, permission.action, case=False) for a in self.actions) and any(
            _matches(r, permission.resource) for r in self.resources
        )


@cache
def _pattern(pattern: str, case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, 0 if case else re.IGNORECASE)


def _matches(pattern: str, value: str, case: bool = True) -> bool:
    return _pattern(pattern, case).fullmatch(value) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_of(stack: Synthesized, function: str) -> str:
    return logical_id(functions(stack)[function][1]["Properties"]["Role"])


def grants(stack: Synthesized, function: str, resolver: Resolver) -> list[Grant]:
    """The role's statements, resolved; fails on any it cannot judge (Deny, Not*, conditions)."""
    role = role_of(stack, function)
    if stack.template["Resources"][role]["Properties"].get("ManagedPolicyArns"):
        raise AssertionError(f"{role} attaches managed policies, which this check cannot read")
    found = []
    for statement in statements(stack, role):
        understood = {"Effect", "Action", "Resource", "Sid"}
        if statement.get("Effect") != "Allow" or set(statement) - understood:
            raise AssertionError(f"{role} has a statement this check cannot judge: {json.dumps(statement)}")
        found.append(
            Grant(
                tuple(_as_list(statement["Action"])),
                tuple(resolver.resolve(r) for r in _as_list(statement["Resource"])),
            )
        )
    return found


# --- the comparison


@dataclass(frozen=True)
class Need:
    """A permission one call needs, and which call (for messages)."""

    permission: Permission
    call: AwsCall
    implied: bool = False

    def __str__(self) -> str:
        because = "needed with" if self.implied else "for"
        return f"{self.permission} ({because} {self.call})"


def needs(calls: Iterable[AwsCall], resolver: Resolver) -> dict[str, list[Need]]:
    """What each handler's calls need, by handler; calls made outside a handler are left out."""
    found: dict[str, list[Need]] = {}
    for call in calls:
        if call.function is None:
            continue
        for permission in permissions_for(call, resolver.account):
            bucket = found.setdefault(call.function, [])
            bucket.append(Need(permission, call))
            bucket.extend(Need(p, call, implied=True) for p in implied_permissions(permission, resolver))
    return found


def missing_permissions(
    stack: Synthesized, function: str, needed: Sequence[Need], resolver: Resolver
) -> list[str]:
    """One line per distinct permission ``function`` needs and its role does not allow."""
    role_grants = grants(stack, function, resolver)
    problems: dict[Permission, str] = {}
    for need in needed:
        if need.permission not in problems and not any(g.allows(need.permission) for g in role_grants):
            problems[need.permission] = f"{function} may not {need} (role {role_of(stack, function)})"
    return [problems[p] for p in sorted(problems)]


def unused_permissions(
    stack: Synthesized, function: str, needed: Sequence[Need], resolver: Resolver
) -> list[str]:
    """One line per action and resource ``function``'s role allows that none of its calls needs
    and no :data:`RUNTIME_PERMISSIONS` entry explains."""
    properties = functions(stack)[function][1]["Properties"]
    wanted = [n.permission for n in needed]
    runtime = [
        Permission(action, resource)
        for entry in RUNTIME_PERMISSIONS
        for resource in entry.resources(properties, resolver, wanted)
        for action in entry.actions
    ]
    problems = []
    for grant in grants(stack, function, resolver):
        for action in grant.actions:
            for resource in grant.resources:
                single = Grant((action,), (resource,))
                if not any(single.allows(p) for p in [*wanted, *runtime]):
                    problems.append(
                        f"{function}'s role {role_of(stack, function)} allows {action} on {resource}, "
                        "which none of its calls needs"
                    )
    return problems
