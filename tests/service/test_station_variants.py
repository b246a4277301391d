"""Which bundle variant a station runs: INT8 on a CPU, FP16 or TensorRT INT8 on a GPU, only
variants that passed their gate, and what /readyz says about it."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
import torch

from model import bundle as bundles
from model.bundle import (
    FP16_FILE,
    MODEL_FILE,
    station_choices,
    station_variants,
)
from model.export import export_fp16
from model.onnx_runtime import CPU, CUDA, TENSORRT, operating_point_path
from model.quantize import quantize_dynamic_int8
from service.engine import ModelEngine
from tests.service.conftest import live_config, register_bundle, start_service

PASSED, FAILED = {"passed": True}, {"passed": False}


@pytest.fixture(scope="module")
def station_bundle(service_bundle, tmp_path_factory):
    """A deployed bundle's layout: INT8 model.onnx, FP16 model, both operating points, and
    int8_gate.json naming the station variants (from the service's FP32 smoke bundle)."""
    root = tmp_path_factory.mktemp("station_bundle")
    folder = shutil.copytree(service_bundle, root / "b")
    fp32 = shutil.move(folder / MODEL_FILE, root / "fp32.onnx")
    quantize_dynamic_int8(fp32, folder / MODEL_FILE)
    export_fp16(fp32, folder / FP16_FILE)
    point = operating_point_path(folder / MODEL_FILE)
    shutil.copyfile(point, operating_point_path(folder / FP16_FILE))
    variants = station_variants("dynamic", {"dynamic": PASSED, "fp16": PASSED})
    (folder / "int8_gate.json").write_text(json.dumps({"variants": variants}))
    return folder


def test_the_variants_name_each_stations_file_and_gate():
    static = station_variants("static_qdq", {"static_qdq": PASSED, "fp16": FAILED})
    assert static["cpu"] == {
        "file": MODEL_FILE,
        "precision": "int8",
        "format": "static_qdq",
        "passed": True,
    }
    assert static["cuda"]["file"] == FP16_FILE and not static["cuda"]["passed"]
    assert static["tensorrt"]["file"] == MODEL_FILE  # TensorRT runs the QDQ graph
    assert "tensorrt" not in station_variants("dynamic", {"dynamic": PASSED, "fp16": PASSED})


def test_a_station_tries_the_gpu_variants_that_passed_then_the_cpu():
    both = station_variants("static_qdq", {"static_qdq": PASSED, "fp16": PASSED})
    everything = [TENSORRT, CUDA, CPU]
    assert station_choices(both, everything, gpu=False) == ["cpu"]
    assert station_choices(both, everything, gpu=True) == ["tensorrt", "cuda", "cpu"]
    assert station_choices(both, [CUDA, CPU], gpu=True) == ["cuda", "cpu"]
    fp16_failed = station_variants("dynamic", {"dynamic": PASSED, "fp16": FAILED})
    assert station_choices(fp16_failed, everything, gpu=True) == ["cpu"]
    int8_failed = station_variants("static_qdq", {"static_qdq": FAILED, "fp16": PASSED})
    assert station_choices(int8_failed, everything, gpu=True) == ["cuda", "cpu"]


def _variants(folder):
    return json.loads((folder / "int8_gate.json").read_text())["variants"]


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="asserts a CPU machine's choice; a GPU machine opens FP16 instead",
)
def test_a_cpu_machine_runs_the_int8_model(station_bundle):
    engine_session, runs_on = bundles.open_for_station(station_bundle, _variants(station_bundle))
    assert runs_on == {
        "variant": "cpu",
        "precision": "int8",
        "file": MODEL_FILE,
        "provider": CPU,
        "not_started": [],
    }
    ops = {n.op_type for n in onnx.load(str(station_bundle / MODEL_FILE)).graph.node}
    assert "MatMulInteger" in ops and engine_session.get_providers() == [CPU]


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="needs a CUDA provider that fails to start; on a GPU it starts",
)
def test_a_gpu_variant_whose_provider_does_not_start_falls_back_to_int8(
    station_bundle, monkeypatch
):
    # No GPU here: claiming one makes the CUDA session really fall back, as on a station
    # whose driver or CUDA libraries are missing.
    monkeypatch.setattr(bundles, "cuda_usable", lambda: True)
    _, runs_on = bundles.open_for_station(station_bundle, _variants(station_bundle))
    assert runs_on["variant"] == "cpu" and runs_on["provider"] == CPU
    assert runs_on["not_started"] == [f"cuda: {CUDA} did not start"]


def test_readyz_says_what_the_champion_runs_on(station_bundle, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_bundle(uri, station_bundle)
    service, stop = start_service(live_config(uri, tmp_path / "state"), uri)
    try:
        with service.client("operator") as client:  # the models show only with a key
            champion = client.get("/readyz").json()["models"]["champion"]
    finally:
        stop()
    expected = "cpu" if not torch.cuda.is_available() else champion["runs_on"]["variant"]
    assert champion["runs_on"]["variant"] == expected
    assert (
        champion["runs_on"]["precision"]
        == {"cpu": "int8", "cuda": "fp16", "tensorrt": "int8"}[expected]
    )
    bundle = next((tmp_path / "state" / "bundles").rglob(FP16_FILE))  # downloaded with the rest
    assert bundle.is_file()


def test_the_engine_decides_at_its_variants_threshold(station_bundle):
    engine = ModelEngine(station_bundle)
    point = json.loads(operating_point_path(station_bundle / MODEL_FILE).read_text())
    assert engine.threshold == point["threshold"] == engine.runs_on["threshold"]
