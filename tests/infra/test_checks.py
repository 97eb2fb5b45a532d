"""The offline checks on the synthesized app: cdk-nag (AwsSolutions) with zero unacknowledged
findings, and cfn-lint with zero findings on every template, the state machine included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint

from energy_auction import workflow
from tests.infra.conftest import Assembly, Synthesized

# cfn-lint findings accepted on CDK-generated code, each for a stated reason.
CFN_LINT_ACCEPTED = {
    # CDK wires resources together with DependsOn as well as GetAtt; harmless and not ours to change.
    ("W3005", ""),
    # CDK Pipelines builds the deploy role ARN with Fn::Join; Fn::Sub would be the same string.
    ("E3703", "Prefer using Fn::Sub over Fn::Join with an empty delimiter"),
}


def _report(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "validation-report.json").read_text())  # type: ignore[no-any-return]


def test_cdk_nag_ran_and_found_nothing_unacknowledged(assembly: Assembly) -> None:
    (plugin,) = _report(assembly.directory)["pluginReports"]
    assert plugin["pluginName"] == "AwsSolutions"
    assert plugin["conclusion"] == "success"
    assert plugin["violations"] == [], "warnings count too: acknowledge each with a reason or fix it"


def test_every_acknowledgement_gives_a_reason(assembly: Assembly) -> None:
    (plugin,) = _report(assembly.directory)["pluginReports"]
    suppressed = plugin["suppressedViolations"]
    assert suppressed, "the report lists acknowledged findings"
    for finding in suppressed:
        assert len(finding["reason"]) >= 60, f"{finding['acknowledgedId']}: say why, not just that"


def test_application_acknowledgements_are_only_the_expected_rules(assembly: Assembly) -> None:
    (plugin,) = _report(assembly.directory)["pluginReports"]
    rules = {
        f["ruleName"]
        for f in plugin["suppressedViolations"]
        for c in f["violatingConstructs"]
        if c["constructPath"].startswith("EnergyAuction-dev/")
    }
    # Each accepted finding of the application stack, spelled out: a new wildcard fails here.
    assert rules == {
        "AwsSolutions-APIG3",  # no WAF web ACL
        "AwsSolutions-COG4",  # JWT Lambda authorizer, not Cognito
        "AwsSolutions-L1",  # python3.13 on purpose
        "AwsSolutions-SMG4",  # the two secrets are rotated by a person
        "AwsSolutions-IAM5[Resource::*]",  # X-Ray, Step Functions log delivery
        "AwsSolutions-IAM5[Resource::<StorageResultsB2A4FB2E.Arn>/orders/*]",
        "AwsSolutions-IAM5[Resource::<StorageResultsB2A4FB2E.Arn>/work/runs/*]",
        "AwsSolutions-IAM5[Resource::<StorageResultsB2A4FB2E.Arn>/work/map-runs/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:logs:eu-west-1:<AWS::AccountId>:log-group:*]",
        "AwsSolutions-IAM5[Resource::arn:aws:states:eu-west-1:<AWS::AccountId>:"
        "execution:energy-auction-dev-pipeline/*]",
    }


def test_cdk_nag_fails_the_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Careless")
    s3.Bucket(stack, "Open")  # no SSL enforcement, no access logs
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="AwsSolutions-S10"):
        app.synth()
    violations = _report(tmp_path)["pluginReports"][0]["violations"]
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= {v["ruleName"] for v in violations}


def _lint(template: dict[str, Any]) -> list[str]:
    matches = lint(json.dumps(template), config=ManualArgs(regions=["eu-west-1"]))
    return [
        f"{m.rule.id} {m.message} (line {m.linenumber})"
        for m in matches
        if not any(m.rule.id == rule and text in m.message for rule, text in CFN_LINT_ACCEPTED)
    ]


def test_cfn_lint_finds_nothing_in_any_template(assembly: Assembly) -> None:
    findings = {
        stack.name + ("" if stack is not assembly.pipeline_dev else " (pipeline)"): _lint(stack.template)
        for stack in assembly.templates
    }
    assert findings == {name: [] for name in findings}


def test_cfn_lint_finds_nothing_in_the_rendered_state_machine(dev: Synthesized) -> None:
    # The definition is deployed from S3, so cfn-lint cannot see it in the stack: lint it inline.
    arn = "arn:aws:lambda:eu-west-1:000000000000:function:example"
    definition = workflow.render(
        {
            **dict.fromkeys(workflow.placeholders(), 1),
            "FetchResultsFunctionArn": arn,
            "ProcessOrderFunctionArn": arn,
            "NotificationTopicArn": "arn:aws:sns:eu-west-1:000000000000:example",
            "WorkBucketName": "example-bucket",
            "WorkPrefix": "work/",
            "MapExecutionType": "EXPRESS",
            "TaskRetryBackoffRate": 2.0,
        }
    )
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {"Definition": definition, "RoleArn": "arn:aws:iam::000000000000:role/example"},
            }
        },
    }
    assert _lint(template) == []
    broken = json.loads(json.dumps(template))
    broken["Resources"]["Machine"]["Properties"]["Definition"]["States"]["WaitForResults"]["Type"] = "Sleep"
    assert _lint(broken), "cfn-lint validates the definition's structure"
