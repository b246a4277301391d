"""download_bundle: everything serving needs, from a registered version alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model.onnx_runtime import operating_point_path
from model.prepare import SCALER_FILE, TOKENIZER_FILE
from registry import BundleError, download_bundle, install_first, log_bundle, register
from registry.bundle import MANIFEST_FILE, MODEL_FILE, OPERATING_POINT_FILE, VERSION_FILE, verify
from tests.registry.fake_run import INT8_THRESHOLD, KIND


@pytest.fixture
def champion_bundle(store, logged, model_name, tmp_path):
    version = register(store.client, model_name, logged.serving[KIND], {})
    install_first(store.client, model_name, version, "first")
    return download_bundle(store.client, model_name, "champion", tmp_path / "bundle")


def test_bundle_names_match_the_project():
    assert operating_point_path(MODEL_FILE).name == OPERATING_POINT_FILE
    assert (SCALER_FILE, TOKENIZER_FILE) == ("scaler.json", "tokenizer.json")


def test_bundle_holds_model_threshold_scaler_and_tokenizer(champion_bundle, run_files):
    bundle, prepared = champion_bundle, run_files["folder"] / "prepared"
    for name in (MODEL_FILE, OPERATING_POINT_FILE, SCALER_FILE, TOKENIZER_FILE, "int8_gate.json"):
        assert (bundle / name).is_file(), name
    point = json.loads((bundle / OPERATING_POINT_FILE).read_text())
    assert point["threshold"] == INT8_THRESHOLD
    for name in (SCALER_FILE, TOKENIZER_FILE):
        assert (bundle / name).read_bytes() == (prepared / name).read_bytes()
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert manifest["kind"] == KIND and manifest["threshold"] == INT8_THRESHOLD
    assert json.loads((bundle / VERSION_FILE).read_text())["version"] == "1"


def test_bundle_model_is_the_int8_model_and_runs(champion_bundle, run_files):
    session = ort.InferenceSession(
        str(champion_bundle / MODEL_FILE), providers=["CPUExecutionProvider"]
    )
    x = np.ones((3, 4), np.float32)
    (probs,) = session.run(None, {"x": x})
    assert probs.shape == (3, 5) and np.allclose(probs.sum(1), 1, atol=1e-4)
    ops = {n.op_type for n in onnx.load(str(champion_bundle / MODEL_FILE)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops


def test_bundle_by_version_number_replaces_an_earlier_bundle(store, champion_bundle, model_name):
    (champion_bundle / "stale.txt").write_text("from an earlier download")
    again = download_bundle(store.client, model_name, 1, champion_bundle)
    assert again == champion_bundle and not (again / "stale.txt").exists()
    assert (again / MODEL_FILE).is_file()


def test_bundle_refuses_to_overwrite_a_foreign_folder(store, champion_bundle, model_name, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        download_bundle(store.client, model_name, "champion", foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_an_altered_bundle_file_is_detected(champion_bundle):
    (champion_bundle / SCALER_FILE).write_text("{}")
    with pytest.raises(BundleError, match=SCALER_FILE):
        verify(champion_bundle)


@pytest.fixture
def fp32_bundle(run_files, tmp_path) -> Path:
    """A ready bundle folder of the FP32 model, as model.bundle.write_bundle lays it out."""
    folder, deploy, prepared = tmp_path / "fp32", run_files["deploy"], run_files["folder"]
    folder.mkdir()
    shutil.copyfile(deploy / "model.onnx", folder / MODEL_FILE)
    shutil.copyfile(deploy / "model.operating_point.json", folder / OPERATING_POINT_FILE)
    for name in (SCALER_FILE, TOKENIZER_FILE):
        shutil.copyfile(prepared / "prepared" / name, folder / name)
    return folder


def test_a_ready_bundle_folder_registers_and_downloads(store, fp32_bundle, model_name, tmp_path):
    record = log_bundle(store, "dieguard-first-champion", fp32_bundle, "baseline", git_commit="0a1")
    assert set(record.serving) == {"baseline"} and not record.reused
    version = register(store.client, model_name, record.serving["baseline"], {"first": True})
    install_first(store.client, model_name, version, "the CNN in production")
    bundle = download_bundle(store.client, model_name, "champion", tmp_path / "champion")
    for name in (MODEL_FILE, OPERATING_POINT_FILE, SCALER_FILE, TOKENIZER_FILE):
        assert (bundle / name).read_bytes() == (fp32_bundle / name).read_bytes(), name
    again = log_bundle(store, "dieguard-first-champion", fp32_bundle, "baseline")
    assert again.reused and again.run_id == record.run_id
