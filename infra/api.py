"""The REST API: the routes of ``energy_auction.routes``, behind the JWT REQUEST authorizer."""

from __future__ import annotations

import json
import re
from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from energy_auction.adapters.aws import TIME_INDEX, TRADER_INDEX
from energy_auction.deployment import cursor_secret_name, jwt_secret_name
from energy_auction.errors import (
    BEARER_CHALLENGE,
    GATEWAY_DEFAULT_ERRORS,
    GATEWAY_RESPONSES,
    THROTTLED_BODY,
    THROTTLED_RETRY_AFTER_SECONDS,
)
from energy_auction.orders import ORDER_FIELDS, OrderRequest
from energy_auction.routes import ROUTES
from energy_auction.settings import MAX_ORDERS_CEILING
from infra.config import StageConfig, settings_env
from infra.functions import LambdaPackage, ServiceFunction
from infra.nag import acknowledge, acknowledge_wildcards

DRAFT_4 = "http://json-schema.org/draft-04/schema#"
# Keywords of JSON Schema draft 4 (API Gateway models); anything else in a generated schema fails.
_DRAFT_4_KEYWORDS = frozenset(
    {
        "$schema", "title", "description", "type", "properties", "required", "additionalProperties",
        "items", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "enum",
        "minimum", "maximum", "multipleOf", "anyOf", "oneOf", "allOf", "not", "format", "default",
    }
)  # fmt: skip
VALIDATION_FAILED_BODY = {
    "error": "validation_failed",
    "message": f"the body must be a JSON array of 1 to {MAX_ORDERS_CEILING} orders, each with exactly "
    f"{', '.join(ORDER_FIELDS[:-1])} and {ORDER_FIELDS[-1]}; nothing was stored",
}
"""API Gateway's answer (422, like the service's own validation errors) when the model refuses a body."""

VALIDATION_FAILED_TEMPLATE = (
    json.dumps(VALIDATION_FAILED_BODY)[:-1] + ', "detail": $context.error.validationErrorString}'
)
"""The same, plus API Gateway's own account of what the schema refused (a variable that API Gateway
renders as a quoted JSON string, so it is not quoted here)."""

ERROR_MESSAGE = "$context.error.messageString"
"""API Gateway's own message for the error; it renders as a quoted JSON string."""


def default_error_template(error: str) -> str:
    """``{"error": <error>, "message": <API Gateway's message>}`` as a response template."""
    return json.dumps({"error": error})[:-1] + f', "message": {ERROR_MESSAGE}}}'


