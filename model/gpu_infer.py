"""Inference sections of the GPU check: the trained model's variants on each provider.

PyTorch eager FP32 and BF16; ONNX Runtime CUDA FP32 and FP16 and CPU INT8; TensorRT FP16
(the FP32 file, built in FP16) and INT8 (the static QDQ file). Each at batch 1, 8 and 32:
p50/p99 ms and dies/s, with decision agreement against PyTorch FP32 on the same dies. A
provider is checked by opening a session: one that falls back to another provider is
recorded with the reason and not timed under the wrong name.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from model.export import export_fp16, export_onnx
from model.gpu_dies import check_data
from model.metrics import decide
from model.network import build_model
from model.onnx_runtime import CPU, CUDA, TENSORRT, load_session, onnx_inputs, predict_session
from model.predict import model_inputs, predict
from model.quantize import DieCalibrationReader, quantize_static_qdq

FP32, FP16, INT8, REFERENCE = "model.onnx", "model.fp16.onnx", "model.int8.onnx", "reference.npz"


def export_variants(check) -> dict:
    """FP32 (opset 18, else 17), FP16 and static INT8 files of the trained model, each timed."""
    model, work = _model(check), check.work
    work.mkdir(parents=True, exist_ok=True)
    out = {"model": "trained in train_short" if "model" in check.shared else "untrained"}
    dies = _eval_dies(check)
    ref = predict(model, dies, batch_size=32)["probs"]
    np.savez(work / REFERENCE, probs=ref, threshold=check.shared.get("threshold", 0.5))
    out["fp32"] = _timed(
        lambda: _export_fp32(model, check.cfg, work / FP32, check.sizes.export_opset)
    )
    out["fp16"] = _timed(lambda: {"opset": None} | _size(export_fp16(work / FP32, work / FP16)))
    reader = DieCalibrationReader(_dies(check, "calibration", check.sizes.calibration_dies))
    out["int8_static_qdq"] = _timed(
        lambda: _size(quantize_static_qdq(work / FP32, work / INT8, reader))
    )
    return out


def _export_fp32(model, cfg, path: Path, opset: int) -> dict:
    try:
        return {"opset": opset} | _size(export_onnx(model, cfg, path, opset=opset))
    except Exception as err:  # e.g. no onnxscript: the TorchScript exporter writes opset 17
        if opset <= 17:
            raise
        return {"opset": 17, f"opset_{opset}_error": f"{type(err).__name__}: {err}"[:500]} | _size(
            export_onnx(model, cfg, path, opset=17)
        )


def infer_torch(check) -> dict:
    """PyTorch eager FP32 and BF16 (autocast) on the check's device."""
    model, dies, device = _model(check).eval(), _eval_dies(check), check.device
    rows = []
    for name, dtype in (("PyTorch eager FP32", None), ("PyTorch eager BF16", torch.bfloat16)):
        with _precision(device, dtype), torch.inference_mode():
            probs = predict(model, dies, batch_size=32)["probs"]

            def run(batch):
                model(**model_inputs(batch, device))
                if device.type == "cuda":
                    torch.cuda.synchronize()

            figures = _figures(check, run, probs, lambda batch: batch)
            rows.append({"variant": name, "provider": f"torch {device.type}"} | figures)
    return {"rows": rows}


