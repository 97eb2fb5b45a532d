"""The state machine is the package's ASL file, deployed with the right substitutions, logged,
traced, allowed exactly what its Distributed Map needs, and started by the schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infra.nag import flatten

from energy_auction import workflow
from energy_auction.settings import Settings
from tests.infra.conftest import Assembly, Synthesized
from tests.infra.templates import functions, logical_id, referenced_ids, resources_for


def _state_machine(stack: Synthesized) -> tuple[str, dict[str, Any]]:
    return stack.one("AWS::StepFunctions::StateMachine")


def _asset_file(assembly: Assembly, stack: Synthesized) -> Path:
    key = _state_machine(stack)[1]["Properties"]["DefinitionS3Location"]["Key"]
    return assembly.directory / f"asset.{key}"


def _deployed_definition(assembly: Assembly, stack: Synthesized) -> dict[str, Any]:
    """What CloudFormation makes of it: the S3 file with each ${Name} replaced textually.

    References are flattened to cdk-nag's spelling (``<LogicalId.Arn>``), standing for the ARNs.
    """
    body = _asset_file(assembly, stack).read_text()
    for name, value in _state_machine(stack)[1]["Properties"]["DefinitionSubstitutions"].items():
        body = body.replace("${" + name + "}", flatten(value))
    return json.loads(body)  # type: ignore[no-any-return]


def test_deployed_file_is_the_packages_asl_file(assembly: Assembly, stage_stack: Synthesized) -> None:
    assert _asset_file(assembly, stage_stack).read_text() == workflow.template()


def test_definition_equals_the_package_rendering_with_the_aws_values(
    assembly: Assembly, stage_stack: Synthesized
) -> None:
    fns = functions(stage_stack)
    (topic_id,) = stage_stack.resources("AWS::SNS::Topic")
    (results_id,) = [
        lid
        for lid, b in stage_stack.resources("AWS::S3::Bucket").items()
        if "VersioningConfiguration" in b["Properties"]
    ]
    defaults = Settings()
    expected = workflow.render(
        {
            "FetchResultsFunctionArn": f"<{fns['fetch_results'][0]}.Arn>",
            "ProcessOrderFunctionArn": f"<{fns['process_order'][0]}.Arn>",
            "NotificationTopicArn": f"<{topic_id}>",
            "WorkBucketName": f"<{results_id}>",
            "WorkPrefix": "work/",
            "MapExecutionType": "EXPRESS",
            "MapMaxConcurrency": defaults.pipeline_max_concurrency,
            "MaxAttempts": defaults.pipeline_max_attempts,
            "RetrySeconds": defaults.pipeline_retry_seconds,
            "ExecutionTimeoutSeconds": defaults.pipeline_timeout_seconds,
            "TaskRetryIntervalSeconds": defaults.pipeline_task_retry_interval_seconds,
            "TaskRetryMaxAttempts": defaults.pipeline_task_retry_max_attempts,
            "TaskRetryBackoffRate": defaults.pipeline_task_retry_backoff_rate,
        }
    )
    assert _deployed_definition(assembly, stage_stack) == expected
    assert (
        set(_state_machine(stage_stack)[1]["Properties"]["DefinitionSubstitutions"])
        == workflow.placeholders()
    )


def test_state_machine_logs_everything_and_is_traced(stage_stack: Synthesized) -> None:
    _, machine = _state_machine(stage_stack)
    props = machine["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    assert logging["IncludeExecutionData"] is True
    (group_id,) = referenced_ids(logging["Destinations"])
    group = stage_stack.template["Resources"][group_id]["Properties"]
    assert group["LogGroupName"].startswith("/aws/vendedlogs/states/")
    assert "RetentionInDays" in group


def test_execution_times_out_before_the_claims_lapse(assembly: Assembly, stage_stack: Synthesized) -> None:
    timeout = _deployed_definition(assembly, stage_stack)["TimeoutSeconds"]
    _, fetch = functions(stage_stack)["fetch_results"]
    lease = int(fetch["Properties"]["Environment"]["Variables"]["ENERGY_AUCTION_CLAIM_LEASE_SECONDS"])
    assert 60 <= timeout < lease


def _iter_states(states: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for state in states.values():
        found.append(state)
        if "ItemProcessor" in state:
            found.extend(_iter_states(state["ItemProcessor"]["States"]))
    return found


def test_role_allows_every_call_the_definition_makes(assembly: Assembly, stage_stack: Synthesized) -> None:
    _, machine = _state_machine(stage_stack)
    role = logical_id(machine["Properties"]["RoleArn"])
    states = _iter_states(_deployed_definition(assembly, stage_stack)["States"])
    invoked = {
        s["Parameters"]["FunctionName"]
        for s in states
        if s.get("Resource") == "arn:aws:states:::lambda:invoke"
    }
    published = {
        s["Parameters"]["TopicArn"] for s in states if s.get("Resource") == "arn:aws:states:::sns:publish"
    }
    assert {flatten(r) for r in resources_for(stage_stack, role, "lambda:InvokeFunction")} == invoked
    assert {flatten(r) for r in resources_for(stage_stack, role, "sns:Publish")} == published
    assert len(invoked) == 2
    assert len(published) == 1


def test_role_allows_the_distributed_map_and_nothing_broader(stage_stack: Synthesized) -> None:
    _, machine = _state_machine(stage_stack)
    role = logical_id(machine["Properties"]["RoleArn"])
    name = machine["Properties"]["StateMachineName"]
    (start,) = resources_for(stage_stack, role, "states:StartExecution")
    assert flatten(start).endswith(f":stateMachine:{name}")
    (describe,) = resources_for(stage_stack, role, "states:DescribeExecution")
    assert flatten(describe).endswith(f":execution:{name}/*")
    assert [
        flatten(r).endswith("/work/runs/*") for r in resources_for(stage_stack, role, "s3:GetObject")
    ].count(True) == 1
    (writer,) = resources_for(stage_stack, role, "s3:PutObject")
    assert flatten(writer).endswith("/work/map-runs/*")
    assert not resources_for(stage_stack, role, "s3:DeleteObject")


def test_schedule_starts_the_state_machine_every_five_minutes(stage_stack: Synthesized) -> None:
    machine_id, _ = _state_machine(stage_stack)
    (rule,) = [
        r
        for r in stage_stack.resources("AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    ]
    props = rule["Properties"]
    assert props["ScheduleExpression"] == "rate(5 minutes)"
    assert props["State"] == "ENABLED"
    (target,) = props["Targets"]
    assert target["Arn"] == {"Ref": machine_id}
    events_role = logical_id(target["RoleArn"])
    assert resources_for(stage_stack, events_role, "states:StartExecution") == [{"Ref": machine_id}]
