"""The state machine is the package's ASL file, deployed with the right substitutions, logged,
traced, allowed exactly what its Distributed Map needs, and started by the schedule."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from infra.config import EXPRESS_LIMIT_SECONDS, ConfigError, StageConfig
from infra.nag import flatten
from infra.pipeline import BATCH_TASK_TIMEOUT_SECONDS, RENDERED_ROOT, render_definition, render_tunables

from energy_auction import workflow
from energy_auction.pipeline import CLAIM_MARGIN_SECONDS
from energy_auction.settings import Settings
from infra import REPO_ROOT
from tests.infra.conftest import Assembly, Synthesized
from tests.infra.templates import functions, logical_id, referenced_ids, resources_for


def _state_machine(stack: Synthesized) -> tuple[str, dict[str, Any]]:
    return stack.one("AWS::StepFunctions::StateMachine")


def _asset_file(assembly: Assembly, stack: Synthesized) -> Path:
    key = _state_machine(stack)[1]["Properties"]["DefinitionS3Location"]["Key"]
    return assembly.directory / f"asset.{key}"


STRING_PLACEHOLDERS = {
    "FetchResultsFunctionArn",
    "ProcessOrderFunctionArn",
    "NotificationTopicArn",
    "WorkBucketName",
}
"""What CloudFormation substitutes (DefinitionSubstitutions); every other value is rendered at synth."""
AWS_TUNABLES = workflow.tunables(
    Settings(), execution_type="EXPRESS", batch_task_timeout_seconds=BATCH_TASK_TIMEOUT_SECONDS
)
"""The stages' tunables: the service's defaults (cdk.json overrides none of them)."""


def _deployed_definition(assembly: Assembly, stack: Synthesized) -> dict[str, Any]:
    """What CloudFormation makes of it: the S3 file with each ${Name} replaced textually.

    References are flattened to cdk-nag's spelling (``<LogicalId.Arn>``), standing for the ARNs.
    """
    body = _asset_file(assembly, stack).read_text()
    for name, value in _state_machine(stack)[1]["Properties"]["DefinitionSubstitutions"].items():
        body = body.replace("${" + name + "}", flatten(value))
    return json.loads(body)  # type: ignore[no-any-return]


def test_deployed_file_is_the_packages_asl_file_with_the_tunables_filled_in(
    assembly: Assembly, stage_stack: Synthesized
) -> None:
    assert _asset_file(assembly, stage_stack).read_text() == render_tunables(
        workflow.template(), AWS_TUNABLES
    )


def test_deployed_file_is_json_with_only_quoted_string_placeholders_left(
    assembly: Assembly, stage_stack: Synthesized
) -> None:
    # CloudFormation is not documented to substitute unquoted (non-string) values into a definition
    # read from S3 (cloudformation-coverage-roadmap#591): the file it reads must be JSON by itself.
    body = _asset_file(assembly, stage_stack).read_text()
    json.loads(body)
    assert set(re.findall(r"\$\{(\w+)\}", body)) == STRING_PLACEHOLDERS
    # Each one is a whole JSON string (an ARN or a bucket name), not a part of one.
    assert set(re.findall(r'"\$\{(\w+)\}"', body)) == STRING_PLACEHOLDERS
    assert len(re.findall(r'"\$\{\w+\}"', body)) == len(re.findall(r"\$\{\w+\}", body))
    substituted = _state_machine(stage_stack)[1]["Properties"]["DefinitionSubstitutions"]
    assert set(substituted) == STRING_PLACEHOLDERS


def test_render_tunables_replaces_only_the_names_it_is_given() -> None:
    text = '{"a": ${A}, "b": "${B}", "c": "${C}map-runs", "d": "${...}", "e": ${A}}'
    assert render_tunables(text, {"A": 2.0, "C": "work/"}) == (
        '{"a": 2.0, "b": "${B}", "c": "work/map-runs", "d": "${...}", "e": 2.0}'
    )
    # With every value it renders the package's file exactly as the package does.
    values: dict[str, object] = {**AWS_TUNABLES, **{name: f"arn:{name}" for name in STRING_PLACEHOLDERS}}
    assert json.loads(render_tunables(workflow.template(), values)) == workflow.render(values)


def test_render_definition_writes_under_the_ignored_build_folder(tmp_path: Path) -> None:
    config = StageConfig(stage="alice")
    assert RENDERED_ROOT.is_relative_to(REPO_ROOT / "build")
    assert "build/" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    written = render_definition(config, tmp_path)
    assert written == tmp_path / workflow.ASL_PATH.name
    assert written.read_text() == render_tunables(workflow.template(), AWS_TUNABLES)
    assert render_definition(config, tmp_path) == written  # unchanged, rewritten or not


def test_render_definition_refuses_a_definition_that_is_not_json(tmp_path: Path) -> None:
    # A work prefix with a quote would break the string it is rendered into: fail the synth.
    with pytest.raises(ValueError, match="not JSON"):
        render_definition(StageConfig(stage="alice", work_prefix='wo"rk/'), tmp_path)
    assert not list(tmp_path.iterdir())


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
            "BatchMaxConcurrency": defaults.pipeline_batch_concurrency,
            "BatchTaskTimeoutSeconds": BATCH_TASK_TIMEOUT_SECONDS,
            "MaxAttempts": defaults.pipeline_max_attempts,
            "RetrySeconds": defaults.pipeline_retry_seconds,
            "ExecutionTimeoutSeconds": defaults.pipeline_timeout_seconds,
            "TaskRetryIntervalSeconds": defaults.pipeline_task_retry_interval_seconds,
            "TaskRetryMaxAttempts": defaults.pipeline_task_retry_max_attempts,
            "TaskRetryBackoffRate": defaults.pipeline_task_retry_backoff_rate,
        }
    )
    assert _deployed_definition(assembly, stage_stack) == expected
    # Every placeholder of the package's file is filled in, at synth or by CloudFormation.
    assert (
        set(_state_machine(stage_stack)[1]["Properties"]["DefinitionSubstitutions"]) | set(AWS_TUNABLES)
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


def test_a_batch_claim_outlives_the_batch(stage_stack: Synthesized) -> None:
    # Each batch (an EXPRESS child, at most 5 minutes) claims its own orders when it starts: its
    # claims outlive it, so no batch takes over an order another batch may still settle.
    _, fetch = functions(stage_stack)["fetch_results"]
    lease = int(fetch["Properties"]["Environment"]["Variables"]["ENERGY_AUCTION_CLAIM_LEASE_SECONDS"])
    assert lease >= EXPRESS_LIMIT_SECONDS + CLAIM_MARGIN_SECONDS


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {"claim_lease_seconds": 300},
            "claim_lease_seconds must be at least",
        ),
        ({"notice_delivery_lease_seconds": 180}, "notice_delivery_lease_seconds must exceed the notifier"),
    ],
)
def test_a_stage_refuses_leases_its_functions_could_outlive(values: dict[str, int], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        StageConfig(stage="alice", **values)  # type: ignore[arg-type]


def test_the_notifiers_delivery_lease_outlasts_its_timeout(stage_stack: Synthesized) -> None:
    _, notify = functions(stage_stack)["notify"]
    lease = int(
        notify["Properties"]["Environment"]["Variables"]["ENERGY_AUCTION_NOTICE_DELIVERY_LEASE_SECONDS"]
    )
    assert notify["Properties"]["Timeout"] < lease


def _iter_states(states: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for state in states.values():
        found.append(state)
        if "ItemProcessor" in state:
            found.extend(_iter_states(state["ItemProcessor"]["States"]))
    return found


SERVICE_CALL_SECONDS = 5
"""An assumed bound on one attempt of a Step Functions service call (sns:Publish) in the estimate."""
EXPRESS_MARGIN_SECONDS = 45
"""Room left for Step Functions' own scheduling and Lambda cold starts."""


