"""log_training: params, per-epoch and test metrics, data splits, artifacts and logged models."""

from __future__ import annotations

import json
import os
import shutil

import mlflow
import pytest

from model.checkpoint import load_trained
from registry import log_training, open_store
from registry.metrics import run_metrics
from tests.registry.fake_run import (
    DATA_DIGEST,
    EXPERIMENT,
    GIT_COMMIT,
    KIND,
    SPLIT_DIGESTS,
    log_fake_run,
)


def test_config_is_logged_as_dotted_params(store, logged, run_files):
    params = store.client.get_run(logged.run_id).data.params
    assert params["train.lr"] == "0.001"
    assert params["model.img_size"] == "32"
    assert params["model.baseline_weights"] == "null"
    assert params["name"] == "smoke"


def test_history_is_logged_per_epoch_with_the_kind_prefix(store, logged):
    client = store.client
    fpr = client.get_metric_history(logged.run_id, f"{KIND}.val_fpr")
    assert [(m.step, m.value) for m in sorted(fpr, key=lambda m: m.step)] == [
        (0, 0.5),
        (1, 0.2),
        (2, 0.15),
    ]
    focal = client.get_metric_history(logged.run_id, f"{KIND}.train_focal")
    assert sorted(m.step for m in focal) == [1, 2]  # the empty stage-1 cell is left out
    assert not client.get_metric_history(logged.run_id, f"{KIND}.epoch")


def test_test_figures_are_logged_with_and_without_notes(store, logged, run_files):
    metrics = store.client.get_run(logged.run_id).data.metrics
    summary = json.loads((run_files["folder"] / "summary.json").read_text())[KIND]
    assert metrics[f"{KIND}.test.escape_rate"] == pytest.approx(summary["test"]["escape"]["rate"])
    assert metrics[f"{KIND}.test.escape_upper95"] == pytest.approx(summary["test"]["escape"]["hi"])
    assert metrics[f"{KIND}.test.fpr"] == pytest.approx(summary["test"]["fpr"]["rate"])
    assert metrics[f"{KIND}.test.macro_f1"] == pytest.approx(summary["test"]["macro_f1"])
    no_notes = summary["test_no_notes"]
    assert metrics[f"{KIND}.test_no_notes.escape_rate"] == pytest.approx(no_notes["escape"]["rate"])
    assert metrics[f"{KIND}.test_no_notes.macro_f1"] == pytest.approx(no_notes["macro_f1"])


def test_splits_are_dataset_inputs_with_our_digest_and_source(store, logged, run_files):
    run = store.client.get_run(logged.run_id)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == set(SPLIT_DIGESTS)
    for name, digest in SPLIT_DIGESTS.items():
        assert inputs[name].dataset.digest == digest
        assert str(run_files["splits"][name].source.resolve()) in inputs[name].dataset.source
    contexts = {
        n: {t.key: t.value for t in d.tags}["mlflow.data.context"] for n, d in inputs.items()
    }
    assert contexts == {"train": "training", "val": "validation", "test": "testing"}


def test_run_tags_and_artifacts(store, logged):
    client = store.client
    run = client.get_run(logged.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dieguard.data_digest"] == DATA_DIGEST
    assert run.data.tags["mlflow.source.git.commit"] == GIT_COMMIT
    assert run.data.tags[f"dieguard.{KIND}.gate_passed"] == "true"
    assert run.data.tags["attempt"] == "1"
    top = {a.path for a in client.list_artifacts(logged.run_id)}
    assert {"evaluation", "data_docs", "eda", "eda_summary", "prepared", KIND} <= top
    assert "summary.json" in top
    docs = {a.path for a in client.list_artifacts(logged.run_id, "data_docs")}
    assert docs == {"data_docs/index.html", "data_docs/validations"}
    assert [a.path for a in client.list_artifacts(logged.run_id, "eda_summary")] == [
        "eda_summary/summary.json"
    ]


def test_three_models_are_logged_per_deployed_kind(store, logged):
    assert set(logged.models) == {f"{KIND}-pytorch", f"{KIND}-fp32", f"{KIND}-int8"}
    assert logged.serving == {KIND: logged.models[f"{KIND}-int8"]}
    for uri in logged.models.values():
        model = store.client.get_logged_model(uri.removeprefix("models:/"))
        assert model.source_run_id == logged.run_id


def test_pytorch_model_loads_as_module_and_checkpoint(store, logged, run_files, tmp_path):
    model_id = logged.models[f"{KIND}-pytorch"].removeprefix("models:/")
    location = store.client.get_logged_model(model_id).artifact_location
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path))
    module = mlflow.pytorch.load_model(local)
    original, _, _ = load_trained(run_files["folder"] / KIND / "model.pt")
    assert type(module) is type(original)
    _, cfg, point = load_trained(tmp_path / "artifacts" / "extra_files" / "model.pt")
    assert cfg.name == "smoke" and point.threshold == pytest.approx(0.25)


def test_a_retried_log_reuses_the_finished_run(store, logged, run_files):
    again = log_fake_run(store, run_files)
    assert again.reused and again.run_id == logged.run_id
    assert again.models == logged.models


def test_the_run_spans_the_training_not_only_its_logging(run_files, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run_files["folder"], folder)
    began = 1_790_000_000  # the prepared statistics were written first, then the history
    for offset, name in enumerate(("prepared/scaler.json", "prepared/tokenizer.json")):
        os.utime(folder / name, (began + offset, began + offset))
    os.utime(folder / KIND / "history.csv", (began + 600, began + 600))
    fresh = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the copy would reuse a run
    logged = log_fake_run(fresh, run_files | {"folder": folder})
    info = fresh.client.get_run(logged.run_id).info
    assert info.start_time == began * 1000
    assert info.end_time > (began + 600) * 1000


def test_missing_files_fail_before_anything_is_logged(store, run_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        log_training(store, EXPERIMENT, tmp_path, run_files["config"], {}, kinds=(KIND,))
    assert not store.client.search_runs(
        [store.client.get_experiment_by_name(EXPERIMENT).experiment_id],
        f"attributes.run_name = '{tmp_path.name}'",
    )


def test_final_figures_never_repeat_a_history_key(tmp_path, monkeypatch):
    """With a clock that does not move, no two metrics share (name, timestamp, step); the
    kept epoch's threshold is not confused with the last epoch's."""
    monkeypatch.setattr("registry.metrics.time.time", lambda: 1_800_000_000.0)
    history = tmp_path / "history.csv"
    history.write_text("epoch,threshold,val_loss\n0,0.4,1.0\n1,0.3,0.9\n2,0.2,0.95\n")
    summary = {"multimodal": {"threshold": 0.3, "best_epoch": 1}}
    metrics = run_metrics({"multimodal": history}, summary)
    keys = [(m.key, m.timestamp, m.step) for m in metrics]
    assert len(keys) == len(set(keys))
    assert [m.value for m in metrics if m.key == "multimodal.threshold"] == [0.4, 0.3, 0.2]
    assert [m.value for m in metrics if m.key == "multimodal.operating_threshold"] == [0.3]
