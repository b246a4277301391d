"""Inference latency: PyTorch eager against ONNX Runtime FP32 and INT8, and the inline path.

Per batch size and execution provider (CPU; CUDA when usable; TensorRT only when asked),
p50/p95/p99 of model calls after warm-up; pre- and post-processing timed apart (PNG decode,
resize + scaling to [0, 1] (ImageNet normalisation runs inside the network), note
tokenization, heatmap PNG encoding); and the full inline path for one die. Benchmarks report
what they measure: nothing here asserts a figure.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.bench_inputs import BenchInputs, bench_inputs
from model.cache import read_image
from model.checkpoint import load_trained
from model.export import export_onnx
from model.metrics import decide
from model.onnx_runtime import CPU, CUDA, cuda_usable, load_session
from model.prepare import Prepared
from model.quantize import (
    ArrayCalibrationReader,
    DieCalibrationReader,
    quantize_dynamic_int8,
    quantize_static_qdq,
)
from model.schema import IMAGE_SIZE
from model.tokenizer import encode_notes

EAGER = "pytorch_fp32"
ONNX_RUNTIMES = ("onnx_fp32", "onnx_int8_static", "onnx_int8_dynamic")


def benchmark(
    model_path: str | Path,
    data: str | Path | Prepared | None = None,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8),
    warmup: int = 5,
    iters: int = 50,
    providers: list[str] | None = None,
    threads: int = 2,
    out_dir: str | Path | None = None,
    onnx_paths: dict[str, str | Path] | None = None,
) -> dict:
    """Measure one trained model in every runtime.

    Args:
        model_path: a model.pt (a randomly initialised one is fine for latency).
        data: a data folder or Prepared for real dies; None uses random inputs.
        batch_sizes: dies per call.
        warmup, iters: untimed and timed calls per measurement.
        providers: ONNX Runtime providers to measure; default CPU, plus CUDA when usable.
        threads: torch intra-op threads and ONNX Runtime intra_op_num_threads.
        out_dir: where ONNX files, bench.json and bench.txt go (default: beside the model).
        onnx_paths: existing files for any of onnx_fp32, onnx_int8_static, onnx_int8_dynamic.
    Returns:
        {"latency_ms": {provider: {runtime: {batch: {p50, p95, p99, mean}}}},
        "speedup_vs_eager", "preprocess_ms", "full_path_ms", "files", "settings", "table"}.
    """
    model, cfg, point = load_trained(model_path)
    out = Path(out_dir or Path(model_path).parent / "bench")
    out.mkdir(parents=True, exist_ok=True)
    inputs = bench_inputs(cfg, data, max(batch_sizes), out)
    files = _onnx_files(model, cfg, out, inputs, onnx_paths or {})
    providers = providers or ([CPU, CUDA] if cuda_usable() else [CPU])
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timer = _Timer(warmup, iters)
        latency = {
            p: _provider_latency(model, files, inputs, p, batch_sizes, threads, timer)
            for p in providers
        }
        sessions = {name: load_session(path, [CPU], threads) for name, path in files.items()}
        result = {
            "latency_ms": latency,
            "speedup_vs_eager": _speedups(latency),
            "preprocess_ms": _pre_post(inputs, cfg.model.img_size, timer),
            "full_path_ms": _full_path(model, sessions, inputs, cfg, point.threshold, timer),
            "files": {k: str(v) for k, v in files.items()},
            "settings": {
                "threads": threads,
                "warmup": warmup,
                "iters": iters,
                "providers": providers,
                "real_dies": inputs.real,
            },
        }
    finally:
        torch.set_num_threads(previous)
    result["table"] = format_table(result)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    (out / "bench.txt").write_text(result["table"] + "\n")
    return result


def _onnx_files(model, cfg, out: Path, inputs: BenchInputs, given: dict) -> dict[str, Path]:
    files = {k: Path(v) for k, v in given.items()}
    if "onnx_fp32" not in files:
        files["onnx_fp32"] = export_onnx(model, cfg, out / "model.onnx")
    if "onnx_int8_static" not in files:
        reader = (
            DieCalibrationReader(inputs.dataset, 512)
            if inputs.dataset is not None
            else ArrayCalibrationReader([inputs.batch(8)])
        )
        files["onnx_int8_static"] = quantize_static_qdq(
            files["onnx_fp32"], out / "model.static_qdq.onnx", reader
        )
    if "onnx_int8_dynamic" not in files:
        files["onnx_int8_dynamic"] = quantize_dynamic_int8(
            files["onnx_fp32"], out / "model.dynamic.onnx"
        )
    return {k: files[k] for k in ONNX_RUNTIMES}


class _Timer:
    """Times a call: `warmup` untimed calls, then `iters` timed ones (milliseconds)."""

    def __init__(self, warmup: int, iters: int) -> None:
        self.warmup, self.iters = warmup, iters

    def __call__(self, fn: Callable[[], object]) -> dict[str, float]:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.iters):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000.0)
        p50, p95, p99 = np.percentile(times, [50, 95, 99])
        return {"p50": p50, "p95": p95, "p99": p99, "mean": float(np.mean(times))}


def _provider_latency(model, files, inputs, provider, batch_sizes, threads, timer) -> dict:
    """{runtime: {batch: stats}} on one provider (PyTorch eager on the matching device)."""
    result: dict[str, dict] = {}
    device = {CPU: "cpu", CUDA: "cuda"}.get(provider)
    if device == "cpu" or (device == "cuda" and torch.cuda.is_available()):
        net = model.to(device)
        result[EAGER] = {b: timer(_eager_call(net, inputs.batch(b), device)) for b in batch_sizes}
        model.cpu()
    for name, path in files.items():
        session = load_session(path, _fallbacks(provider), threads)
        if session.get_providers()[0] != provider:
            result[name] = {"skipped": f"{provider} did not come up"}
            continue
        result[name] = {b: timer(_session_call(session, inputs.batch(b))) for b in batch_sizes}
    return result


def _fallbacks(provider: str) -> list[str]:
    """The provider first, then what ONNX Runtime may hand unsupported nodes to."""
    return {CPU: [CPU], CUDA: [CUDA, CPU]}.get(provider, [provider, CUDA, CPU])


def _session_call(session, arrays: dict[str, np.ndarray]) -> Callable:
    return lambda: session.run(None, arrays)


def _eager_call(model, arrays: dict[str, np.ndarray], device: str) -> Callable:
    kwargs = {
        "images": torch.from_numpy(arrays["image"]).to(device),
        "process_logs": torch.from_numpy(arrays["process"]).to(device),
        "process_missing": torch.from_numpy(arrays["process_missing"]).to(device),
        "note_tokens": torch.from_numpy(arrays["note_ids"]).to(device),
        "note_mask": torch.from_numpy(arrays["note_mask"]).to(device),
    }

    @torch.inference_mode()
    def call():
        out = model(**kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return call


def _speedups(latency: dict) -> dict:
    """eager p50 / runtime p50 per provider, runtime and batch (above 1: faster than eager).

    Providers without an eager run of their own (TensorRT) compare with CUDA eager, else CPU.
    """
    result = {}
    for provider, runtimes in latency.items():
        eager = next(
            (latency[p][EAGER] for p in (provider, CUDA, CPU) if EAGER in latency.get(p, {})), {}
        )
        result[provider] = {
            name: {b: eager[b]["p50"] / s["p50"] for b, s in stats.items() if b in eager}
            for name, stats in runtimes.items()
            if "skipped" not in stats
        }
    return result


def preprocess(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (256, 256, 3) -> float (1, 3, size, size) in [0, 1], resized as the cache does."""
    if pixels.shape[0] != size:
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    return (pixels.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


def heatmap_png(pixels: np.ndarray, region_map: np.ndarray, alpha: float = 0.45) -> bytes:
    """A region map (K,) over a (K = g * g) grid, coloured and blended over the image, as PNG.

    Args:
        pixels: uint8 (H, W, 3) image.
        region_map: (K,) attention weights (a single region gives a flat overlay).
        alpha: overlay opacity.
    """
    g = max(1, int(round(np.sqrt(region_map.size))))
    grid = region_map.reshape(g, g).astype(np.float32)
    grid = (grid - grid.min()) / (np.ptp(grid) + 1e-8)  # g, g in [0, 1]
    heat = np.stack([grid, 1.0 - np.abs(2.0 * grid - 1.0), 1.0 - grid], axis=-1)  # blue->red
    heat_img = Image.fromarray((heat * 255).astype(np.uint8)).resize(
        (pixels.shape[1], pixels.shape[0]), Image.Resampling.BILINEAR
    )
    blended = Image.blend(Image.fromarray(pixels), heat_img, alpha)
    buffer = io.BytesIO()
    blended.save(buffer, format="PNG", compress_level=1)  # fast: it is on the inline path
    return buffer.getvalue()


def _pre_post(inputs: BenchInputs, size: int, timer: _Timer) -> dict:
    png, note = inputs.pngs[0], inputs.notes[0]
    pixels = read_image(io.BytesIO(png), IMAGE_SIZE)
    region = np.random.default_rng(0).dirichlet(np.ones(inputs.regions))
    L = inputs.batch(1)["note_ids"].shape[1]
    return {
        "decode": timer(lambda: read_image(io.BytesIO(png), IMAGE_SIZE)),
        "resize_normalize": timer(lambda: preprocess(pixels, size)),
        "tokenize": timer(lambda: encode_notes(inputs.tokenizer, [note], L)),
        "heatmap_png": timer(lambda: heatmap_png(pixels, region)),
    }


def _full_path(model, sessions: dict, inputs: BenchInputs, cfg, threshold, timer) -> dict:
    """One die end to end (decode, preprocess, tokenize, model, decision, heatmap PNG)."""
    one, size = inputs.batch(1), cfg.model.img_size
    L = one["note_ids"].shape[1]

    def path(run: Callable[[dict], tuple]) -> Callable[[], bytes]:
        def call() -> bytes:
            pixels = read_image(io.BytesIO(inputs.pngs[0]), IMAGE_SIZE)
            ids, mask = encode_notes(inputs.tokenizer, [inputs.notes[0]], L)
            arrays = {**one, "image": preprocess(pixels, size), "note_ids": ids, "note_mask": mask}
            logits, region = run(arrays)
            decide(torch.softmax(torch.from_numpy(logits), 1).numpy(), threshold)
            return heatmap_png(pixels, region[0])

        return call

    def eager(arrays):
        logits, aux = _eager_call(model, arrays, "cpu")()
        region = aux.get("region_map", torch.ones_like(logits[:, :1]))
        return logits.numpy(), region.numpy()

    result = {EAGER: timer(path(eager))}
    for name, session in sessions.items():
        result[name] = timer(path(lambda a, s=session: tuple(s.run(["logits", "region_map"], a))))
    return result


def format_table(result: dict) -> str:
    """The measurements as a plain-text table."""
    lines = [f"{'provider':<10} {'runtime':<18} {'batch':>5} {'p50 ms':>8} {'p95 ms':>8} "
             f"{'p99 ms':>8} {'x eager':>8}"]  # fmt: skip
    for provider, runtimes in result["latency_ms"].items():
        short = provider.removesuffix("ExecutionProvider")
        for name, stats in runtimes.items():
            if "skipped" in stats:
                lines.append(f"{short:<10} {name:<18} {stats['skipped']}")
                continue
            for b, s in stats.items():
                x = result["speedup_vs_eager"][provider][name].get(b, float("nan"))
                lines.append(f"{short:<10} {name:<18} {b:>5} {s['p50']:8.2f} {s['p95']:8.2f} "
                             f"{s['p99']:8.2f} {x:8.2f}")  # fmt: skip
    lines.append("")
    lines.append("pre/post-processing (one die)   p50 ms   p99 ms")
    for name, s in result["preprocess_ms"].items():
        lines.append(f"  {name:<30}{s['p50']:7.2f}  {s['p99']:7.2f}")
    lines.append("full inline path, batch 1, CPU  p50 ms   p99 ms")
    for name, s in result["full_path_ms"].items():
        lines.append(f"  {name:<30}{s['p50']:7.2f}  {s['p99']:7.2f}")
    return "\n".join(lines)
