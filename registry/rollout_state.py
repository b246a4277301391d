"""The rollout state: which version the service runs beside the champion, how, and why.

Held as registered-model tags (``rollout.version``, ``rollout.mode``, ``rollout.share``,
``rollout.stage``, ``rollout.updated_at``, ``rollout.reason``) that the service's watcher
re-reads; every change is also a ``rollout`` event (or the given kind) on the version, so
`dieguard audit` shows the rollout's history. ``rollout.version`` is written last and deleted
first: a reader sees either a whole state or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from registry.events import record_event

PREFIX = "rollout."
VERSION = f"{PREFIX}version"
FIELDS = ("mode", "share", "stage", "updated_at", "reason")
MODES = ("off", "shadow", "canary")
MAX_REASON = 1000  # characters kept in the tag (the event keeps the whole reason)


def set_rollout(
    client: MlflowClient,
    model_name: str,
    version: str | int,
    mode: str,
    share: float,
    stage: str,
    reason: str,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict:
    """Point the service at `version` in `mode` with `share` of the dies, and log the step.

    Args:
        mode: "shadow" (runs beside the champion), "canary" (decides `share` of the dies) or
            "off".
        share: in [0, 1]; ignored by the service unless mode is "canary".
        stage: the rollout's step, e.g. "shadow", "canary", "10%".
        now: the step's time (None: the wall clock).
        detail: more facts for the event (e.g. the figures behind the step).
    Returns:
        The state as `rollout_state` reads it.
    Raises:
        ValueError: an unknown mode or a share outside [0, 1]; MlflowException: no such version.
    """
    if mode not in MODES:
        raise ValueError(f"rollout mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"rollout share must lie in [0, 1], got {share}")
    version, at = str(version), _time(now)
    state = {"version": version, "mode": mode, "share": float(share), "stage": stage}
    state |= {"updated_at": at, "reason": reason}
    facts = {"mode": mode, "share": float(share), "stage": stage, "reason": reason, "time": at}
    record_event(client, model_name, version, "rollout", facts | dict(detail or {}))
    for name in FIELDS:
        value = str(state[name])[:MAX_REASON]
        client.set_registered_model_tag(model_name, f"{PREFIX}{name}", value)
    client.set_registered_model_tag(model_name, VERSION, version)
    return state


def rollout_state(client: MlflowClient, model_name: str) -> dict | None:
    """The current rollout state {version, mode, share, stage, updated_at, reason}, or None
    when there is none (or no such registered model)."""
    try:
        tags = client.get_registered_model(model_name).tags
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    if not tags.get(VERSION):
        return None
    state = {"version": tags[VERSION]} | {n: tags.get(f"{PREFIX}{n}", "") for n in FIELDS}
    mode = state["mode"] if state["mode"] in MODES else "off"  # a hand-edited tag: safest
    return state | {"mode": mode, "share": _share(state["share"])}


def clear_rollout(
    client: MlflowClient,
    model_name: str,
    reason: str,
    now: datetime | None = None,
    kind: str = "rollout",
    detail: Mapping[str, Any] | None = None,
) -> dict | None:
    """End the rollout: the service goes back to the champion alone; log why on the version.

    Args:
        reason: why it ended (promoted, rolled back, stopped).
        now: the step's time (None: the wall clock).
        kind: the event's kind, e.g. "rollout" or "rollback".
        detail: more facts for the event (e.g. the figures behind a rollback).
    Returns:
        The state that was cleared, or None when there was none (nothing is recorded then).
    """
    state = rollout_state(client, model_name)
    if state is None:
        return None
    at = _time(now)
    facts = {"mode": "off", "share": 0.0, "stage": state["stage"], "reason": reason, "time": at}
    record_event(client, model_name, state["version"], kind, facts | dict(detail or {}))
    tags = client.get_registered_model(model_name).tags
    for key in [VERSION] + [f"{PREFIX}{n}" for n in FIELDS]:
        if key in tags:
            client.delete_registered_model_tag(model_name, key)
    return state


def _time(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return min(max(value, 0.0), 1.0) if value == value else 0.0
