"""Turning Python values into MLflow param and tag strings, and back; UTC timestamps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys, e.g. ``{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_text(value: Any) -> str:
    """A string as it is; anything else as compact JSON (True -> "true", None -> "null")."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def from_text(text: str) -> Any:
    """A JSON object or list that a tag holds, decoded; any other text as it is.

    Scalars stay text on purpose: a git commit or digest of digits only must not become a number.
    """
    if not text.startswith(("{", "[")):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def utc_now() -> str:
    """The current UTC time, ISO 8601 with milliseconds (e.g. 2025-01-31T12:00:00.000+00:00)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def utc_from_ms(ms: int | None) -> str | None:
    """An MLflow millisecond timestamp as ISO 8601 UTC (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
