"""Bearer tokens: what TokenVerifier accepts and refuses, bearer_token parsing, and mint_token."""

from __future__ import annotations

import time

import jwt
import pytest

from energy_auction.auth import InvalidToken, TokenVerifier, bearer_token, mint_token
from energy_auction.roles import Role

from ..conftest import SECRET
from ..events import INVALID_AUTHORIZATION_CASES, invalid_authorization, jwt_token


def now() -> int:
    return int(time.time())


def claims(**overrides: object) -> dict[str, object]:
    t = now()
    return {"sub": "trader-1", "iat": t, "exp": t + 3600, **overrides}


# --- Accepted tokens


def test_token_signed_with_plain_pyjwt_hs256_is_accepted() -> None:
    # Given a token any HS256 JWT library would produce with the shared secret
    token = jwt.encode(claims(sub="trader-42"), SECRET, algorithm="HS256")

    # When it is verified
    principal = TokenVerifier(SECRET).verify(f"Bearer {token}")

    # Then it speaks for its subject and carries its claims
    assert principal.subject == "trader-42"
    assert principal.claims["sub"] == "trader-42"
    assert principal.claims["exp"] - principal.claims["iat"] == 3600


def test_bearer_scheme_is_case_insensitive_and_surrounding_spaces_are_ignored() -> None:
    token = jwt_token(claims())
    verifier = TokenVerifier(SECRET)
    assert verifier.verify(f"bearer {token}").subject == "trader-1"
    assert verifier.verify(f"  BEARER   {token}  ").subject == "trader-1"


def test_leeway_accepts_a_token_that_expired_within_it() -> None:
    token = jwt_token(claims(iat=now() - 100, exp=now() - 5))
    with pytest.raises(InvalidToken):
        TokenVerifier(SECRET).verify(f"Bearer {token}")
    assert TokenVerifier(SECRET, leeway_seconds=60).verify(f"Bearer {token}").subject == "trader-1"


# --- Refused tokens: every case carries a fixed reason


@pytest.mark.parametrize("case", INVALID_AUTHORIZATION_CASES)
def test_unusable_authorization_is_refused_with_a_fixed_reason(case: str) -> None:
    # Given an Authorization header the service must not accept
    authorization, expected_reason = invalid_authorization(case)

    # When it is verified
    with pytest.raises(InvalidToken) as refused:
        TokenVerifier(SECRET).verify(authorization)

    # Then it is refused for the expected reason
    assert refused.value.reason == expected_reason


@pytest.mark.parametrize("case", INVALID_AUTHORIZATION_CASES)
def test_refusal_never_repeats_the_token(case: str) -> None:
    authorization, _ = invalid_authorization(case)
    with pytest.raises(InvalidToken) as refused:
        TokenVerifier(SECRET).verify(authorization)

    error = refused.value
    token = (authorization or "").strip().partition(" ")[2].strip()
    texts = (str(error), repr(error), error.reason, *(str(a) for a in error.args))
    if token:
        assert all(token not in text for text in texts)
        # no token fragment either (e.g. a decoded header or payload segment)
        for segment in (s for s in token.split(".") if len(s) > 8):
            assert all(segment not in text for text in texts)
    # and the library's exception (whose text could mention the token) is not chained as the cause
    assert error.__cause__ is None


# --- NumericDates: exp, iat and nbf are JSON numbers (RFC 7519)


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value",
    ["a string of digits", True, False, None, float("nan"), float("inf"), [1], {"at": 1}],
    ids=["digits string", "true", "false", "null", "NaN", "Infinity", "array", "object"],
)
def test_a_time_claim_that_is_not_a_json_number_is_refused(name: str, value: object) -> None:
    # Given a well-signed token whose time claim is not a number (PyJWT alone reads int() of it)
    if value == "a string of digits":
        value = str(claims()[name] if name != "nbf" else now() - 10)
    token = jwt_token(claims(**{name: value}))

    # When it is verified, then it is refused for a fixed reason (a required claim that is null is missing)
    with pytest.raises(InvalidToken) as refused:
        TokenVerifier(SECRET).verify(f"Bearer {token}")
    assert refused.value.reason == (
        "missing_claim" if value is None and name != "nbf" else "bad_numeric_date"
    )


