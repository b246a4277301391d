"""The rollout state: which version the service runs beside the champion, how, and why.

Held as registered-model tags (``rollout.version``, ``rollout.mode``, ``rollout.share``,
``rollout.stage``, ``rollout.updated_at``, ``rollout.reason``, ``rollout.lease_until``,
``rollout.champion``, ``rollout.started_at``, ``rollout.config``, ``rollout.revision``)
that the service's watcher re-reads; every change is also a ``rollout`` event (or the given
kind) on the version, so `dieguard audit` shows the rollout's history. ``rollout.version``
is written last and deleted first: a reader sees either a whole state or none. The
revision counts the changes of one rollout and is written after the other fields: a step
that dies half-way through a change leaves the old revision (registry.rollout_decisions).

The lease: every step of the rollout renews ``rollout.lease_until``. When it lapses (the
process driving the rollout died), the service routes every die to the champion again and
records a ``stalled`` event on the version, until a step renews the lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from registry.events import record_event
from registry.servable import require_servable

PREFIX = "rollout."
VERSION = f"{PREFIX}version"
# the champion it is judged against, since when, and its settings (JSON): kept stage to stage
CONTEXT = ("champion", "started_at", "config")
FIELDS = ("mode", "share", "stage", "updated_at", "reason", "lease_until", *CONTEXT, "revision")
LEASE = f"{PREFIX}lease_until"
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
    lease_s: float | None = None,
    context: Mapping[str, str] | None = None,
    revision: int | None = None,
) -> dict:
    """Point the service at `version` in `mode` with `share` of the dies, and log the step.

    Args:
        mode: "shadow" (runs beside the champion), "canary" (decides `share` of the dies) or
            "off".
        share: in [0, 1]; ignored by the service unless mode is "canary".
        stage: the rollout's step, e.g. "shadow", "canary", "10%".
        now: the step's time (None: the wall clock).
        detail: more facts for the event (e.g. the figures behind the step).
        lease_s: the lease, from `now` (None: no lease, the state holds until changed).
        context: the rollout's ``champion``, ``started_at`` and ``config`` (kept from stage
            to stage).
        revision: the state's revision (None: one more than the current state's, 1 when
            there is none).
    Returns:
        The state as `rollout_state` reads it.
    Raises:
        ValueError: an unknown mode or a share outside [0, 1]; NotServable: the serving rule
        refuses the version (registry.servable); MlflowException: no such version.
    """
    if mode not in MODES:
        raise ValueError(f"rollout mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"rollout share must lie in [0, 1], got {share}")
    version, at = str(version), _time(now)
    if mode != "off":
        require_servable(client, model_name, version)
    if revision is None:
        revision = (rollout_state(client, model_name) or {"revision": 0})["revision"] + 1
    state = {"version": version, "mode": mode, "share": float(share), "stage": stage}
    state |= {"updated_at": at, "reason": reason, "lease_until": _deadline(now, lease_s)}
    state |= {name: str((context or {}).get(name, "")) for name in CONTEXT}
    state["revision"] = int(revision)
    facts = {"mode": mode, "share": float(share), "stage": stage, "reason": reason, "time": at}
    facts["revision"] = int(revision)  # with the time: a replayed change records nothing new
    record_event(client, model_name, version, "rollout", facts | dict(detail or {}), once=True)
    for name in FIELDS:
        value = str(state[name])[:MAX_REASON] if name == "reason" else str(state[name])
        client.set_registered_model_tag(model_name, f"{PREFIX}{name}", value)
    client.set_registered_model_tag(model_name, VERSION, version)
    return state


def renew_lease(
    client: MlflowClient, model_name: str, version: str, lease_s: float, now: datetime | None
) -> str:
    """Move the rollout's lease to `now` + `lease_s`; returns the new deadline.

    Raises:
        LookupError: the rollout state is gone or names another version (stopped by hand).
    """
    state = rollout_state(client, model_name)
    if state is None or state["version"] != str(version):
        raise LookupError(f"{model_name}: no rollout of version {version} to renew: {state}")
    deadline = _deadline(now, lease_s)
    client.set_registered_model_tag(model_name, LEASE, deadline)
    return deadline


def lease_lapsed(state: Mapping[str, Any] | None, now: datetime | None = None) -> bool:
    """Whether a rollout state's lease has run out (a state without a lease never lapses)."""
    if not state or not state.get("lease_until"):
        return False
    try:
        deadline = datetime.fromisoformat(state["lease_until"])
    except ValueError:
        return True  # an unreadable deadline: the champion alone is the safe reading
    return (now or datetime.now(UTC)) > deadline


def record_stall(client: MlflowClient, model_name: str, state: Mapping[str, Any]) -> str:
    """The ``stalled`` event on the rollout's version (once per lapsed lease)."""
    detail = {"stage": state["stage"], "lease_until": state["lease_until"]}
    detail["reason"] = "the rollout's lease lapsed: the champion decides every die"
    return record_event(client, model_name, state["version"], "stalled", detail, dedupe=True)


def rollout_state(client: MlflowClient, model_name: str) -> dict | None:
    """The current rollout state {version, mode, share, stage, updated_at, reason,
    lease_until, champion, started_at, config ("" when not set), revision (0 when not
    set)}, or None when there is none (or no such registered model)."""
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
    revision = int(state["revision"]) if state["revision"].isdigit() else 0
    return state | {"mode": mode, "share": _share(state["share"]), "revision": revision}


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
        A rerun after a crash, with the same `now`, records no second event.
    """
    state = rollout_state(client, model_name)
    if state is None:
        return None
    at = _time(now)
    facts = {"mode": "off", "share": 0.0, "stage": state["stage"], "reason": reason, "time": at}
    facts = facts | dict(detail or {})
    record_event(client, model_name, state["version"], kind, facts, once=True)
    tags = client.get_registered_model(model_name).tags
    for key in [VERSION] + [f"{PREFIX}{n}" for n in FIELDS]:
        if key in tags:
            client.delete_registered_model_tag(model_name, key)
    return state


def _time(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")


def _deadline(now: datetime | None, lease_s: float | None) -> str:
    if lease_s is None:
        return ""
    return _time((now or datetime.now(UTC)) + timedelta(seconds=lease_s))


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return min(max(value, 0.0), 1.0) if value == value else 0.0
