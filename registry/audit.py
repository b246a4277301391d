"""A version's audit record, read from MLflow alone (registry and training run)."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from registry.aliases import CHAMPION, aliases_of
from registry.datasets import run_splits
from registry.events import events
from registry.lifecycle import HISTORY_TAGS
from registry.models import KIND_TAG
from registry.training import DIGEST_TAG, KEY_TAG
from registry.values import from_text, utc_from_ms
from registry.versions import APPROVAL, LINEAGE, MODEL_URI, REGISTERED_AT, RUN_ID


def audit(client: MlflowClient, model_name: str, version: str | int) -> dict:
    """Everything recorded about one version, JSON-ready.

    Returns:
        model, version, kind, aliases (current), status, registered_at, source, run_id, data
        {digest, splits}, validation {verdict, report}, training {run_id, name, status,
        started, ended, git_commit, params, metrics}, git_commit, threshold, gate,
        baseline_comparison, approval (None when none), history (promotion and rollback
        tags), events (oldest first) and lineage (every lineage tag).
    Raises:
        MlflowException: no such version, or its training run is gone.
    """
    mv = client.get_model_version(model_name, str(version))
    tags = dict(mv.tags)
    lineage = _lineage(tags)
    run_id = lineage.get(RUN_ID) or mv.run_id
    run = client.get_run(run_id) if run_id else None
    run_tags = run.data.tags if run else {}
    kind = _kind(client, lineage.get(MODEL_URI))
    return {
        "model": model_name,
        "version": str(mv.version),
        "kind": kind,
        "aliases": aliases_of(client, model_name, mv.version),
        "status": mv.status,
        "registered_at": tags.get(REGISTERED_AT) or utc_from_ms(mv.creation_timestamp),
        "source": mv.source,
        "run_id": run_id,
        "data": {
            "digest": lineage.get("data_digest") or run_tags.get(DIGEST_TAG),
            "splits": run_splits(run) if run else [],
            "snapshot": lineage.get("data_snapshot"),
        },
        "validation": {
            "verdict": lineage.get("validation_verdict"),
            "report": lineage.get("validation_report"),
        },
        "training": _training(run) if run else None,
        "git_commit": lineage.get("git_commit") or run_tags.get(MLFLOW_GIT_COMMIT),
        "threshold": lineage.get("threshold") or run_tags.get(f"dieguard.{kind}.int8_threshold"),
        "gate": lineage.get("gate") or _run_gate(run_tags, kind),
        "baseline_comparison": lineage.get("baseline_comparison"),
        "approval": _approval(tags),
        "history": {k: tags[k] for k in HISTORY_TAGS if tags.get(k)},
        "events": events(tags),
        "lineage": lineage,
    }


def training_split(client: MlflowClient, model_name: str, alias: str = CHAMPION) -> dict:
    """The training split of the version `alias` points to, from its run's dataset inputs.

    Returns:
        name ("train"), digest, source (a local folder or a URI), context and rows.
    Raises:
        MlflowException: no such alias.
        LookupError: the version's training run recorded no training split.
    """
    mv = client.get_model_version_by_alias(model_name, alias)
    run_id = _lineage(dict(mv.tags)).get(RUN_ID) or mv.run_id
    splits = run_splits(client.get_run(run_id)) if run_id else []
    found = [s for s in splits if s["name"] == "train"]
    if not found:
        raise LookupError(f"{model_name} version {mv.version} ({alias}) has no training split")
    return found[0]


def _lineage(tags: dict) -> dict:
    """A version's lineage tags, without their prefix, values decoded."""
    return {k[len(LINEAGE) :]: from_text(v) for k, v in tags.items() if k.startswith(LINEAGE)}


def _training(run) -> dict:
    info, data = run.info, run.data
    return {
        "run_id": info.run_id,
        "name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "started": utc_from_ms(info.start_time),
        "ended": utc_from_ms(info.end_time),
        "git_commit": data.tags.get(MLFLOW_GIT_COMMIT),
        "content_key": data.tags.get(KEY_TAG),
        "params": dict(sorted(data.params.items())),
        "metrics": dict(sorted(data.metrics.items())),
    }


def _approval(tags: dict[str, str]) -> dict | None:
    found = {k[len(APPROVAL) :]: v for k, v in tags.items() if k.startswith(APPROVAL)}
    if not found:
        return None
    found["automatic"] = found.get("automatic") == "true"
    found["checklist"] = from_text(found.get("checklist", "{}"))
    return found


def _kind(client: MlflowClient, model_uri: str | None) -> str | None:
    """The model kind, from the logged model the version was registered from."""
    if not model_uri or not str(model_uri).startswith("models:/m-"):
        return None
    return client.get_logged_model(model_uri[len("models:/") :]).tags.get(KIND_TAG)


def _run_gate(run_tags: dict[str, str], kind: str | None) -> dict | None:
    passed = run_tags.get(f"dieguard.{kind}.gate_passed")
    if passed is None:
        return None
    return {"passed": passed == "true", "chosen": run_tags.get(f"dieguard.{kind}.gate_chosen")}
