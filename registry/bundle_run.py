"""A ready bundle folder (e.g. the vision-only baseline's FP32 export, the first champion)
logged as an MLflow run of its own, so that it can be registered like a trained candidate."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from registry.bundle import MODEL_FILE, OPERATING_POINT_FILE, SCALER_FILE, TOKENIZER_FILE, sha256
from registry.datasets import Split, log_splits
from registry.models import log_bundle_folder
from registry.runs import TrainingRecord, finished_run, log_params, record
from registry.store import Store, experiment_id, fluent_run
from registry.training import DIGEST_TAG
from registry.values import to_text

KEY_TAG = "dieguard.bundle_key"
BUNDLE_FILES = (MODEL_FILE, OPERATING_POINT_FILE, SCALER_FILE, TOKENIZER_FILE)


def log_bundle(
    store: Store,
    experiment: str,
    folder: str | Path,
    kind: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    splits: Mapping[str, Split] | None = None,
    data_digest: str | None = None,
    git_commit: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> TrainingRecord:
    """Log a bundle folder (model.onnx, its operating point, scaler.json, tokenizer.json and
    optionally int8_gate.json) as a run holding one ``<kind>-bundle`` serving model.

    A finished run of the same files and kind is returned instead (a retried task).

    Args:
        params: e.g. the config the model was trained with (nested dicts: dotted keys).
        splits: the data it was trained and scored on, as dataset inputs.
    Returns:
        The record; ``record.serving[kind]`` is the model URI to `register`.
    Raises:
        FileNotFoundError: a bundle file is missing.
    """
    folder = Path(folder)
    missing = [name for name in BUNDLE_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"bundle {folder} lacks {', '.join(missing)}")
    client = store.client
    exp_id = experiment_id(store, experiment)
    spec = kind + "".join(sha256(folder / name) for name in BUNDLE_FILES)
    key = hashlib.blake2b(spec.encode(), digest_size=16).hexdigest()
    earlier = finished_run(client, exp_id, KEY_TAG, key)
    if earlier is not None:
        return record(client, exp_id, earlier, reused=True)
    run_tags = {
        KEY_TAG: key,
        **({DIGEST_TAG: data_digest} if data_digest else {}),
        **({MLFLOW_GIT_COMMIT: git_commit} if git_commit else {}),
        **{k: to_text(v) for k, v in (tags or {}).items()},
    }
    run = client.create_run(exp_id, run_name=run_name or f"{kind}-bundle", tags=run_tags)
    run_id = run.info.run_id
    with fluent_run(client, run_id):
        log_params(client, run_id, params or {})
        log_splits(splits or {})
        log_bundle_folder(kind, folder)
    return record(client, exp_id, run_id, reused=False)
