"""REQUEST authorizer Lambda: verifies the bearer token and returns an IAM policy.

An unusable token answers "Unauthorized" (API Gateway's 401); the reason is logged as a fixed
category, never with the token or exception text.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
    HttpVerb,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from energy_auction.auth import InvalidToken
from energy_auction.bootstrap import container
from energy_auction.observability import logger, tracer

# The routes one token may call. The policy covers all of them because API Gateway caches it per
# token and reuses it for every method the authorizer protects.
ROUTES = ((HttpVerb.POST, "/orders"), (HttpVerb.GET, "/orders/*"))


class Unauthorized(Exception):
    """Raised with the exact message API Gateway turns into a 401 response."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def policy_for(method_arn: str, principal: str, context: dict[str, Any]) -> dict[str, Any]:
    response = APIGatewayAuthorizerResponse.from_route_arn(
        method_arn, principal_id=principal, context=context
    )
    for verb, resource in ROUTES:
        response.allow_route(http_method=verb.value, resource=resource)
    return response.asdict()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = APIGatewayAuthorizerRequestEvent(event)
    authorization = request.headers.get("Authorization")  # case-insensitive in Powertools v3
    try:
        principal = container().token_verifier().verify(authorization)
    except InvalidToken as err:
        logger.info("token refused", extra={"reason": err.reason})
        raise Unauthorized() from None
    logger.info("token accepted", extra={"principal": principal.subject})
    return policy_for(request.method_arn, principal.subject, {"sub": principal.subject})
