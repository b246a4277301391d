"""Run helpers: params in batches, runs found by content key (a retried task reuses them),
and the models a run logged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param

from registry.models import KIND_TAG, ROLE_TAG
from registry.values import flatten, to_text

PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call


@dataclass(frozen=True)
class TrainingRecord:
    """What log_training (or log_bundle) left in MLflow.

    Attributes:
        run_id: the MLflow run.
        experiment_id: its experiment.
        models: logged model name (``<kind>-pytorch``, ``<kind>-fp32``, ``<kind>-int8``, or
            ``<kind>-bundle`` from log_bundle) -> model URI (``models:/m-...``).
        serving: kind -> URI of its serving-bundle model (the INT8 one of a deployment, or
            a logged bundle folder): what `register` takes.
        reused: True when an earlier finished run with the same content was returned.
    """

    run_id: str
    experiment_id: str
    models: dict[str, str]
    serving: dict[str, str] = field(default_factory=dict)
    reused: bool = False


def log_params(client: MlflowClient, run_id: str, tree: Mapping[str, Any]) -> None:
    """Nested params as dotted keys, values as text (non-strings as JSON)."""
    params = [Param(k, to_text(v)) for k, v in flatten(tree).items()]
    for start in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[start : start + PARAMS_PER_BATCH])


def finished_run(client: MlflowClient, experiment_id: str, tag: str, key: str) -> str | None:
    """The newest FINISHED run of the experiment whose `tag` equals `key` (None: none)."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{tag}` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def record(client: MlflowClient, experiment_id: str, run_id: str, reused: bool) -> TrainingRecord:
    """A run's logged models, by name and (serving bundles) by kind."""
    logged = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    models = {m.name: f"models:/{m.model_id}" for m in logged}
    serving = {
        m.tags.get(KIND_TAG): f"models:/{m.model_id}"
        for m in logged
        if m.tags.get(ROLE_TAG) == "serving"
    }
    return TrainingRecord(run_id, experiment_id, models, serving, reused)
