"""One MLflow run per training run: config, figures, data splits, artifacts and models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_RUN_NAME

from registry.bundle import GATE_FILE, SCALER_FILE, TOKENIZER_FILE, sha256
from registry.datasets import Split, log_splits
from registry.metrics import batches, run_metrics
from registry.models import INT8_FILE, log_fp32, log_int8_bundle, log_pytorch
from registry.runs import TrainingRecord, finished_run, log_params, record
from registry.store import Store, experiment_id, fluent_run
from registry.values import flatten, to_text

KEY_TAG = "dieguard.training_key"  # identifies a training run's content (retries reuse it)
DIGEST_TAG = "dieguard.data_digest"
FOLDER_TAG = "dieguard.run_folder"
INT8_POINT_FILE = "model.int8.operating_point.json"
PREPARED_FILES = (SCALER_FILE, TOKENIZER_FILE)  # under the run folder's prepared/


def log_training(
    store: Store,
    experiment: str,
    run_folder: str | Path,
    config: Mapping[str, Any],
    splits: Mapping[str, Split],
    kinds: tuple[str, ...] = ("baseline", "multimodal"),
    deployments: Mapping[str, str | Path] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    summary: Mapping[str, Mapping] | None = None,
    data_digest: str | None = None,
    git_commit: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> TrainingRecord:
    """Log a finished training run folder (``runs/<name>/``) as one MLflow run.

    A finished run with the same content (config, kinds, model files, deployments, splits)
    already in the experiment is returned instead, so a retried task logs nothing twice.

    Args:
        store: from `open_store`.
        experiment: experiment name (created under the store's artifact root when new).
        run_folder: holds ``prepared/`` and, per kind, ``<kind>/{model.pt,history.csv}``.
        config: the run's configuration (``RunConfig.to_dict()``); logged as dotted params.
        splits: split name -> Split (our digest, source folder, rows) -> dataset inputs.
        kinds: the model kinds trained in this run.
        deployments: kind -> folder written by model.deploy.optimize_for_deployment
            (model.onnx, model.int8.onnx, their operating points, int8_gate.json).
        artifacts: name -> file or folder (reports, Data Docs, EDA), logged under `name/`.
        summary: kind -> test figures (summary.json of model.report); default: the run
            folder's summary.json when present.
        data_digest: digest of all splits together (``Prepared.digest``).
        git_commit: the code's commit.
        tags: extra run tags (values stringified).
    Returns:
        The run id and the logged models' URIs.
    Raises:
        FileNotFoundError: a file the run folder or a deployment folder should hold is absent.
        MlflowException: the store refused something (the run is then marked FAILED).
    """
    folder = Path(run_folder)
    deployments = {k: Path(v) for k, v in (deployments or {}).items()}
    if summary is None and (folder / "summary.json").is_file():
        summary = json.loads((folder / "summary.json").read_text())
    artifacts = dict(artifacts or {})
    _check_inputs(folder, kinds, deployments, artifacts)
    client = store.client
    exp_id = experiment_id(store, experiment)
    key = training_key(folder, config, kinds, deployments, splits)
    earlier = finished_run(client, exp_id, KEY_TAG, key)
    if earlier is not None:
        return record(client, exp_id, earlier, reused=True)
    run_tags = {
        MLFLOW_RUN_NAME: folder.name,
        KEY_TAG: key,
        FOLDER_TAG: str(folder.resolve()),
        **({DIGEST_TAG: data_digest} if data_digest else {}),
        **({MLFLOW_GIT_COMMIT: git_commit} if git_commit else {}),
        **_deployment_tags(deployments),
        **{k: to_text(v) for k, v in (tags or {}).items()},
    }
    started = first_written(folder, kinds)
    run = client.create_run(exp_id, start_time=started, run_name=folder.name, tags=run_tags)
    run_id = run.info.run_id
    try:
        _log_figures(client, run_id, folder, config, kinds, summary or {})
        _log_artifacts(client, run_id, folder, kinds, artifacts)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    with fluent_run(client, run_id):  # ends the run FINISHED, or FAILED on an error
        log_splits(splits)
        for kind in kinds:
            log_pytorch(kind, folder / kind / "model.pt")
        for kind, deploy_dir in deployments.items():
            log_fp32(kind, deploy_dir)
            log_int8_bundle(kind, deploy_dir, folder / "prepared")
    return record(client, exp_id, run_id, reused=False)


def first_written(folder: Path, kinds: tuple[str, ...]) -> int:
    """When the run began, in ms since the epoch: the oldest of its prepared statistics and
    histories (the run is logged once training ends, but it spans the training)."""
    files = [folder / "prepared" / n for n in PREPARED_FILES]
    files += [folder / kind / "history.csv" for kind in kinds]
    return int(min(p.stat().st_mtime for p in files) * 1000)


def training_key(
    folder: Path,
    config: Mapping[str, Any],
    kinds: tuple[str, ...],
    deployments: Mapping[str, Path],
    splits: Mapping[str, Split],
) -> str:
    """A digest of what a training run logs: config, kinds, model files and split digests."""
    files = [folder / kind / "model.pt" for kind in kinds]
    files += [d / INT8_FILE for _, d in sorted(deployments.items())]
    spec = {
        "config": flatten(config),
        "kinds": list(kinds),
        "files": [sha256(p) for p in files],
        "splits": {name: s.digest for name, s in sorted(splits.items())},
    }
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _check_inputs(folder: Path, kinds, deployments: Mapping[str, Path], artifacts) -> None:
    absent = [f"{name} ({path})" for name, path in artifacts.items() if not Path(path).exists()]
    if absent:
        raise FileNotFoundError(f"artifacts missing: {', '.join(absent)}")
    needed = [folder / "prepared" / n for n in PREPARED_FILES]
    needed += [folder / kind / n for kind in kinds for n in ("model.pt", "history.csv")]
    deployed = ("model.onnx", "model.operating_point.json", INT8_FILE, INT8_POINT_FILE)
    needed += [d / n for d in deployments.values() for n in deployed]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"training run files missing: {', '.join(missing)}")


def _deployment_tags(deployments: Mapping[str, Path]) -> dict[str, str]:
    out = {}
    for kind, deploy_dir in deployments.items():
        path = deploy_dir / GATE_FILE
        if path.is_file():
            gate = json.loads(path.read_text())
            out[f"dieguard.{kind}.gate_passed"] = to_text(gate.get("passed"))
            out[f"dieguard.{kind}.gate_chosen"] = to_text(gate.get("chosen"))
        point = deploy_dir / INT8_POINT_FILE
        if point.is_file():
            threshold = json.loads(point.read_text())["threshold"]
            out[f"dieguard.{kind}.int8_threshold"] = to_text(threshold)
    return out


def _log_figures(client: MlflowClient, run_id, folder, config, kinds, summary) -> None:
    log_params(client, run_id, config)
    metrics = run_metrics({kind: folder / kind / "history.csv" for kind in kinds}, summary)
    for chunk in batches(metrics):
        client.log_batch(run_id, metrics=chunk)


def _log_artifacts(client: MlflowClient, run_id, folder, kinds, artifacts) -> None:
    client.log_artifacts(run_id, str(folder / "prepared"), "prepared")
    for kind in kinds:
        client.log_artifact(run_id, str(folder / kind / "history.csv"), kind)
    if (folder / "summary.json").is_file():
        client.log_artifact(run_id, str(folder / "summary.json"))
    for name, path in artifacts.items():
        if Path(path).is_dir():
            client.log_artifacts(run_id, str(path), name)
        else:
            client.log_artifact(run_id, str(path), name)
