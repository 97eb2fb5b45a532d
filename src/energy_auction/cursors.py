"""Listing cursors: opaque, tamper-proof, and bound to the caller and the filters they were made for.

A cursor is ``<payload>.<tag>``, both base64url without padding: the payload says where the next
page starts (a ``listed_at``), the tag is an HMAC-SHA256 over the payload and the binding (the
caller's role and subject, and the filters). A cursor that was changed, made with another key,
or used by another caller or with other filters fails the check: :class:`InvalidCursor`. The
page size is not bound: a client may change ``limit`` between pages. No AWS here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping

from energy_auction.errors import InvalidCursor

CURSOR_MAX_LENGTH = 1024
"""Longer text is refused before any decoding."""
_TAG_BYTES = 16
_LABEL = b"energy-auction listing cursor v1\0"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Makes and checks cursors with one secret key (held by the API only)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the cursor key must be at least 32 bytes")
        self._key = hashlib.sha256(_LABEL + key).digest()

    def _tag(self, payload: str, binding: Mapping[str, str | None]) -> bytes:
        message = payload.encode() + b"\0" + json.dumps(dict(binding), sort_keys=True).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_TAG_BYTES]

    def make(self, before: str, binding: Mapping[str, str | None]) -> str:
        payload = _b64(json.dumps({"before": before}, separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._tag(payload, binding))}"

    def read(self, cursor: str, binding: Mapping[str, str | None]) -> str:
        """The ``listed_at`` the next page starts before.

        Raises
        ------
        InvalidCursor
            Not a cursor this codec made for this binding.
        """
        payload, dot, tag = cursor.partition(".")
        if len(cursor) > CURSOR_MAX_LENGTH or not dot or not payload.isascii() or not tag.isascii():
            raise InvalidCursor()
        try:
            given = _unb64(tag)
            if not hmac.compare_digest(given, self._tag(payload, binding)):
                raise InvalidCursor()
            before = json.loads(_unb64(payload))["before"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise InvalidCursor() from None
        if not isinstance(before, str):
            raise InvalidCursor()
        return before