def test_time_claims_may_be_fractional_numbers() -> None:
    t = time.time()
    token = jwt_token(claims(iat=t - 0.5, nbf=t - 0.25, exp=t + 60.5))
    assert TokenVerifier(SECRET).verify(f"Bearer {token}").subject == "trader-1"


# --- The longest lifetime (exp - iat): 24 hours unless configured


def test_a_token_living_exactly_the_maximum_is_accepted() -> None:
    t = now()
    assert TokenVerifier(SECRET).verify(f"Bearer {jwt_token(claims(iat=t, exp=t + 86400))}")
    assert TokenVerifier(SECRET, max_lifetime_seconds=600).verify(
        f"Bearer {jwt_token(claims(exp=now() + 600))}"
    )


@pytest.mark.parametrize(("limit", "lifetime"), [(None, 86401), (None, 10 * 365 * 86400), (600, 601)])
def test_a_token_living_longer_than_the_maximum_is_refused(limit: int | None, lifetime: int) -> None:
    # Given a verifier with the default limit (24 h) or a configured one, and a longer-lived token
    verifier = TokenVerifier(SECRET) if limit is None else TokenVerifier(SECRET, max_lifetime_seconds=limit)
    t = now()
    token = jwt_token(claims(iat=t, exp=t + lifetime))

    # Then it is refused, however valid it is otherwise
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(f"Bearer {token}")
    assert refused.value.reason == "lifetime_too_long"


# --- Roles


@pytest.mark.parametrize(
    ("extra", "role"),
    [({}, Role.TRADER), ({"role": "trader"}, Role.TRADER), ({"role": "operator"}, Role.OPERATOR)],
    ids=["no role claim", "trader", "operator"],
)
def test_the_principal_carries_the_tokens_role(extra: dict[str, object], role: Role) -> None:
    principal = TokenVerifier(SECRET).verify(f"Bearer {jwt_token(claims(**extra))}")
    assert principal.role is role


@pytest.mark.parametrize("value", ["admin", "Operator", "", " trader", 1, True, None, ["operator"]])
def test_an_unknown_or_non_string_role_is_refused(value: object) -> None:
    with pytest.raises(InvalidToken) as refused:
        TokenVerifier(SECRET).verify(f"Bearer {jwt_token(claims(role=value))}")
    assert refused.value.reason == "bad_role"


