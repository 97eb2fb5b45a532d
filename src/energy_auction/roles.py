"""The roles a bearer token may carry. A module of its own, without the JWT library, so that the CLI
can offer them without importing it."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a token's ``role`` claim may say; a token without one is a trader's."""

    TRADER = "trader"
    """Submits, reads, lists and cancels their own orders."""
    OPERATOR = "operator"
    """Reads and lists every trader's orders; submits and cancels nothing."""
