"""Bearer tokens: HS256 JWTs with sub, iat and exp, and a role (:class:`Role`, declared in
:mod:`energy_auction.roles`). Verification and minting; no AWS here."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import jwt

from energy_auction.roles import Role
from energy_auction.settings import DEFAULT_JWT_MAX_LIFETIME_SECONDS

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub")
NUMERIC_DATE_CLAIMS = ("exp", "iat", "nbf")
"""Claims that must be JSON numbers of seconds since the epoch when present (RFC 7519 NumericDate)."""
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


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for, and in which role."""

    subject: str
    claims: dict[str, Any] = field(default_factory=dict)
    role: Role = Role.TRADER


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


def _is_numeric_date(value: object) -> bool:
    # bool is an int subclass, and Python's JSON reads NaN and Infinity: neither is a NumericDate.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TokenVerifier:
    """Verifies HS256 bearer tokens against one secret (iss and aud checked when configured).

    ``exp``, ``iat`` and ``nbf`` must be JSON numbers, and a token may live at most
    ``max_lifetime_seconds`` (``exp - iat``); ``role`` is absent, or one of :class:`Role`.
    """

    def __init__(
        self,
        secret: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: int = 0,
        max_lifetime_seconds: int = DEFAULT_JWT_MAX_LIFETIME_SECONDS,
    ) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds

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
                options={
                    "require": [*REQUIRED_CLAIMS, *(["iss"] if self._issuer else [])],
                    "verify_aud": self._audience is not None,
                    # The times are checked below, once known to be numbers: PyJWT takes int() of
                    # them, so "1700000000" and true would pass for NumericDates.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as err:
            raise InvalidToken(next((r for t, r in _REASONS if isinstance(err, t)), "invalid")) from None
        self._check_times(claims)
        subject = claims.get("sub")
        if not is_subject(subject):
            raise InvalidToken("missing_claim")
        role = claims.get("role", Role.TRADER.value)
        if not isinstance(role, str) or role not in set(Role):
            raise InvalidToken("bad_role")
        return Principal(subject=subject, claims=claims, role=Role(role))

    def _check_times(self, claims: dict[str, Any]) -> None:
        if not all(_is_numeric_date(claims[name]) for name in NUMERIC_DATE_CLAIMS if name in claims):
            raise InvalidToken("bad_numeric_date")
        now = time.time()
        if claims["exp"] <= now - self._leeway:
            raise InvalidToken("expired")
        if max(claims["iat"], claims.get("nbf", claims["iat"])) > now + self._leeway:
            raise InvalidToken("not_yet_valid")
        if claims["exp"] - claims["iat"] > self._max_lifetime:
            raise InvalidToken("lifetime_too_long")


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
    """An HS256 token with sub, iat and exp (plus iss/aud when given, and role when given: none
    means a trader's token).

    Raises
    ------
    ValueError
        ``subject`` is one no :class:`TokenVerifier` accepts (:data:`SUBJECT_RULE`), or ``role``
        is not a :class:`Role`.
    """
    if not is_subject(subject):
        raise ValueError(SUBJECT_RULE)
    if role is not None and role not in set(Role):
        raise ValueError(f"a token's role is one of {', '.join(Role)}, not {role!r}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "iat": issued, "exp": issued + ttl_seconds}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    if role is not None:
        claims["role"] = Role(role).value
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