class _Draft4(GenerateJsonSchema):
    schema_dialect = DRAFT_4

    def decimal_schema(self, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
        # The order model's numbers accept JSON numbers only; its validator refuses strings.
        return {"type": "number"}


def orders_request_schema() -> dict[str, Any]:
    """The POST /orders request model: JSON Schema draft 4, generated from the pydantic order model."""
    item = OrderRequest.model_json_schema(schema_generator=_Draft4)
    schema = {
        "$schema": DRAFT_4,
        "title": "Orders",
        "description": "A submission: orders stored together, all or none.",
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_ORDERS_CEILING,
        "items": item,
    }
    _check_draft_4(schema)
    return schema


def _check_draft_4(schema: dict[str, Any], where: str = "#") -> None:
    unknown = set(schema) - _DRAFT_4_KEYWORDS
    if unknown:
        raise ValueError(f"{where} uses keywords API Gateway's draft 4 models lack: {sorted(unknown)}")
    for name, value in (schema.get("properties") or {}).items():
        _check_draft_4(value, f"{where}/properties/{name}")
    for keyword in ("anyOf", "oneOf", "allOf"):
        for index, value in enumerate(schema.get(keyword) or []):
            _check_draft_4(value, f"{where}/{keyword}/{index}")
    for keyword in ("items", "not", "additionalProperties"):
        if isinstance(schema.get(keyword), dict):
            _check_draft_4(schema[keyword], f"{where}/{keyword}")


def _access_log_format() -> apigw.AccessLogFormat:
    field = apigw.AccessLogField
    return apigw.AccessLogFormat.custom(
        json.dumps(
            {
                "requestId": field.context_request_id(),
                "extendedRequestId": field.context_extended_request_id(),
                "requestTime": field.context_request_time(),
                "ip": field.context_identity_source_ip(),
                "userAgent": field.context_identity_user_agent(),
                "httpMethod": field.context_http_method(),
                "resourcePath": field.context_resource_path(),
                "status": field.context_status(),
                "responseLength": field.context_response_length(),
                "responseLatency": field.context_response_latency(),
                "integrationLatency": field.context_integration_latency(),
                "principalId": field.context_authorizer_principal_id(),
                "authorizerError": field.context_authorizer_error(),
                "errorMessage": field.context_error_message(),
                "validationError": field.context_error_validation_error_string(),
                "xrayTraceId": field.context_xray_trace_id(),
            }
        )
    )


class ApiGatewayLogging(Construct):
    """The region's API Gateway account setting: the role API Gateway writes execution logs with.

    Our own role with an inline policy (the managed AmazonAPIGatewayPushToCloudWatchLogs policy is
    not used). Retained on delete: the setting is shared by every API in the account and region.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        log_groups = Stack.of(self).format_arn(
            service="logs", resource="log-group", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway: write REST API execution logs to CloudWatch Logs",
            inline_policies={
                "ExecutionLogs": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            actions=[
                                "logs:CreateLogGroup",
                                "logs:CreateLogStream",
                                "logs:DescribeLogGroups",
                                "logs:DescribeLogStreams",
                                "logs:PutLogEvents",
                                "logs:GetLogEvents",
                                "logs:FilterLogEvents",
                            ],
                            resources=[log_groups],
                        )
                    ]
                )
            },
        )
        self.role.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge_wildcards(
            self.role,
            "API Gateway's account-wide logging role creates and writes the log groups of every REST API "
            "and stage in the region (API-Gateway-Execution-Logs_<api-id>/<stage>); their names are not "
            "known in advance and DescribeLogGroups is not resource-scoped",
            log_groups,
        )
        self.account = apigw.CfnAccount(self, "Account", cloud_watch_role_arn=self.role.role_arn)
        self.account.apply_removal_policy(RemovalPolicy.RETAIN)


class OrdersApi(Construct):
    """API Gateway REST API, its two Lambdas, the JWT signing secret and the gateway responses."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        package: LambdaPackage,
        table: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, construct_id)
        self.jwt_secret = self._generated_secret(
            "JwtSigningSecret",
            jwt_secret_name(config.stage),
            "HS256 signing secret of the Energy Auction API's bearer tokens",
            "Rotating the signing secret invalidates every issued token, so it is rotated by hand at a "
            "chosen time (README runbook: rotating the JWT signing secret), not on a schedule",
            config,
        )
        self.cursor_secret = self._generated_secret(
            "CursorSigningKey",
            cursor_secret_name(config.stage),
            "HMAC key of the Energy Auction API's listing cursors (GET /orders)",
            "Rotating the cursor key only invalidates the cursors handed out (a client starts its "
            "listing again), so it is rotated by hand like the signing secret, not on a schedule",
            config,
        )
        self.handler = ServiceFunction(
            self,
            "Handler",
            config=config,
            package=package,
            handler="api",
            description=", ".join(f"{r.method} {r.path}" for r in ROUTES),
            memory_size=512,
            # The store stops retrying after about 6 s (storage_retry_budget_seconds), with one call
            # of at most about 6 s still in flight (2 botocore attempts of 1 s connect + 2 s read):
            # the function answers 503 before it times out.
            timeout=Duration.seconds(15),
            environment=settings_env(
                backend="aws",
                orders_table=table.table_name,
                cursor_secret_id=cursor_secret_name(config.stage),
            ),
        )
        # A submission is one TransactWriteItems of conditional Puts (authorised as PutItem); a
        # cancel one conditional UpdateItem; a listing queries a listing index, then BatchGetItem.
        self.handler.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:PutItem",
                    "dynamodb:GetItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:BatchGetItem",
                ],
                resources=[table.table_arn],
            )
        )
        self.handler.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dynamodb:Query"],
                resources=[
                    f"{table.table_arn}/index/{TRADER_INDEX}",
                    f"{table.table_arn}/index/{TIME_INDEX}",
                ],
            )
        )
        self.cursor_secret.grant_read(self.handler.role)

        self.authorizer_function = ServiceFunction(
            self,
            "Authorizer",
            config=config,
            package=package,
            handler="authorizer",
            description="REQUEST authorizer: verifies the bearer JWT",
            memory_size=512,
            timeout=Duration.seconds(5),
            environment=settings_env(backend="aws", jwt_secret_id=jwt_secret_name(config.stage)),
        )
        self.jwt_secret.grant_read(self.authorizer_function.role)

        logging = ApiGatewayLogging(self, "Logging")
        self.access_logs = config.log_group(
            self, "AccessLogs", f"/aws/apigateway/{config.resource_prefix}-access"
        )
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{config.resource_prefix}-api",
            description="Energy Auction order intake",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,  # ApiGatewayLogging sets the account's role
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                throttling_rate_limit=config.throttle_rate_limit,
                throttling_burst_limit=config.throttle_burst_limit,
                logging_level=apigw.MethodLoggingLevel.INFO,
                data_trace_enabled=False,  # full request logs would hold bearer tokens
                metrics_enabled=True,
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=_access_log_format(),
            ),
        )
        self.rest_api.deployment_stage.node.add_dependency(logging.account)

        self.authorizer = apigw.RequestAuthorizer(
            self,
            "TokenAuthorizer",
            authorizer_name=f"{config.resource_prefix}-jwt",
            handler=self.authorizer_function.function,
            identity_sources=[apigw.IdentitySource.header("Authorization")],
            results_cache_ttl=Duration.seconds(config.authorizer_cache_seconds),
        )
        validator = self.rest_api.add_request_validator(
            "Validator",
            request_validator_name="orders-request",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        model = self.rest_api.add_model(
            "OrdersModel",
            model_name="Orders",
            content_type="application/json",
            schema=_json_schema(orders_request_schema()),
        )
        integration = apigw.LambdaIntegration(self.handler.function)
        # One method per route of the route table, all behind the authorizer; POST /orders is
        # validated against the orders schema before it reaches the function.
        for route in ROUTES:
            self.rest_api.root.resource_for_path(route.path).add_method(
                route.method,
                integration,
                authorizer=self.authorizer,
                authorization_type=apigw.AuthorizationType.CUSTOM,
                request_validator=validator if route.takes_orders else None,
                request_models={"application/json": model} if route.takes_orders else None,
            )

        acknowledge(
            self.rest_api,
            "COG4",
            "Callers authenticate with HS256 bearer JWTs verified by the REQUEST Lambda authorizer on every "
            "method (ARCHITECTURE decision 6); there is no Cognito user pool",
        )
        acknowledge(
            self.rest_api.deployment_stage,
            "APIG3",
            "No WAF web ACL: every method requires a valid bearer token and the stage is throttled; a "
            "web ACL is an account-level choice, listed as a hardening option in the README runbook",
        )

        for response_type, (status, body) in GATEWAY_RESPONSES.items():
            self._gateway_response(response_type, status, json.dumps(body))
        self._gateway_response("BAD_REQUEST_BODY", 422, VALIDATION_FAILED_TEMPLATE)
        self._gateway_response(
            "THROTTLED",
            429,
            json.dumps(THROTTLED_BODY),
            {"Retry-After": f"'{THROTTLED_RETRY_AFTER_SECONDS}'"},
        )
        for response_type, error in GATEWAY_DEFAULT_ERRORS.items():
            self._gateway_response(response_type, None, default_error_template(error))

    def _generated_secret(
        self, construct_id: str, name: str, description: str, why_not_rotated: str, config: StageConfig
    ) -> secretsmanager.Secret:
        """A secret of 64 random characters made at deploy, rotated by hand (``why_not_rotated``)."""
        secret = secretsmanager.Secret(
            self,
            construct_id,
            secret_name=name,
            description=description,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
            removal_policy=config.removal_policy,
        )
        acknowledge(secret, "SMG4", why_not_rotated)
        return secret

    def _gateway_response(
        self,
        response_type: str,
        status: int | None,
        template: str,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """A JSON gateway response; ``status`` None keeps the status API Gateway chose (DEFAULT_*)."""
        headers = {"Content-Type": "'application/json'", **(extra_headers or {})}
        if status == 401:
            headers["WWW-Authenticate"] = f"'{BEARER_CHALLENGE}'"
        self.rest_api.add_gateway_response(
            f"{response_type.title().replace('_', '')}Response",
            type=apigw.ResponseType.of(response_type),
            status_code=None if status is None else str(status),
            templates={"application/json": template},
            response_headers=headers,
        )


_SCHEMA_KEYWORDS = {"$schema": "schema", "not": "not_", "additionalProperties": "additional_properties"}
_NESTED_ONE = ("items", "not", "additionalProperties")
_NESTED_MANY = ("anyOf", "oneOf", "allOf")


def _json_schema(schema: dict[str, Any]) -> apigw.JsonSchema:
    """The CDK struct for a JSON Schema dict (the test compares the synthesized model with the dict)."""
    props: dict[str, Any] = {}
    for key, raw in schema.items():
        name = _SCHEMA_KEYWORDS.get(key) or re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        value: Any = raw
        if key == "$schema":
            value = apigw.JsonSchemaVersion.DRAFT4
        elif key == "type":
            value = apigw.JsonSchemaType[raw.upper()]
        elif key == "properties":
            value = {prop: _json_schema(sub) for prop, sub in raw.items()}
        elif key in _NESTED_ONE and isinstance(raw, dict):
            value = _json_schema(raw)
        elif key in _NESTED_MANY:
            value = [_json_schema(sub) for sub in raw]
        props[name] = value
    return apigw.JsonSchema(**props)
