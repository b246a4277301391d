"""Tasks that prepare data, train a model kind and evaluate it."""

from __future__ import annotations

from pathlib import Path

from prefect import task
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
    """Train one kind (resuming from its last checkpoint); its test figures and model file."""
    from model.train import train_model  # torch-heavy: imported when the task runs

    result = train_model(kind, data, cfg, folder, progress=False)
    return score(result, data) | {"model_path": str(folder / "model.pt"), "kind": kind}


@task
def evaluate(model_path: str, out_dir: Path, baseline_path: str | None = None) -> dict:
    """The evaluation report (error analysis, fairness) of a model on test."""
    return run_evaluation(model_path, out_dir, baseline_path=baseline_path)
