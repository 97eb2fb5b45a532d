"""JSON that keeps numbers exact: Decimals are written as JSON numbers, and read back as Decimals."""

from __future__ import annotations

from typing import Any

import simplejson


def dumps(value: Any) -> str:
    return simplejson.dumps(value, use_decimal=True, separators=(",", ":"), default=_default)


def loads(text: str | bytes) -> Any:
    return simplejson.loads(text, use_decimal=True)


def _default(value: Any) -> Any:
    # Enums (StrEnum) and pydantic models used as values.
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="python")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
