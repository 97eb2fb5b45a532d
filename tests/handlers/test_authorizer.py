"""The REQUEST authorizer Lambda: a policy for good tokens, "Unauthorized" for everything else."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from energy_auction import bootstrap
from energy_auction.deployment import SERVICE
from energy_auction.handlers import authorizer
from energy_auction.local.gateway import policy_allows
from energy_auction.local.lambdas import LocalLambdaContext
from energy_auction.observability import logger
from energy_auction.roles import Role
from energy_auction.routes import ROUTES, routes_for
from energy_auction.settings import Backend, Settings

from ..conftest import SECRET
from ..events import (
    ACCOUNT,
    API_ID,
    INVALID_AUTHORIZATION_CASES,
    STAGE,
    authorizer_event,
    bearer,
    invalid_authorization,
    jwt_token,
    method_arn,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

pytestmark = pytest.mark.usefixtures("local_container")

API_ARN = f"arn:aws:execute-api:eu-west-1:{ACCOUNT}:{API_ID}/{STAGE}"


def authorize(event: dict[str, Any]) -> dict[str, Any]:
    # LocalLambdaContext has every attribute the handler and Powertools read from Lambda's context
    # object, without being Powertools' LambdaContext class.
    context = cast("LambdaContext", LocalLambdaContext("authorizer"))
    result: dict[str, Any] = authorizer.handler(event, context)
    return result


def allowed_resources(policy: dict[str, Any]) -> list[str]:
    resources: list[str] = []
    for statement in policy["policyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        assert statement["Action"] in ("execute-api:Invoke", ["execute-api:Invoke"])
        found = statement["Resource"]
        resources.extend([found] if isinstance(found, str) else found)
    return resources


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the handlers log at INFO, as Powertools formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    underlying = logging.getLogger(SERVICE)
    previous_level = logger.log_level
    underlying.addHandler(handler)
    logger.setLevel("INFO")
    try:
        yield stream
    finally:
        logger.setLevel(previous_level)
        underlying.removeHandler(handler)


# --- Accepted


TRADER_ROUTES = [("POST", "/orders"), ("GET", "/orders"), ("GET", "/orders/a-1"), ("DELETE", "/orders/a-1")]
OPERATOR_ROUTES = [("GET", "/orders"), ("GET", "/orders/a-1")]


@pytest.mark.parametrize(("method", "path"), TRADER_ROUTES)
def test_a_traders_token_gets_a_policy_for_every_trader_route_of_the_same_api_and_stage(
    method: str, path: str
) -> None:
    # Given a request carrying a valid token for trader-7 (no role claim: a trader)
    event = authorizer_event(bearer("trader-7"), method=method, path=path)

    # When the authorizer runs
    policy = authorize(event)

    # Then the policy speaks for trader-7 and allows every trader route of this API and stage
    assert policy["principalId"] == "trader-7"
    assert policy["context"] == {"sub": "trader-7", "role": "trader"}
    resources = allowed_resources(policy)
    assert sorted(resources) == sorted(
        [
            f"{API_ARN}/POST/orders",
            f"{API_ARN}/GET/orders",
            f"{API_ARN}/GET/orders/*",
            f"{API_ARN}/DELETE/orders/*",
        ]
    )
    # the policy is cached per token and reused for the other routes, so it must cover them all
    for other_method, other_path in TRADER_ROUTES:
        assert policy_allows(policy, method_arn(other_method, other_path))


@pytest.mark.parametrize(("method", "path"), OPERATOR_ROUTES)
def test_an_operators_cached_policy_allows_reading_and_listing_and_nothing_else(
    method: str, path: str
) -> None:
    # Given a request carrying an operator's token
    event = authorizer_event(bearer("ops-1", role=Role.OPERATOR), method=method, path=path)

    # When the authorizer runs
    policy = authorize(event)

    # Then the policy passes the role on, and allows exactly the operator's routes: never a
    # submission or a cancel, whichever route the policy was first made for
    assert policy["context"] == {"sub": "ops-1", "role": "operator"}
    assert sorted(allowed_resources(policy)) == [f"{API_ARN}/GET/orders", f"{API_ARN}/GET/orders/*"]
    assert not policy_allows(policy, method_arn("POST", "/orders"))
    assert not policy_allows(policy, method_arn("DELETE", "/orders/a-1"))


@pytest.mark.parametrize("role", list(Role))
def test_a_cached_policy_allows_a_route_exactly_when_the_route_table_gives_it_to_the_role(role: Role) -> None:
    # Given a policy made for each route a token of this role may call (API Gateway caches the
    # first one and reuses it for every route)
    for first in routes_for(role):
        example = first.path.replace("{record_id}", "a-1")
        policy = authorize(authorizer_event(bearer("someone", role=role), method=first.method, path=example))

        # Then it allows each route of the table if and only if the table gives it to the role: a
        # trader's cached policy never opens a route that is an operator's only, and the reverse
        for route in ROUTES:
            arn = method_arn(route.method, route.path.replace("{record_id}", "b-2"))
            assert policy_allows(policy, arn) is (role in route.roles), (
                role,
                first.operation,
                route.operation,
            )


def test_policy_is_scoped_to_the_api_and_stage_of_the_method_arn() -> None:
    event = authorizer_event(bearer())
    event["methodArn"] = "arn:aws:execute-api:us-east-2:111122223333:zzzz999/prod/POST/orders"

    resources = allowed_resources(authorize(event))

    assert sorted(resources) == [
        "arn:aws:execute-api:us-east-2:111122223333:zzzz999/prod/DELETE/orders/*",
        "arn:aws:execute-api:us-east-2:111122223333:zzzz999/prod/GET/orders",
        "arn:aws:execute-api:us-east-2:111122223333:zzzz999/prod/GET/orders/*",
        "arn:aws:execute-api:us-east-2:111122223333:zzzz999/prod/POST/orders",
    ]


def test_token_made_by_another_jwt_library_is_accepted() -> None:
    t = int(time.time())
    token = jwt_token({"sub": "trader-8", "iat": t, "exp": t + 60})
    assert authorize(authorizer_event(f"Bearer {token}"))["principalId"] == "trader-8"


@pytest.mark.parametrize("name", ["authorization", "AUTHORIZATION", "AuThOrIzAtIoN"])
def test_authorization_header_name_is_case_insensitive(name: str) -> None:
    event = authorizer_event(None)
    value = bearer("trader-2")
    event["headers"] = {name: value}
    event["multiValueHeaders"] = {name: [value]}

    assert authorize(event)["principalId"] == "trader-2"


# --- Refused


@pytest.mark.parametrize("case", INVALID_AUTHORIZATION_CASES)
def test_unusable_token_is_unauthorized(case: str) -> None:
    authorization, _ = invalid_authorization(case)

    with pytest.raises(Exception) as refused:  # noqa: PT011 (API Gateway only reads the message)
        authorize(authorizer_event(authorization))

    # API Gateway answers 401 only for this exact message
    assert str(refused.value) == "Unauthorized"


@pytest.mark.parametrize(
    "multi_value_headers",
    [
        {"Authorization": [bearer("trader-1"), bearer("trader-2")]},
        {"Authorization": [bearer("trader-1")], "authorization": [bearer("trader-2")]},
        {"authorization": [bearer("trader-1"), bearer("trader-1")]},
    ],
    ids=["two values", "two names differing in case", "the same token twice"],
)
def test_more_than_one_authorization_value_is_unauthorized(
    multi_value_headers: dict[str, list[str]], log_output: io.StringIO
) -> None:
    # Given a request whose headers (API Gateway keeps one value there) hold a valid token, and
    # whose multiValueHeaders show that the Authorization header came more than once
    event = authorizer_event(bearer("trader-1"))
    event["multiValueHeaders"] = multi_value_headers

    # When the authorizer runs, then it refuses it, and says why in the log
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(event)
    records = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert any(r.get("message") == "token refused" and r.get("reason") == "repeated_header" for r in records)


def test_issuer_is_checked_when_configured(tmp_path: Path) -> None:
    settings = Settings(
        backend=Backend.LOCAL, home=tmp_path, jwt_secret=SECRET, jwt_issuer="https://auth.example"
    )
    bootstrap.use(bootstrap.Container(settings))

    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(authorizer_event(bearer()))  # no iss claim


def test_the_configured_longest_token_lifetime_is_enforced(tmp_path: Path) -> None:
    # Given a stack that accepts tokens of at most 10 minutes
    settings = Settings(backend=Backend.LOCAL, home=tmp_path, jwt_secret=SECRET, jwt_max_lifetime_seconds=600)
    bootstrap.use(bootstrap.Container(settings))

    # Then a 10-minute token is accepted and an 11-minute one refused
    assert authorize(authorizer_event(bearer(ttl=600)))["principalId"] == "trader-1"
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(authorizer_event(bearer(ttl=660)))


def test_a_token_whose_expiry_is_a_string_is_unauthorized(log_output: io.StringIO) -> None:
    t = int(time.time())
    token = jwt_token({"sub": "trader-1", "iat": t, "exp": str(t + 600)})

    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(authorizer_event(f"Bearer {token}"))

    records = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert any(r.get("message") == "token refused" and r.get("reason") == "bad_numeric_date" for r in records)


def test_rotated_secret_takes_effect_without_a_new_container(tmp_path: Path) -> None:
    # Given the secret comes from the local secret file
    settings = Settings(backend=Backend.LOCAL, home=tmp_path)
    bootstrap.use(bootstrap.Container(settings))
    secret_file = settings.jwt_secret_file
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text("first-secret-long-enough-0123456789abcdef")
    assert authorize(authorizer_event(bearer(secret="first-secret-long-enough-0123456789abcdef")))

    # When it is rotated, then old tokens are refused and new ones accepted
    secret_file.write_text("second-secret-long-enough-0123456789abcdef")
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(authorizer_event(bearer(secret="first-secret-long-enough-0123456789abcdef")))
    assert authorize(authorizer_event(bearer(secret="second-secret-long-enough-0123456789abcdef")))


# --- Logs


def test_refusal_logs_the_reason_but_never_the_token(log_output: io.StringIO) -> None:
    authorization, _ = invalid_authorization("wrong signature")
    assert authorization is not None
    token = authorization.removeprefix("Bearer ")

    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(authorizer_event(authorization))

    text = log_output.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    assert any(r.get("message") == "token refused" and r.get("reason") == "bad_signature" for r in records)
    assert token not in text
    assert all(part not in text for part in token.split("."))


def test_acceptance_logs_the_principal_but_never_the_token(log_output: io.StringIO) -> None:
    authorization = bearer("trader-11")
    token = authorization.removeprefix("Bearer ")

    authorize(authorizer_event(authorization))

    text = log_output.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    assert any(r.get("message") == "token accepted" and r.get("principal") == "trader-11" for r in records)
    assert all(part not in text for part in token.split("."))
