"""The REST API: the authorizer on every method, the request model, throttling, logs, X-Ray and
the JSON gateway responses."""

from __future__ import annotations

import json
from typing import Any

from infra.api import VALIDATION_FAILED_BODY, orders_request_schema

from energy_auction.errors import GATEWAY_DEFAULT_ERRORS, GATEWAY_RESPONSES, THROTTLED_BODY
from energy_auction.routes import ROUTES
from energy_auction.settings import Settings
from tests.infra.conftest import Synthesized
from tests.infra.templates import functions, logical_id, referenced_ids

ACCESS_LOG_FIELDS = {
    "requestId",
    "ip",
    "httpMethod",
    "resourcePath",
    "status",
    "principalId",
    "authorizerError",
}


def _methods(stack: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    """Methods by (verb, path) with the path rebuilt from the resource tree."""
    resources = stack.resources("AWS::ApiGateway::Resource")

    def path(reference: dict[str, Any]) -> str:
        if "Fn::GetAtt" in reference:  # the root resource
            return ""
        resource = resources[logical_id(reference)]["Properties"]
        return f"{path(resource['ParentId'])}/{resource['PathPart']}"

    return {
        (m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"])): m["Properties"]
        for m in stack.resources("AWS::ApiGateway::Method").values()
    }


def test_api_has_exactly_the_four_routes(stage_stack: Synthesized) -> None:
    assert set(_methods(stage_stack)) == {
        ("POST", "/orders"),
        ("GET", "/orders"),
        ("GET", "/orders/{record_id}"),
        ("DELETE", "/orders/{record_id}"),
    }


def test_every_method_uses_the_request_authorizer_on_the_authorization_header(
    stage_stack: Synthesized,
) -> None:
    authorizer_id, authorizer = stage_stack.one("AWS::ApiGateway::Authorizer")
    props = authorizer["Properties"]
    assert props["Type"] == "REQUEST"
    assert props["IdentitySource"] == "method.request.header.Authorization"
    assert props["AuthorizerResultTtlInSeconds"] == 300
    authorizer_function = functions(stage_stack)["authorizer"][0]
    assert authorizer_function in json.dumps(props["AuthorizerUri"])
    for method in _methods(stage_stack).values():
        assert method["AuthorizationType"] == "CUSTOM"
        assert method["AuthorizerId"] == {"Ref": authorizer_id}


def test_the_api_has_one_method_per_route_of_the_route_table(stage_stack: Synthesized) -> None:
    # The authorizer's policy, the local gateway and the API handler read the same table, so a
    # method the stack makes is one they all know.
    assert sorted(_methods(stage_stack)) == sorted((r.method, r.path) for r in ROUTES)


def test_post_validates_the_body_against_the_draft4_orders_model(stage_stack: Synthesized) -> None:
    post = _methods(stage_stack)[("POST", "/orders")]
    validator = stage_stack.template["Resources"][logical_id(post["RequestValidatorId"])]["Properties"]
    assert validator["ValidateRequestBody"] is True
    model = stage_stack.template["Resources"][logical_id(post["RequestModels"]["application/json"])]
    assert model["Properties"]["ContentType"] == "application/json"
    assert model["Properties"]["Schema"] == orders_request_schema()


def test_orders_model_is_draft4_and_matches_the_order_rules() -> None:
    schema = orders_request_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert (schema["type"], schema["minItems"], schema["maxItems"]) == ("array", 1, 100)
    item = schema["items"]
    assert item["additionalProperties"] is False
    assert set(item["required"]) == {"record_id", "parameter_1", "parameter_2"}
    assert item["properties"]["parameter_2"] == {
        "type": "number",
        "title": "Parameter 2",
        "description": "A finite JSON number, kept exactly.",
    }
    assert item["properties"]["record_id"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def test_stage_is_throttled_traced_and_logs_json(stage_stack: Synthesized) -> None:
    _, stage = stage_stack.one("AWS::ApiGateway::Stage")
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == 50
    assert settings["ThrottlingBurstLimit"] == 100
    assert settings["LoggingLevel"] == "INFO"
    assert settings["DataTraceEnabled"] is False, "full request logging would record bearer tokens"
    assert settings["MetricsEnabled"] is True
    access_log = json.loads(props["AccessLogSetting"]["Format"])
    assert set(access_log) >= ACCESS_LOG_FIELDS
    (group_id,) = referenced_ids(props["AccessLogSetting"]["DestinationArn"])
    group = stage_stack.template["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert "RetentionInDays" in group["Properties"]


def test_execution_logging_role_is_set_for_the_account_before_the_stage(stage_stack: Synthesized) -> None:
    account_id, account = stage_stack.one("AWS::ApiGateway::Account")
    role = stage_stack.template["Resources"][logical_id(account["Properties"]["CloudWatchRoleArn"])]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "apigateway.amazonaws.com"
    }
    assert account["DeletionPolicy"] == "Retain", "the setting is shared by every API in the region"
    _, stage = stage_stack.one("AWS::ApiGateway::Stage")
    assert account_id in stage.get("DependsOn", [])


# What API Gateway puts in for the $context variables of a template: each renders as a quoted JSON
# string (quotes and backslashes escaped), so the templates leave them unquoted.
CONTEXT_VARIABLES = {
    "$context.error.validationErrorString": "[object has missing required properties]",
    "$context.error.messageString": 'Request too long: "body"',
}


def _render(template: str) -> dict[str, str]:
    for variable, value in CONTEXT_VARIABLES.items():
        template = template.replace(variable, json.dumps(value))
    rendered: dict[str, str] = json.loads(template)
    return rendered


def _gateway_responses(stack: Synthesized) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in stack.resources("AWS::ApiGateway::GatewayResponse").values()
    }


def test_gateway_responses_answer_json_like_the_service(stage_stack: Synthesized) -> None:
    responses = _gateway_responses(stage_stack)
    message = CONTEXT_VARIABLES["$context.error.messageString"]
    expected: dict[str, tuple[int | None, dict[str, str]]] = {
        # including an unknown route: 404 (a 403 by default on a REST API), like the local stack
        **GATEWAY_RESPONSES,
        "BAD_REQUEST_BODY": (422, VALIDATION_FAILED_BODY),
        "THROTTLED": (429, THROTTLED_BODY),
        # Every other error API Gateway makes keeps its status and says why.
        "DEFAULT_4XX": (None, {"error": "request_refused", "message": message}),
        "DEFAULT_5XX": (None, {"error": "internal_error", "message": message}),
    }
    assert set(GATEWAY_DEFAULT_ERRORS) <= set(expected)
    assert set(responses) == set(expected)
    for response_type, (status, body) in expected.items():
        response = responses[response_type]
        assert response.get("StatusCode") == (None if status is None else str(status)), response_type
        rendered = _render(response["ResponseTemplates"]["application/json"])
        assert {k: v for k, v in rendered.items() if k != "detail"} == body, response_type
        assert response["ResponseParameters"]["gatewayresponse.header.Content-Type"] == "'application/json'"
    assert (
        _render(responses["BAD_REQUEST_BODY"]["ResponseTemplates"]["application/json"])["detail"]
        == (CONTEXT_VARIABLES["$context.error.validationErrorString"])
    )
    assert (
        responses["UNAUTHORIZED"]["ResponseParameters"]["gatewayresponse.header.WWW-Authenticate"]
        == "'Bearer'"
    )


def test_throttled_requests_are_told_when_to_retry(stage_stack: Synthesized) -> None:
    throttled = _gateway_responses(stage_stack)["THROTTLED"]
    assert throttled["StatusCode"] == "429"
    assert throttled["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def test_api_function_answers_503_before_it_times_out(stage_stack: Synthesized) -> None:
    # The store gives up retrying after storage_retry_budget_seconds, with one DynamoDB call still
    # in flight: 2 botocore attempts of 1 s connect + 2 s read.
    in_flight_call_seconds = 2 * (1 + 2)
    _, api = functions(stage_stack)["api"]
    timeout = api["Properties"]["Timeout"]
    assert timeout == 15
    assert timeout > Settings().storage_retry_budget_seconds + in_flight_call_seconds
