"""Bearer tokens: HS256 JWTs with sub, iat and exp. Verification and minting; no AWS here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeGuard

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub")
MIN_SECRET_BYTES = 32
SUBJECT_RULE = "a token's subject must have a character that is not whitespace"


def is_subject(value: object) -> TypeGuard[str]:
    """Whether a token may speak for ``value``: the one rule for verifying and for minting."""
    return isinstance(value, str) and bool(value.strip())


class InvalidToken(Exception):
    """The Authorization header does not carry a token this service accepts.

    ``reason`` is a short, fixed category safe to log; it never contains the token or library text.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Role(StrEnum):
    """What a token may do, from its ``role`` claim (absent: a trader)."""

    TRADER = "trader"
    """Submits, reads, lists and cancels their own orders."""
    OPERATOR = "operator"
    """Reads and lists every trader's orders; submits and cancels nothing."""


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for, and in which role."""

    subject: str
    role: Role = Role.TRADER
    claims: dict[str, Any] = field(default_factory=dict)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization or not authorization.strip():
        raise InvalidToken("missing")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("wrong_scheme")
    return token.strip()


_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "bad_algorithm"),
    (jwt.InvalidAudienceError, "bad_audience"),
    (jwt.InvalidIssuerError, "bad_issuer"),
    (jwt.DecodeError, "malformed"),
)


class TokenVerifier:
    """Verifies HS256 bearer tokens against one secret (iss and aud checked when configured)."""

    def __init__(
        self,
        secret: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: int = 0,
    ) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds

    def verify(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        try:
            # The header's alg is checked against this explicit list, so "none" and RS/ES algs fail.
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={
                    "require": [*REQUIRED_CLAIMS, *(["iss"] if self._issuer else [])],
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.PyJWTError as err:
            raise InvalidToken(next((r for t, r in _REASONS if isinstance(err, t)), "invalid")) from None
        subject = claims.get("sub")
        if not is_subject(subject):
            raise InvalidToken("missing_claim")
        role = claims.get("role", Role.TRADER.value)
        if not isinstance(role, str) or role not in set(Role):
            raise InvalidToken("bad_role")
        return Principal(subject=subject, role=Role(role), claims=claims)


def mint_token(
    secret: str,
    *,
    subject: str,
    ttl_seconds: int = 3600,
    now: float | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    role: Role | None = None,
) -> str:
    """An HS256 token with sub, iat and exp (plus iss/aud, and role, when given).

    Raises
    ------
    ValueError
        ``subject`` is one no :class:`TokenVerifier` accepts (:data:`SUBJECT_RULE`).
    """
    if not is_subject(subject):
        raise ValueError(SUBJECT_RULE)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "iat": issued, "exp": issued + ttl_seconds}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    if role is not None:
        claims["role"] = role.value
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