def _precision(device, dtype):
    """bf16 autocast, or nothing for FP32."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def infer_onnxruntime(check) -> dict:
    """ONNX Runtime CUDA FP32 and FP16, and the CPU INT8 model a CPU station serves."""
    variants = [
        ("CUDA FP32", FP32, [CUDA, CPU]),
        ("CUDA FP16", FP16, [CUDA, CPU]),
        ("CPU INT8", INT8, [CPU]),
    ]
    return {"rows": [_ort_row(check, *v) for v in variants]}


def infer_tensorrt(check) -> dict:
    """TensorRT FP16 (FP32 file) and INT8 (QDQ file), engines cached under work/trt."""
    if TENSORRT not in ort.get_available_providers():
        return {"status": "skipped", "reason": f"onnxruntime lists no {TENSORRT}"}
    rows = []
    for name, file, int8 in (("TensorRT FP16", FP32, False), ("TensorRT INT8", INT8, True)):
        options = _trt_options(check, int8)
        rows.append(_ort_row(check, name, file, [(TENSORRT, options), CUDA, CPU]))
    return {"rows": rows}


def _trt_options(check, int8: bool) -> dict:
    m, work = check.cfg.model, check.work / "trt"
    work.mkdir(parents=True, exist_ok=True)

    def shapes(b: int) -> str:
        side, p, n = m.img_size, m.process_dim, m.max_note_len
        dims = {"image": f"3x{side}x{side}", "process": p, "process_missing": p}
        dims |= {"note_ids": n, "note_mask": n}
        return ",".join(f"{name}:{b}x{d}" for name, d in dims.items())

    batches = check.sizes.batches
    return {
        "trt_fp16_enable": True,
        "trt_int8_enable": int8,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(work),
        "trt_profile_min_shapes": shapes(min(batches)),
        "trt_profile_opt_shapes": shapes(batches[len(batches) // 2]),
        "trt_profile_max_shapes": shapes(max(batches)),
    }


def _ort_row(check, name: str, file: str, providers: list) -> dict:
    """Open a session on the wanted provider; time it and compare decisions when it is."""
    path, wanted = check.work / file, _name(providers[0])
    row = {"variant": name, "provider": wanted}
    if not path.is_file():
        return row | {"status": "skipped", "reason": f"{file} was not exported"}
    started = time.perf_counter()
    try:
        session = load_session(path, providers=providers)
    except Exception as err:
        return row | {"status": "failed", "error": f"{type(err).__name__}: {err}"[:800]}
    row["session_seconds"] = round(time.perf_counter() - started, 2)
    active = session.get_providers()
    if active[0] != wanted:
        reason = f"{wanted} did not start; the session runs on {active}"
        return row | {"status": "fallback", "reason": reason}
    dies = _eval_dies(check)
    probs = predict_session(session, dies, batch_size=max(check.sizes.batches))["probs"]
    output = [o.name for o in session.get_outputs()][:1]
    return row | _figures(check, lambda arrays: session.run(output, arrays), probs, onnx_inputs)


def _figures(check, run, probs: np.ndarray, convert) -> dict:
    """Decision agreement with the FP32 reference, and latency per batch size."""
    ref = np.load(check.work / REFERENCE)
    threshold = float(ref["threshold"])
    same = decide(probs, threshold) == decide(ref["probs"], threshold)
    out = {"status": "ok", "agreement": round(float(same.mean()), 4), "dies": len(same)}
    dies = _eval_dies(check)
    for b in check.sizes.batches:
        batch = convert(dies.__getitems__(list(range(min(b, len(dies))))))
        out[f"batch_{b}"] = _latency(lambda batch=batch: run(batch), b, check.sizes)
    return out


def _latency(run, batch: int, sizes) -> dict:
    for _ in range(3):
        run()
    times, started = [], time.perf_counter()
    while len(times) < sizes.latency_runs and time.perf_counter() - started < sizes.time_cap_s:
        tick = time.perf_counter()
        run()
        times.append(time.perf_counter() - tick)
    ms = 1000 * np.array(times)
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "dies_per_s": round(batch / float(np.mean(times)), 1),
        "runs": len(times),
    }


def _model(check):
    """The model train_short trained, else a fresh one (its agreement then means little)."""
    if "model" not in check.shared:
        torch.manual_seed(check.cfg.train.seed)
        check.shared["model"] = build_model(check.cfg.model, "multimodal").to(check.device)
    return check.shared["model"]


def _eval_dies(check):
    """The dies every variant is timed and compared on (the same in a child process)."""
    if "eval_dies" not in check.shared:
        check.shared["eval_dies"] = _dies(check, "eval", check.sizes.eval_dies)
    return check.shared["eval_dies"]


def _dies(check, name: str, n: int):
    m = check.cfg.model
    data = check_data({name: n}, m.img_size, m.max_note_len, m.vocab_size, check.device)
    return data.datasets[name]


def _timed(build) -> dict:
    started = time.perf_counter()
    try:
        out = {"status": "ok"} | build()
    except Exception as err:  # recorded; the other variants still build
        out = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:800]}
    return out | {"seconds": round(time.perf_counter() - started, 2)}


def _size(path: Path) -> dict:
    return {"file": str(path), "mb": round(path.stat().st_size / 2**20, 2)}


def _name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider
