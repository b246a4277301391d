"""The GPU check: its dry run (the whole script at tiny sizes on the CPU, with only the
GPU machine's libraries importable) and its section runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model.config import load_config
from model.export import example_inputs
from model.gpu_check import DRY, DRY_MODEL, Check, Section, main, run_section
from model.gpu_train import LEVERS

# What the GPU machine lacks: neither the check nor its child processes may import any of it.
ABSENT = {"prefect", "mlflow", "great_expectations", "evidently", "fastapi", "starlette"}
ABSENT |= {"uvicorn", "tokenizers", "sklearn", "scipy", "matplotlib", "boto3", "wordcloud"}
RECORDER = """
import atexit, os, sys
def _record():
    names = sorted({m.partition(".")[0] for m in list(sys.modules)})
    with open(os.path.join(os.environ["IMPORTS_DIR"], str(os.getpid())), "w") as f:
        f.write("\\n".join(names))
atexit.register(_record)
"""


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run of `python -m model.gpu_check`, recording what every process imported."""
    site, imports = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("imports")
    (site / "sitecustomize.py").write_text(RECORDER)
    out = tmp_path_factory.mktemp("gpu_check")
    path = os.pathsep.join([str(site), os.getcwd()])
    env = os.environ | {"PYTHONPATH": path, "IMPORTS_DIR": str(imports)}
    cmd = [sys.executable, "-m", "model.gpu_check", "--dry-run", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = [set(p.read_text().split()) for p in imports.iterdir()]
    return out, json.loads((out / "gpu_check.json").read_text()), imported


@pytest.mark.slow
def test_dry_run_imports_only_what_the_gpu_machine_has(dry_run):
    _, _, imported = dry_run
    assert len(imported) >= 3  # the check and its two child sections
    assert all("torch" in names and "onnxruntime" in names for names in imported)
    assert [sorted(names & ABSENT) for names in imported] == [[]] * len(imported)


@pytest.mark.slow
def test_dry_run_runs_every_section(dry_run):
    out, report, _ = dry_run
    sections = report["sections"]
    assert {k: v["status"] for k, v in sections.items()} == dict.fromkeys(sections, "ok")
    assert report["dry_run"] and report["environment"]["libraries"]["torch"]
    for stage in ("stage_1", "stage_2"):
        assert sections["train_step"][stage]["dies_per_s"] > 0
    assert [r["lever"] for r in sections["train_levers"]["rows"]] == list(LEVERS)
    assert [r["lever"] for r in sections["train_compile"]["rows"]][-1] == "all + torch.compile"
    assert sections["train_max_batch"]["largest_fitting"] == DRY.max_batch
    epochs = sections["train_short"]["epochs"]
    assert [e["stage"] for e in epochs] == [1, 2] and 0 <= epochs[-1]["val_fpr"] <= 1
    assert report["projection"]["minutes_as_train_py_runs"] > 0
    markdown = (out / "gpu_check.md").read_text()
    assert "## Training step" in markdown and "## Inference" in markdown


@pytest.mark.slow
def test_dry_run_measures_each_variant_or_says_why_not(dry_run):
    _, report, _ = dry_run
    rows = {
        r["variant"]: r
        for name in ("infer_torch", "infer_onnxruntime", "infer_tensorrt")
        for r in report["sections"][name]["rows"]
    }
    assert rows["PyTorch eager FP32"]["agreement"] == 1.0  # the reference itself
    for name in ("PyTorch eager BF16", "CPU INT8"):
        assert 0.5 <= rows[name]["agreement"] <= 1.0
        assert rows[name]["batch_1"]["p50_ms"] <= rows[name]["batch_1"]["p99_ms"]
    if not torch.cuda.is_available():  # the provider is listed, but no session comes up on it
        for name in ("CUDA FP32", "CUDA FP16", "TensorRT FP16", "TensorRT INT8"):
            assert rows[name]["status"] == "fallback", rows[name]
            assert "did not start" in rows[name]["reason"]


@pytest.mark.slow
def test_dry_run_fp16_export_keeps_the_signature_and_the_outputs(dry_run):
    out, report, _ = dry_run
    work = out / "work"
    fp16 = onnx.load(str(work / "model.fp16.onnx"))
    dtypes = {t.data_type for t in fp16.graph.initializer if len(t.dims) >= 2}
    assert onnx.TensorProto.FLOAT16 in dtypes
    inputs = {k: v.numpy() for k, v in example_inputs(_dry_config(), 4).items()}
    logits = [
        ort.InferenceSession(str(work / name), providers=["CPUExecutionProvider"]).run(
            ["logits"], inputs
        )[0]
        for name in ("model.onnx", "model.fp16.onnx")
    ]
    assert logits[1].dtype == np.float32
    np.testing.assert_allclose(logits[1], logits[0], atol=0.05)


def _dry_config():
    return load_config("configs/gpu.yaml", DRY_MODEL)


def _check(tmp_path, budget_s: float) -> Check:
    deadline = time.perf_counter() + budget_s
    return Check(_dry_config(), DRY, torch.device("cpu"), tmp_path, True, deadline)


def test_a_failing_section_is_recorded_and_does_not_raise(tmp_path):
    def broken(check):
        raise RuntimeError("no such provider")

    result = run_section(_check(tmp_path, 60), Section("broken", broken, 0))
    assert result["status"] == "failed"
    assert result["error"] == "RuntimeError: no such provider"
    assert "seconds" in result


def test_a_section_that_does_not_fit_the_budget_is_skipped(tmp_path):
    ran = []
    result = run_section(_check(tmp_path, 10), Section("long", ran.append, 30))
    assert result["status"] == "skipped" and "time budget" in result["reason"] and not ran


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="asserts the skips of a machine without a GPU; on a GPU the sections run",
)
def test_the_full_check_without_a_gpu_skips_every_section_and_says_why(tmp_path):
    assert main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["environment"]["cuda_available"] is False
    assert {s["status"] for s in report["sections"].values()} == {"skipped"}
    assert "no CUDA device" in report["sections"]["train_step"]["reason"]
    assert "| train_step | skipped |" in (tmp_path / "gpu_check.md").read_text()
