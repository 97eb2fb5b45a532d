"""cdk-nag acknowledgements: every one names the exact finding and says why it is acceptable."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

PACK = "AwsSolutions"


def acknowledge(scope: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Acknowledge ``rule`` (e.g. "IAM5") on ``scope`` and everything under it.

    With ``findings``, only those findings of the rule (``Resource::...``, ``Action::...``) are
    acknowledged; any other finding of the same rule still fails the synth.
    """
    ids = [f"{PACK}-{rule}[{finding}]" for finding in findings] or [f"{PACK}-{rule}"]
    Validations.of(scope).acknowledge(*(Acknowledgment(id=f"{PACK}::{id_}", reason=reason) for id_ in ids))


def acknowledge_wildcards(scope: IConstruct, reason: str, *resources: str) -> None:
    """Acknowledge IAM5 for exactly these wildcard resources (ARN strings or tokens) under ``scope``."""
    stack = Stack.of(scope)
    acknowledge(scope, "IAM5", reason, *(f"Resource::{flatten(stack.resolve(arn))}" for arn in resources))


def flatten(reference: Any) -> str:
    """A resolved CloudFormation value as cdk-nag spells it in findings (its flattenCfnReference)."""
    if reference is None:
        return ""
    if isinstance(reference, str):
        return reference.replace("${", "<").replace("}", ">")
    if isinstance(reference, dict):
        if "Fn::Join" in reference:
            delimiter, items = reference["Fn::Join"]
            return str(delimiter).join(flatten(item) for item in items)
        if "Fn::Sub" in reference:
            return flatten(reference["Fn::Sub"])
        if "Fn::GetAtt" in reference:
            resource, attribute = reference["Fn::GetAtt"]
            return f"<{flatten(resource)}.{flatten(attribute)}>"
        if "Fn::ImportValue" in reference:
            return flatten(reference["Fn::ImportValue"])
        if "Ref" in reference:
            return f"<{flatten(reference['Ref'])}>"
    return json.dumps(reference, separators=(",", ":"))
