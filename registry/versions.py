"""Registering a logged model as a version with its lineage, and recording approvals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

from registry.aliases import CHALLENGER, CHAMPION, alias_version, aliases_of, drop_alias
from registry.events import record_event
from registry.values import to_text, utc_now

LINEAGE = "lineage."  # version tags holding what the caller passed to `register`
RUN_ID = "training_run_id"  # lineage keys that `register` fills in itself
MODEL_URI = "model_uri"
REGISTERED_AT = "registered_at"
APPROVAL = "approval."  # approval.{decision, approver, reason, automatic, checklist, time}


def register(
    client: MlflowClient, model_name: str, model_uri: str, lineage: Mapping[str, Any]
) -> str:
    """Register a logged model as a version with lineage tags, aliased ``challenger``.

    A version of this model already registered from the same training run and logged model
    is reused (its lineage tags refreshed), so a retried task creates no second version.

    Args:
        model_uri: a logged model's URI, ``models:/m-...`` (see TrainingRecord.serving).
        lineage: e.g. data_digest, validation_verdict, validation_report, git_commit,
            threshold, gate, baseline_comparison; stored as ``lineage.<key>`` tags, values as
            text (non-strings as JSON). ``training_run_id`` and ``model_uri`` are added.
    Returns:
        The version number as text (a version already aliased ``champion`` does not become
        challenger). MLflow 3.17's SQL registry reports ``ModelVersion.version`` as an int.
    """
    model_id = _logged_model_id(model_uri)
    logged = client.get_logged_model(model_id)
    run_id = logged.source_run_id
    tags = {f"{LINEAGE}{k}": to_text(v) for k, v in lineage.items()}
    tags |= {f"{LINEAGE}{RUN_ID}": run_id or "", f"{LINEAGE}{MODEL_URI}": model_uri}
    version = _registered(client, model_name, run_id, model_uri)
    if version is None:
        _ensure_model(client, model_name)
        # The artifact location, not models:/m-...: the SQL registry resolves a models:/
        # source through the process-wide tracking URI, not through this client's.
        version = client.create_model_version(
            model_name,
            source=logged.artifact_location,
            run_id=run_id,
            tags=tags | {REGISTERED_AT: utc_now()},
            model_id=model_id,
        )
    else:
        for key, value in tags.items():
            client.set_model_version_tag(model_name, str(version.version), key, value)
    number = str(version.version)
    if CHAMPION not in aliases_of(client, model_name, number):
        client.set_registered_model_alias(model_name, CHALLENGER, number)
    return number


def record_approval(
    client: MlflowClient,
    model_name: str,
    version: str | int,
    approved: bool,
    approver: str,
    reason: str,
    automatic: bool,
    checklist: Mapping[str, Any],
) -> dict[str, str]:
    """Record a promotion decision as ``approval.*`` tags (latest wins) and an event; a
    rejection also takes the ``challenger`` alias off the version.

    Returns:
        The tags written: approval.decision ("approved"/"rejected"), approval.approver,
        approval.reason, approval.automatic ("true"/"false"), approval.checklist (JSON),
        approval.time (UTC).
    """
    fields = {
        "decision": "approved" if approved else "rejected",
        "approver": approver,
        "reason": reason,
        "automatic": to_text(bool(automatic)),
        "checklist": to_text(dict(checklist)),
        "time": utc_now(),
    }
    tags = {f"{APPROVAL}{k}": v for k, v in fields.items()}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    detail = {k: fields[k] for k in ("decision", "approver", "reason")}
    record_event(client, model_name, version, "approval", detail | {"automatic": automatic})
    if not approved:  # a rejected version is no one's challenger
        drop_alias(client, model_name, CHALLENGER, version)
    return tags


def approval_refusal(client: MlflowClient, model_name: str, version: str | int) -> str | None:
    """Why a decision on `version` may no longer be taken (None: it is the challenger).

    Only the challenger is decided: a version a newer candidate superseded, or one already
    rejected or promoted, holds no ``challenger`` alias.
    """
    current = alias_version(client, model_name, CHALLENGER)
    if current == str(version):
        return None
    now = f"version {current} is" if current else "no version is"
    return f"version {version} is no longer the challenger ({now})"


def refuse_approval(
    client: MlflowClient,
    model_name: str,
    version: str | int,
    reason: str,
    decision: Mapping[str, Any] | None = None,
) -> str:
    """Record on the version that its approval was not taken: an ``approval-refused``
    event with the reason and the decision given, if any (its ``approval.*`` tags stay).

    Returns:
        The event's tag key.
    """
    detail = {"reason": reason} | ({"decision": dict(decision)} if decision else {})
    return record_event(client, model_name, version, "approval-refused", detail, once=True)


def reject(
    client: MlflowClient, model_name: str, version: str | int, approver: str, reason: str
) -> dict[str, str]:
    """Reject a version outside the approval form: recorded like the form's rejection.

    Raises:
        ValueError: no approver or no reason given.
    """
    if not approver.strip() or not reason.strip():
        raise ValueError("a rejection needs the approver's name and a reason")
    return record_approval(client, model_name, version, False, approver, reason, False, {})


def _registered(client: MlflowClient, model_name: str, run_id, model_uri) -> ModelVersion | None:
    if not run_id:
        return None
    found = client.search_model_versions(f"name = '{_quoted(model_name)}' and run_id = '{run_id}'")
    same = [v for v in found if v.tags.get(f"{LINEAGE}{MODEL_URI}") == model_uri]
    return min(same, key=lambda v: int(v.version)) if same else None


def _ensure_model(client: MlflowClient, model_name: str) -> None:
    try:
        client.create_registered_model(model_name)
    except MlflowException as err:
        exists = (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS))
        if err.error_code not in exists:
            raise


def _logged_model_id(model_uri: str) -> str:
    prefix = "models:/m-"
    rest = model_uri[len("models:/") :]
    if not model_uri.startswith(prefix) or "/" in rest:
        raise ValueError(f"{model_uri!r} is not a logged model URI (models:/m-<id>)")
    return rest


def _quoted(text: str) -> str:
    if "'" in text:
        raise ValueError(f"model name {text!r} must not contain a quote")
    return text
