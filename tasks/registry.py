"""Registry tasks: log a training run, register, record decisions and promote.

Each wraps one `registry` call with retries (the store is a network service in production);
the registry makes every call safe to repeat.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from model.config import RunConfig
from model.prepare import Prepared
from model.remote import snapshot_origin
from registry import (
    Split,
    champion,
    download_bundle,
    log_bundle,
    log_training,
    open_store,
    promote,
    record_approval,
    register,
)
from registry.lifecycle import install_first
from registry.model_card import write_model_card

RETRY = {"retries": 2, "retry_delay_seconds": 5, "cache_policy": NO_CACHE}


def experiment(model_name: str) -> str:
    """The MLflow experiment that holds a registered model's training runs."""
    return f"{model_name}-training"


@task(**RETRY)
def current_champion(model_name: str, tracking_uri: str | None, dest: Path) -> dict | None:
    """The champion's version and its bundle downloaded to `dest`; None when there is none."""
    client = open_store(tracking_uri).client
    version = champion(client, model_name)
    if version is None:
        return None
    bundle = download_bundle(client, model_name, version.version, dest)
    return {"version": str(version.version), "bundle": str(bundle)}


@task(**RETRY)
def install_first_champion(
    model_name: str,
    tracking_uri: str | None,
    cfg: RunConfig,
    bundle: str,
    baseline: dict,
    validation: dict,
    data: Prepared,
) -> dict:
    """Register the vision-only CNN's bundle and make it champion (first run only)."""
    store = open_store(tracking_uri)
    record = log_bundle(
        store,
        experiment(model_name),
        bundle,
        "baseline",
        run_name=f"{cfg.name}-baseline",
        params=cfg.to_dict(),
        splits=splits(data, cfg.data_dir),
        data_digest=data.digest,
        git_commit=git_commit(),
    )
    lineage = _lineage(data, validation, baseline) | {
        "gate": {"passed": None, "reason": "the existing CNN: registered as the first champion"},
        "validation_report": None,  # its Data Docs are logged with the candidate's run
    }
    version = register(store.client, model_name, record.serving["baseline"], lineage)
    reason = "first run: the vision-only CNN already in production"
    install_first(store.client, model_name, version, reason)
    write_model_card(store.client, model_name, version)
    return {"version": version, "bundle": bundle}


@task(**RETRY)
def log_run(
    tracking_uri: str | None,
    model_name: str,
    cfg: RunConfig,
    data: Prepared,
    figures: dict[str, dict],
    deployment: dict,
    artifacts: dict[str, str],
) -> dict:
    """Log the run folder (config, epochs, data, reports, models) as one MLflow run."""
    run = Path(cfg.out_dir) / cfg.name
    record = log_training(
        open_store(tracking_uri),
        experiment(model_name),
        run,
        cfg.to_dict(),
        splits(data, cfg.data_dir),
        kinds=tuple(figures),
        deployments={"multimodal": deployment["folder"]},
        artifacts=artifacts,
        summary=figures,
        data_digest=data.digest,
        git_commit=git_commit(),
    )
    return {"run_id": record.run_id, "model_uri": record.serving["multimodal"]}


@task(**RETRY)
def register_candidate(
    model_name: str,
    tracking_uri: str | None,
    training: dict,
    data: Prepared,
    validation: dict,
    candidate: dict,
    verdict: dict,
    champion_info: dict,
    champion_figures: dict,
) -> str:
    """Register the candidate's INT8 bundle with its lineage and model card; alias challenger.

    The lineage names the run's Data Docs and evaluation report by their artifact URIs."""
    client = open_store(tracking_uri).client
    run = training["run_id"]
    lineage = _lineage(data, validation, candidate) | {
        "gate": verdict,
        "baseline_comparison": {"champion_version": champion_info["version"]}
        | {k: champion_figures[k] for k in ("escape", "fpr", "macro_f1")},
        "validation_report": f"runs:/{run}/data_docs/{Path(validation['docs_index']).name}",
        "evaluation_report": _artifact_uri(client, run, "evaluation", ".html"),
    }
    version = register(client, model_name, training["model_uri"], lineage)
    write_model_card(client, model_name, version)
    return version


@task(**RETRY)
def record_decision(model_name: str, tracking_uri: str | None, version: str, decision: dict):
    """Write the approval decision (who, why, checklist, automatic or not) as version tags,
    and refresh the model card."""
    client = open_store(tracking_uri).client
    record_approval(client, model_name, version, **decision)
    write_model_card(client, model_name, version)


@task(**RETRY)
def promote_version(
    model_name: str, tracking_uri: str | None, version: str, reason: str, over: str | None
):
    """Alias the version champion in place of `over` (registry.promote: a compare-and-swap
    under the serving rule); the champion before it becomes previous-champion."""
    client = open_store(tracking_uri).client
    change = promote(client, model_name, version, reason, over)
    for number in filter(None, (change.champion, change.replaced)):
        write_model_card(client, model_name, number)


def splits(data: Prepared, data_dir: str) -> dict[str, Split]:
    """The prepared splits as registry dataset inputs (our digest, source, size); the source
    of a snapshot's split is its s3:// URI."""
    origin = snapshot_origin(data_dir)
    root = origin["uri"] if origin else str(Path(data_dir).resolve())
    return {
        name: Split(part.digest, f"{root}/{name}", len(part)) for name, part in data.splits.items()
    }


def _artifact_uri(client, run_id: str, folder: str, suffix: str) -> str | None:
    """The runs:/ URI of the first artifact under `folder` whose name ends in `suffix`."""
    found = [a.path for a in client.list_artifacts(run_id, folder) if a.path.endswith(suffix)]
    return f"runs:/{run_id}/{sorted(found)[0]}" if found else None


def git_commit() -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _lineage(data: Prepared, validation: dict, figures: dict) -> dict:
    origin = snapshot_origin(validation["data_dir"])  # the s3 address of a fetched data set
    return {
        "data_digest": data.digest,
        **({"data_snapshot": origin} if origin else {}),
        "validation_verdict": "passed" if validation["success"] else "failed",
        "validation_report": validation["docs_index"],
        "git_commit": git_commit(),
        "threshold": figures["threshold"],
        "test_figures": json.loads(json.dumps(figures["test"])),
    }
