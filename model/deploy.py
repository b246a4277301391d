"""The deployment pipeline of one trained model: export -> parity -> INT8 and FP16 -> gates.

Artifacts in `out_dir`: model.onnx (FP32), model.int8.onnx (the chosen INT8 variant, for
CPU stations) and model.fp16.onnx (for GPU stations), each with `<stem>.operating_point.json`
beside it (a variant's threshold may be recalibrated), the INT8 variants under their own
names, and int8_gate.json with every verdict and figure and the station variants
(model.bundle.station_variants). Every shipped variant passes the same parity gate.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
from torch import nn

from model.bundle import FP16_FILE, station_variants
from model.calibrate import OperatingPoint
from model.checkpoint import load_trained
from model.config import RunConfig
from model.export import check_parity, export_fp16, export_onnx
from model.onnx_runtime import (
    CPU,
    CUDA,
    cuda_usable,
    load_session,
    operating_point_path,
    predict_session,
)
from model.predict import predict, predict_once
from model.prepare import Prepared, prepare, trained_with
from model.quantize import (
    DieCalibrationReader,
    parity_gate,
    quantize_dynamic_int8,
    quantize_static_qdq,
    quantize_torch_dynamic,
    write_gate,
)

SHIPPABLE = ("static_qdq", "dynamic")  # preference order; torch_dynamic is for comparison
GATE_FILE = "int8_gate.json"


def optimize_for_deployment(
    model_path: str | Path,
    data: str | Path | Prepared,
    out_dir: str | Path,
    calibration_dies: int = 512,
    parity_dies: int = 512,
    batch_size: int = 64,
    compare: bool = True,
    **limits,
) -> dict:
    """Export a trained model, check it, quantize it three ways and gate the INT8 variants.

    The static QDQ model ships when it passes the gate, else the dynamic one (marked failed
    when it does not pass either).

    Args:
        model_path: a model.pt written by training.
        data: the data folder or a Prepared. A folder is prepared with the z-scores and
            tokenizer the model was trained with when its run folder holds them for this
            data (`prepared/` beside the model's folder), else fitted on its train split.
        out_dir: where the artifacts go.
        calibration_dies: training dies for static calibration (at least 500 in production).
        parity_dies: test dies for the FP32 export parity check.
        compare: build and gate all three variants; False stops at the first shippable
            variant that passes (what a retrain needs: the others are only for comparison).
        limits: max_flip_rate, max_escape, max_fpr for quantize.parity_gate.
    Returns:
        The verdict written to int8_gate.json: chosen, passed (the INT8 model's gate), artifact,
        parity, gates (the FP16 model's under "fp16"), variants, sizes (MB) and
        calibration_dies.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, cfg, point = load_trained(model_path)
    data = _prepared(data, cfg, out, model_path)
    fp32 = export_onnx(model, cfg, out / "model.onnx")
    point.save(operating_point_path(fp32))
    test = data.datasets["test"]
    parity = check_parity(model, fp32, test, point.threshold, n=parity_dies)
    reader = DieCalibrationReader(data.datasets["train"], calibration_dies)
    builders = {
        "static_qdq": lambda: quantize_static_qdq(fp32, out / "model.static_qdq.onnx", reader),
        "dynamic": lambda: quantize_dynamic_int8(fp32, out / "model.dynamic.onnx"),
        "torch_dynamic": lambda: quantize_torch_dynamic(model),
    }
    reference = predict_once(model, test, batch_size)
    variants, gates = {}, {}
    for name in builders if compare else SHIPPABLE:
        variants[name] = builders[name]()
        gates[name] = _gate(variants[name], data, reference, point, batch_size, limits)
        if gates[name]["passed"] and not compare:
            break
    chosen = next((n for n in SHIPPABLE if n in gates and gates[n]["passed"]), SHIPPABLE[-1])
    int8 = shutil.copyfile(variants[chosen], out / "model.int8.onnx")
    OperatingPoint(**gates[chosen]["operating_point"]).save(operating_point_path(int8))
    fp16 = export_fp16(fp32, out / FP16_FILE)
    gates["fp16"] = _gate(fp16, data, reference, point, batch_size, limits)
    OperatingPoint(**gates["fp16"]["operating_point"]).save(operating_point_path(fp16))
    verdict = {
        "chosen": chosen,
        "passed": gates[chosen]["passed"],
        "artifact": str(int8),
        "parity": parity,
        "gates": gates,
        "variants": station_variants(chosen, gates),
        "sizes_mb": {p.name: p.stat().st_size / 2**20 for p in (fp32, Path(int8), fp16)},
        "calibration_dies": len(reader),
    }
    write_gate(out / GATE_FILE, verdict)
    return verdict


def _prepared(data: str | Path | Prepared, cfg: RunConfig, out: Path, model_path) -> Prepared:
    if isinstance(data, Prepared):
        return data
    cfg = copy.deepcopy(cfg)
    cfg.data_dir = str(data)
    folder, trained = out / "prepared", trained_with(model_path)
    if trained.is_dir() and not folder.exists():  # a copy: a refit never overwrites the run's
        shutil.copytree(trained, folder)
    return prepare(cfg, folder)


def _gate(variant, data: Prepared, reference: dict, point, batch_size: int, limits) -> dict:
    """Score one INT8 variant on validation and test, and gate it against FP32."""
    probs = {split: _probs(variant, data.datasets[split], batch_size) for split in ("val", "test")}
    return parity_gate(
        reference["probs"],
        probs["test"],
        reference["labels"],
        probs["val"],
        data.datasets["val"].labels.numpy(),
        point.threshold,
        point.escape_target,
        point.fpr_budget,
        **limits,
    )


def _probs(variant: Path | nn.Module, dataset, batch_size: int) -> np.ndarray:
    """A variant's probabilities: FP16 on the GPU it is for when there is one, else the CPU."""
    if isinstance(variant, nn.Module):
        return predict(variant, dataset, batch_size)["probs"]
    on_gpu = Path(variant).name == FP16_FILE and cuda_usable()
    session = load_session(variant, providers=[CUDA, CPU] if on_gpu else [CPU])
    return predict_session(session, dataset, batch_size=batch_size)["probs"]
