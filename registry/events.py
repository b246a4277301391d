"""A version's event log: numbered tags ``event.0001``, ... holding JSON {time, kind, detail}."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient

from registry.values import utc_now

PREFIX = "event."


def record_event(
    client: MlflowClient,
    model_name: str,
    version: str | int,
    kind: str,
    detail: Mapping[str, Any] | None = None,
    dedupe: bool = False,
    once: bool = False,
) -> str:
    """Append an event (e.g. a rollout step) to a version's log.

    Args:
        kind: what happened, e.g. "rollout", "promotion", "approval".
        detail: JSON-ready facts about it.
        dedupe: skip it when the latest event has the same kind and detail (a retried task).
        once: skip it when any event has the same kind and detail (a step replayed after a
            crash, with other events recorded in between).
    Returns:
        The event's tag key, e.g. ``event.0003`` (the existing one when deduplicated).
    Raises:
        MlflowException: no such version, or the store failed.
    """
    tags = client.get_model_version(model_name, str(version)).tags
    log = events(tags)
    detail = dict(detail or {})
    same = [e for e in log if e["kind"] == kind and e["detail"] == _jsonable(detail)]
    if same and (once or (dedupe and same[-1] is log[-1])):
        return event_key(same[-1]["seq"])
    seq = (log[-1]["seq"] + 1) if log else 1
    key = event_key(seq)
    value = json.dumps({"time": utc_now(), "kind": kind, "detail": detail}, default=str)
    client.set_model_version_tag(model_name, str(version), key, value)
    return key


def event_key(seq: int) -> str:
    return f"{PREFIX}{seq:04d}"


def events(tags: Mapping[str, str]) -> list[dict]:
    """The events in a version's tags, oldest first: {seq, time, kind, detail}."""
    out = []
    for key, value in tags.items():
        number = key[len(PREFIX) :]
        if key.startswith(PREFIX) and number.isdigit():
            out.append({"seq": int(number), **json.loads(value)})
    return sorted(out, key=lambda e: e["seq"])


def _jsonable(detail: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(detail, default=str))
