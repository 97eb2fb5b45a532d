"""The delivery pipeline: CodeConnections source (ARN never in code), `make test` + synth, dev
automatically, prod after approval, and failures published to Slack's topic."""

from __future__ import annotations

from typing import Any

from infra.delivery import CONNECTION_PARAMETER, PIPELINE_NAME, SYNTH_COMMANDS
from infra.nag import flatten
from infra.notifications import PIPELINE_FAILED_RULE, topic_name

from energy_auction.deployment import stack_name
from tests.infra.conftest import CUSTOM_CONTEXT, Assembly, Synthesized


def _stages(delivery: Synthesized) -> list[dict[str, Any]]:
    _, pipeline = delivery.one("AWS::CodePipeline::Pipeline")
    assert pipeline["Properties"]["Name"] == PIPELINE_NAME
    return pipeline["Properties"]["Stages"]  # type: ignore[no-any-return]


def test_source_is_github_through_codeconnections_from_ssm(assembly: Assembly) -> None:
    source = _stages(assembly.delivery)[0]
    (action,) = source["Actions"]
    assert action["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    config = action["Configuration"]
    assert (config["FullRepositoryId"], config["BranchName"]) == ("your-org/energy-auction", "main")
    parameter = assembly.delivery.template["Parameters"][config["ConnectionArn"]["Ref"]]
    assert parameter == {"Type": "AWS::SSM::Parameter::Value<String>", "Default": CONNECTION_PARAMETER}


def test_connection_arn_from_context_when_given(customised: Assembly) -> None:
    (action,) = _stages(customised.delivery)[0]["Actions"]
    assert action["Configuration"]["ConnectionArn"] == CUSTOM_CONTEXT["connection_arn"]


def test_synth_step_runs_the_tests_then_synth(assembly: Assembly) -> None:
    (build,) = [s for s in _stages(assembly.delivery) if s["Name"] == "Build"]
    (action,) = build["Actions"]
    project = assembly.delivery.template["Resources"][action["Configuration"]["ProjectName"]["Ref"]]
    buildspec = project["Properties"]["Source"]["BuildSpec"]
    assert SYNTH_COMMANDS == ["make test", "make synth"]
    assert '"make test",\n        "make synth"' in buildspec
    assert project["Properties"]["Environment"]["PrivilegedMode"] is False, "synth needs no Docker"


def test_dev_deploys_automatically_and_prod_only_after_approval(assembly: Assembly) -> None:
    names = [s["Name"] for s in _stages(assembly.delivery)]
    assert names.index("Build") < names.index("UpdatePipeline") < names.index("Dev") < names.index("Prod")
    stages = {s["Name"]: s["Actions"] for s in _stages(assembly.delivery)}
    assert all(a["ActionTypeId"]["Category"] != "Approval" for a in stages["Dev"])
    approval = [a for a in stages["Prod"] if a["ActionTypeId"]["Category"] == "Approval"]
    deploys = [a for a in stages["Prod"] if a["ActionTypeId"]["Provider"] == "CloudFormation"]
    assert len(approval) == 1
    assert deploys
    assert all(a["RunOrder"] > approval[0]["RunOrder"] for a in deploys)
    for stage, name in (("Dev", "dev"), ("Prod", "prod")):
        assert {
            a["Configuration"]["StackName"] for a in stages[stage] if "StackName" in a["Configuration"]
        } == {stack_name(name)}


def test_failed_executions_are_published_to_the_prod_topic(assembly: Assembly) -> None:
    rules = assembly.delivery.resources("AWS::Events::Rule").values()
    (rule,) = [r for r in rules if r["Properties"].get("Name") == PIPELINE_FAILED_RULE]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.codepipeline"]
    assert pattern["detail-type"] == ["CodePipeline Pipeline Execution State Change"]
    assert pattern["detail"] == {"pipeline": [PIPELINE_NAME], "state": ["FAILED"]}
    (target,) = rule["Properties"]["Targets"]
    assert flatten(target["Arn"]).endswith(f":{topic_name('prod')}")
    assert "pipeline_failed" in target["InputTransformer"]["InputTemplate"]


def test_delivery_stack_holds_no_account_or_connection_literal(assembly: Assembly) -> None:
    import re

    body = str(assembly.delivery.template)
    assert not re.search(r"\b\d{12}\b", body), "no account id may be hard-coded"
    assert "connection/" not in body