def _attempt_seconds(state: dict[str, Any], lambda_timeouts: dict[str, int]) -> int:
    if "TimeoutSeconds" in state:
        return int(state["TimeoutSeconds"])
    if state["Resource"] == "arn:aws:states:::lambda:invoke":
        return lambda_timeouts[state["Parameters"]["FunctionName"]]
    return SERVICE_CALL_SECONDS


def _worst_case_seconds(state: dict[str, Any], lambda_timeouts: dict[str, int]) -> float:
    """Every attempt runs to its timeout and every retry waits its longest (full jitter waits less)."""
    if state["Type"] != "Task":
        return 0
    total: float = _attempt_seconds(state, lambda_timeouts)
    for retrier in state.get("Retry", []):
        for attempt in range(retrier.get("MaxAttempts", 3)):
            wait = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** attempt
            total += min(wait, retrier.get("MaxDelaySeconds", wait)) + _attempt_seconds(
                state, lambda_timeouts
            )
    return total


def _longest_path_seconds(
    states: dict[str, Any], name: str, lambda_timeouts: dict[str, int], seen: tuple[str, ...] = ()
) -> float:
    assert name not in seen, f"the child execution loops through {name}: no bound"
    state = states[name]
    successors = {state.get("Next"), state.get("Default")}
    successors |= {c.get("Next") for c in state.get("Catch", []) + state.get("Choices", [])}
    return _worst_case_seconds(state, lambda_timeouts) + max(
        [_longest_path_seconds(states, s, lambda_timeouts, (*seen, name)) for s in successors if s],
        default=0,
    )


def test_each_order_of_a_batch_ends_well_inside_the_childs_five_minutes(
    assembly: Assembly, stage_stack: Synthesized
) -> None:
    # One order's path, at worst ProcessOrder's attempts, then ReleaseOrder's, then the notice,
    # each with backoff, ends well inside the EXPRESS limit; a batch as a whole runs in seconds
    # (test_quotas checks the modelled batch against the limit at synth). Should failures drag a
    # batch past 5 minutes, the child fails and the run with it, and the orders it still held are
    # claimable again after the lease (test_a_batch_claim_outlives_the_batch).
    lambda_timeouts = {
        f"<{function_id}.Arn>": function["Properties"]["Timeout"]
        for function_id, function in functions(stage_stack).values()
    }
    (processor,) = [
        s["ItemProcessor"]
        for s in _deployed_definition(assembly, stage_stack)["States"].values()
        if "ItemProcessor" in s
    ]
    assert processor["ProcessorConfig"]["ExecutionType"] == "EXPRESS"
    order = processor["States"]["SettleOrders"]["ItemProcessor"]
    worst = _longest_path_seconds(order["States"], order["StartAt"], lambda_timeouts)
    assert worst + EXPRESS_MARGIN_SECONDS <= EXPRESS_LIMIT_SECONDS, f"worst case {worst:.0f} s"
    # And the batch's own tasks, on the function that also stages whole runs, are cut short
    for name in ("ClaimBatch", "TallyBatch"):
        assert processor["States"][name]["TimeoutSeconds"] == BATCH_TASK_TIMEOUT_SECONDS <= 60


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
