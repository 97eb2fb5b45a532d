"""REQUEST authorizer Lambda: verifies the bearer token and returns an IAM policy.

An unusable token answers "Unauthorized" (API Gateway's 401); the reason is logged as a fixed
category, never with the token or exception text.

This handler runs on every uncached request, so it keeps its cold start small: no pydantic, no
X-Ray SDK (Lambda's active tracing still records each invocation) and a policy built here rather
than through Powertools' data classes, whose package import alone costs ~60 ms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths

from energy_auction.auth import InvalidToken
from energy_auction.bootstrap import container
from energy_auction.observability import logger
from energy_auction.roles import Role
from energy_auction.routes import routes_for

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


class Unauthorized(Exception):
    """Raised with the exact message API Gateway turns into a 401 response."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def policy_for(method_arn: str, principal: str, role: Role, context: dict[str, Any]) -> dict[str, Any]:
    """Allow exactly the routes of ``role`` on this API stage for ``principal``.

    The policy covers every route of the role, not only the one called, because API Gateway caches
    it per token and reuses it for every method the authorizer protects; a route of another role
    is not in it, so a cached policy never lets a token past its role.

    ``method_arn`` is ``arn:<partition>:execute-api:<region>:<account>:<api-id>/<stage>/<VERB>/<path>``.
    """
    api_arn, _, stage_path = method_arn.partition("/")
    stage = stage_path.split("/", 1)[0]
    if not api_arn.count(":") == 5 or not stage:
        raise ValueError("unexpected methodArn")
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow",
                    "Resource": [f"{api_arn}/{stage}/{r.method}/{r.policy_path}" for r in routes_for(role)],
                }
            ],
        },
        "context": context,
    }


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def _value_count(multi_headers: dict[str, list[str]] | None, name: str) -> int:
    return sum(len(values or []) for key, values in (multi_headers or {}).items() if key.lower() == name)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    authorization = _header(event.get("headers"), "authorization")
    if _value_count(event.get("multiValueHeaders"), "authorization") > 1:
        # "headers" holds one of them only: which token would the request speak for?
        logger.info("token refused", extra={"reason": "repeated_header"})
        raise Unauthorized()
    try:
        principal = container().token_verifier().verify(authorization)
    except InvalidToken as err:
        logger.info("token refused", extra={"reason": err.reason})
        raise Unauthorized() from None
    logger.info("token accepted", extra={"principal": principal.subject, "role": principal.role.value})
    passed_on = {"sub": principal.subject, "role": principal.role.value}  # the API's caller
    return policy_for(event["methodArn"], principal.subject, principal.role, passed_on)
