import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from model.bench import EAGER, ONNX_RUNTIMES, benchmark, heatmap_png, preprocess
from model.calibrate import OperatingPoint
from model.checkpoint import save_trained
from model.config import load_config
from model.export import export_onnx
from model.network import build_model
from model.onnx_runtime import CPU
from model.prepare import prepare

STATS = {"p50", "p95", "p99", "mean"}


@pytest.fixture(scope="module")
def tiny_model(tiny_data, tmp_path_factory):
    """A randomly initialised smoke model saved like a trained one (latency needs no training),
    its FP32 export (the fast opset-17 path) and the prepared tiny data."""
    out = tmp_path_factory.mktemp("bench")
    cfg = load_config(
        "configs/smoke.yaml",
        [f"data_dir={tiny_data}", f"out_dir={out}", f"data.cache_dir={out / 'cache'}"],
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, "multimodal").eval()
    point = OperatingPoint(0.5, 0.005, 0.0, 0.0, 1, 1)
    save_trained(out / "model.pt", model, "multimodal", cfg, point)
    fp32 = export_onnx(model, cfg, out / "model.onnx", opset=17)
    return out, fp32, prepare(cfg, out / "prepared")


def test_bench_on_real_dies_returns_every_runtime_and_stage(tiny_model):
    out, fp32, data = tiny_model
    result = benchmark(
        out / "model.pt", data, batch_sizes=(1, 2), warmup=1, iters=3,
        out_dir=out / "run", onnx_paths={"onnx_fp32": fp32},
    )  # fmt: skip
    cpu = result["latency_ms"][CPU]
    assert set(cpu) == {EAGER, *ONNX_RUNTIMES}
    for runtime in cpu.values():
        assert set(runtime) == {1, 2}
        assert all(set(s) == STATS for s in runtime.values())
    assert set(result["preprocess_ms"]) == {"decode", "resize_normalize", "tokenize", "heatmap_png"}
    assert set(result["full_path_ms"]) == {EAGER, *ONNX_RUNTIMES}
    assert result["speedup_vs_eager"][CPU][EAGER][1] == 1.0
    assert result["settings"]["real_dies"] and result["settings"]["threads"] == 2
    assert (out / "run" / "model.static_qdq.onnx").exists()  # built by the benchmark
    assert json.loads((out / "run" / "bench.json").read_text())["settings"]["iters"] == 3
    assert "onnx_int8_dynamic" in (out / "run" / "bench.txt").read_text()


def test_bench_without_data_uses_random_inputs(tiny_model):
    out, fp32, _ = tiny_model
    files = {"onnx_fp32": fp32, "onnx_int8_static": fp32, "onnx_int8_dynamic": fp32}
    result = benchmark(
        out / "model.pt", None, batch_sizes=(1,), warmup=0, iters=2,
        out_dir=out / "random", onnx_paths=files,
    )  # fmt: skip
    assert not result["settings"]["real_dies"]
    assert set(result["latency_ms"][CPU][EAGER]) == {1}
    assert "full inline path" in result["table"]


def test_preprocess_and_heatmap_give_model_input_and_an_image():
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    x = preprocess(pixels, 32)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and 0.0 <= x.min() <= x.max() <= 1
    png = heatmap_png(pixels, np.random.default_rng(1).dirichlet(np.ones(16)))
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size == (256, 256) and img.mode == "RGB"
    assert heatmap_png(pixels, np.ones(1))  # a single region (the baseline) is a flat overlay
