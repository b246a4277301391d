"""Tasks that prepare data, train a model kind and evaluate it."""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from model.config import RunConfig
from model.evaluation_job import run_evaluation
from model.prepare import Prepared, prepare
from model.report import score
from tasks.resume import ONCE_PER_RUN


@task(cache_policy=NO_CACHE, persist_result=False)  # large; a resumed run reads it again
def prepare_data(cfg: RunConfig, folder: Path) -> Prepared:
    """Decode the images once into the cache; fit the scaler and tokenizer on train."""
    return prepare(cfg, folder)


@task(cache_policy=ONCE_PER_RUN)
def train(kind: str, data: Prepared, cfg: RunConfig, folder: Path) -> dict:
    """Train one kind (resuming from its last checkpoint); its test figures and model file.

    A progress artifact `training-<kind>` moves with every epoch; in a terminal each epoch
    also shows a bar.
    """
    from model.train import train_model  # torch-heavy: imported when the task runs

    progress = _epoch_progress(kind)
    result = train_model(kind, data, cfg, folder, progress=sys.stderr.isatty(), on_epoch=progress)
    return score(result, data) | {"model_path": str(folder / "model.pt"), "kind": kind}


@task
def evaluate(model_path: str, out_dir: Path, baseline_path: str | None = None) -> dict:
    """The evaluation report (error analysis, fairness) of a model on test."""
    return run_evaluation(model_path, out_dir, baseline_path=baseline_path)


def _epoch_progress(kind: str):
    """A callback that logs each epoch and moves the run's progress artifact for `kind`."""
    log = get_run_logger()
    what = f"Training the {kind} model: epochs done, in % of the maximum (early stopping ends it)"
    artifact = create_progress_artifact(0.0, key=f"training-{kind}", description=what)

    def moved(done: int, planned: int, row: dict) -> None:
        update_progress_artifact(artifact, 100.0 * done / planned)
        figures = (row["train_loss"], 100 * row["val_fpr"], row["seconds"])
        log.info("%s: epoch %d (at most %d), train loss %.4f, validation FPR %.1f%%, %.0f s",
                 kind, done, planned, *figures)  # fmt: skip

    return moved