# --- bearer_token


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("  \t ", "missing"),
        ("Basic abc", "wrong_scheme"),
        ("Token abc", "wrong_scheme"),
        ("Bearer", "wrong_scheme"),
        ("Bearer    ", "wrong_scheme"),
        ("Bearerabc", "wrong_scheme"),
    ],
)
def test_bearer_token_refuses_headers_without_a_bearer_token(header: str | None, reason: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        bearer_token(header)
    assert refused.value.reason == reason


def test_bearer_token_returns_the_token_text() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc.def.ghi  ") == "abc.def.ghi"


# --- Issuer and audience: checked only when configured


def test_issuer_is_ignored_when_not_configured() -> None:
    token = jwt_token(claims(iss="https://someone-else.example"))
    assert TokenVerifier(SECRET).verify(f"Bearer {token}").subject == "trader-1"


def test_configured_issuer_must_match_and_be_present() -> None:
    verifier = TokenVerifier(SECRET, issuer="https://auth.example")

    assert verifier.verify(f"Bearer {jwt_token(claims(iss='https://auth.example'))}").subject == "trader-1"

    with pytest.raises(InvalidToken) as wrong:
        verifier.verify(f"Bearer {jwt_token(claims(iss='https://evil.example'))}")
    assert wrong.value.reason == "bad_issuer"

    with pytest.raises(InvalidToken) as missing:
        verifier.verify(f"Bearer {jwt_token(claims())}")
    assert missing.value.reason == "missing_claim"


def test_audience_is_ignored_when_not_configured() -> None:
    token = jwt_token(claims(aud="some-other-api"))
    assert TokenVerifier(SECRET).verify(f"Bearer {token}").subject == "trader-1"


def test_configured_audience_must_match_and_be_present() -> None:
    verifier = TokenVerifier(SECRET, audience="energy-auction")

    assert verifier.verify(f"Bearer {jwt_token(claims(aud='energy-auction'))}").subject == "trader-1"
    assert verifier.verify(f"Bearer {jwt_token(claims(aud=['x', 'energy-auction']))}").subject == "trader-1"

    with pytest.raises(InvalidToken) as wrong:
        verifier.verify(f"Bearer {jwt_token(claims(aud='another-api'))}")
    assert wrong.value.reason == "bad_audience"

    with pytest.raises(InvalidToken) as missing:
        verifier.verify(f"Bearer {jwt_token(claims())}")
    assert missing.value.reason == "missing_claim"


# --- The secret


@pytest.mark.parametrize("secret", ["", "short", "x" * 31, "é" * 15])  # "é" is 2 bytes: 30 bytes
def test_secret_shorter_than_32_bytes_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier(secret)


def test_secret_of_32_bytes_is_allowed() -> None:
    secret = "k" * 32
    token = jwt_token(claims(), secret=secret)
    assert TokenVerifier(secret).verify(f"Bearer {token}").subject == "trader-1"


# --- mint_token


def test_minted_token_carries_subject_and_lifetime() -> None:
    # Given a token minted at a fixed time for one hour and a half
    token = mint_token(SECRET, subject="trader-9", ttl_seconds=5400, now=1_700_000_000.7)

    # Then it is an HS256 JWT with exactly sub, iat and exp
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert decoded == {"sub": "trader-9", "iat": 1_700_000_000, "exp": 1_700_005_400}


@pytest.mark.parametrize("role", [Role.TRADER, Role.OPERATOR])
def test_minted_token_with_a_role_carries_it_and_verifies_as_that_role(role: Role) -> None:
    token = mint_token(SECRET, subject="ops-1", role=role)

    assert jwt.decode(token, SECRET, algorithms=["HS256"])["role"] == role.value
    assert TokenVerifier(SECRET).verify(f"Bearer {token}").role is role


def test_minted_token_without_a_role_has_no_role_claim_and_is_a_traders() -> None:
    token = mint_token(SECRET, subject="desk-1")

    assert "role" not in jwt.decode(token, SECRET, algorithms=["HS256"])
    assert TokenVerifier(SECRET).verify(f"Bearer {token}").role is Role.TRADER


def test_a_role_that_is_not_a_role_is_not_minted() -> None:
    with pytest.raises(ValueError, match="trader, operator"):
        mint_token(SECRET, subject="x", role="admin")  # type: ignore[arg-type]


def test_minted_token_is_accepted_until_it_expires() -> None:
    verifier = TokenVerifier(SECRET)
    fresh = mint_token(SECRET, subject="trader-3", ttl_seconds=600)
    assert verifier.verify(f"Bearer {fresh}").subject == "trader-3"

    stale = mint_token(SECRET, subject="trader-3", ttl_seconds=600, now=now() - 601)
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(f"Bearer {stale}")
    assert refused.value.reason == "expired"


def test_minted_token_with_issuer_and_audience_passes_a_verifier_configured_for_them() -> None:
    token = mint_token(SECRET, subject="trader-5", issuer="https://auth.example", audience="energy-auction")
    verifier = TokenVerifier(SECRET, issuer="https://auth.example", audience="energy-auction")
    principal = verifier.verify(f"Bearer {token}")
    assert principal.subject == "trader-5"
    assert principal.claims["iss"] == "https://auth.example"
    assert principal.claims["aud"] == "energy-auction"


def test_minted_token_signed_with_another_secret_is_refused() -> None:
    token = mint_token("another-secret-also-long-enough-0123456789", subject="trader-1")
    with pytest.raises(InvalidToken) as refused:
        TokenVerifier(SECRET).verify(f"Bearer {token}")
    assert refused.value.reason == "bad_signature"


@pytest.mark.parametrize("subject", ["", " ", "\t"])
def test_a_blank_subject_is_neither_minted_nor_accepted(subject: str) -> None:
    # A token for nobody: the authorizer's policy and the logs would name no one
    with pytest.raises(ValueError, match="subject"):
        mint_token(SECRET, subject=subject)

    with pytest.raises(InvalidToken) as refused:
        TokenVerifier(SECRET).verify(f"Bearer {jwt_token(claims(sub=subject))}")
    assert refused.value.reason == "missing_claim"
