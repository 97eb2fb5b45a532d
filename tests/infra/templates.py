"""Reading synthesized templates: functions by handler, a role's statements, references."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.conftest import Synthesized


def logical_id(reference: Any) -> str:
    """The logical id a ``{"Ref": id}`` or ``{"Fn::GetAtt": [id, attr]}`` points at."""
    if isinstance(reference, dict) and "Ref" in reference:
        return str(reference["Ref"])
    if isinstance(reference, dict) and "Fn::GetAtt" in reference:
        return str(reference["Fn::GetAtt"][0])
    raise AssertionError(f"not a reference: {json.dumps(reference)}")


def referenced_ids(value: Any) -> set[str]:
    """Logical ids of the resources a value refers to (Ref and Fn::GetAtt, at any depth)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if isinstance(value.get("Ref"), str) and not value["Ref"].startswith("AWS::"):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(str(value["Fn::GetAtt"][0]))
        for item in value.values():
            found |= referenced_ids(item)
    elif isinstance(value, list):
        for item in value:
            found |= referenced_ids(item)
    return found


def functions(stack: Synthesized) -> dict[str, tuple[str, dict[str, Any]]]:
    """Our Lambda functions by handler module name (energy_auction.handlers.<name>.handler)."""
    found = {}
    for lid, resource in stack.resources("AWS::Lambda::Function").items():
        handler = resource["Properties"].get("Handler", "")
        if handler.startswith("energy_auction.handlers."):
            found[handler.split(".")[2]] = (lid, resource)
    return found


def statements(stack: Synthesized, role_id: str) -> list[dict[str, Any]]:
    """Every Allow/Deny statement granted to a role: inline policies and attached AWS::IAM::Policy."""
    role = stack.template["Resources"][role_id]
    found = [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for policy in stack.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"].get("Roles", []):
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def actions(stack: Synthesized, role_id: str) -> set[str]:
    return {a for s in statements(stack, role_id) for a in _list(s["Action"])}


def resources_for(stack: Synthesized, role_id: str, action: str) -> list[Any]:
    """Every resource the role may use ``action`` on."""
    return [
        r for s in statements(stack, role_id) if action in _list(s["Action"]) for r in _list(s["Resource"])
    ]


def text(value: Any) -> str:
    """A template value as one string, intrinsic functions and all (for "contains" checks)."""
    return json.dumps(value, sort_keys=True)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
