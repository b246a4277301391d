"""INT8 variants of an exported model, and the pipeline that picks the one allowed to ship.

Three variants: ONNX Runtime static quantization (QDQ, per-channel weights, calibrated on
training dies), ONNX Runtime dynamic quantization (QInt8 weights), and PyTorch dynamic
quantization of nn.Linear (the seed's torch-side INT8, evaluated in PyTorch). Only weight
products (Conv, Gemm, MatMul with a constant 2-D weight) are quantized; LayerNormalization,
Softmax, residual Add and activation-by-activation MatMul (attention scores) stay float, and
so do whole modules (FLOAT_SCOPES), as the first and last layers of a quantized network
usually do: the golden-die comparison, whose match is a convolution with the golden dies as
constant kernels (at 8 bits it picks the wrong offset and leaves the layout's edges in the
residual), the ViT's patch embedding (the first layer: it reads the raw residual, and at 8
bits it moved the defect probability of the cpu model's validation dies by 0.0014 on
average, more than every other quantized module together; float, the static model's
decision flips there fell from 26 to 9 of 4,000 at no measurable latency cost), the small
process and note encoders and the head. The image encoder's transformer blocks, most of the
work after the golden comparison, and the fusion layers run INT8.

Graph preparation: `onnxruntime.quantization.shape_inference.quant_pre_process` does not help
here: its symbolic shape inference fails on the dynamo exporter's graph (a Shape node with an
unknown input shape) and its optimisation step then fails to reload its own temporary file
(external data). The same two steps are done directly: ONNX Runtime basic graph optimisation
(constant folding, which turns the split attention weights back into initializers) and ONNX
shape inference.
"""

from __future__ import annotations

import ast
import copy
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from torch import nn

from model.batches import DieDataset
from model.calibrate import OperatingPoint, choose_threshold
from model.metrics import decide, escape_rate, false_positive_rate, rate
from model.onnx_runtime import onnx_inputs
from model.schema import GOOD

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
FLOAT_SCOPES = (
    "image_encoder.reference",
    "image_encoder.vit.patch_embed",
    "process_encoder",
    "note_encoder",
    "head",
)


class DieCalibrationReader(CalibrationDataReader):
    """Feeds a random sample of dies (with their notes) to the static-quantization calibrator.

    Args:
        dataset: dies to sample from (training dies).
        n: how many dies (all of them when the split is smaller).
        batch_size: dies per calibration batch.
        seed: sampling seed.
    """

    def __init__(self, dataset: DieDataset, n: int = 512, batch_size: int = 32, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.indices = np.sort(rng.choice(len(dataset), min(n, len(dataset)), replace=False))
        self.dataset, self.batch_size = dataset, batch_size
        self.rewind()

    def __len__(self) -> int:
        return len(self.indices)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._start >= len(self.indices):
            return None
        chunk = self.indices[self._start : self._start + self.batch_size]
        self._start += self.batch_size
        return onnx_inputs(self.dataset.__getitems__(chunk.tolist()))

    def rewind(self) -> None:
        self._start = 0


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds ready-made input dicts (e.g. random inputs for a latency-only model)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self.batches = list(batches)
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


def prepare_graph(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Constant-fold (ONNX Runtime basic level) and shape-infer a model before quantization."""
    out_path = Path(out_path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out_path)
    options.log_severity_level = 3
    ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    proto = onnx.load(str(out_path))
    # The exporter lists weights in value_info; the dynamic quantizer transposes Gemm weights
    # and its shape inference then trips over the stale entries.
    weights = {t.name for t in proto.graph.initializer}
    kept = [v for v in proto.graph.value_info if v.name not in weights]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    onnx.save(onnx.shape_inference.infer_shapes(proto), str(out_path))
    return out_path


def weight_nodes(
    proto: onnx.ModelProto, float_nodes: frozenset[str] = frozenset(), op_types=WEIGHT_OPS
) -> tuple[list[str], list[str]]:
    """Split nodes of `op_types` into (weight products to quantize, the rest to keep float).

    A weight product's second input is a constant of rank 2 or more (a Linear or Conv weight),
    and its name is not in `float_nodes`.
    """
    ranks = {t.name: len(t.dims) for t in proto.graph.initializer}
    quantize, keep = [], []
    for node in proto.graph.node:
        if node.op_type in op_types:
            weight = any(ranks.get(name, 0) >= 2 for name in node.input[1:2])
            (quantize if weight and node.name not in float_nodes else keep).append(node.name)
    return quantize, keep


def scope_nodes(proto: onnx.ModelProto, scopes=FLOAT_SCOPES) -> frozenset[str]:
    """Names of the nodes exported from the network's submodules at `scopes` (module paths).

    Read from the exporter's node metadata (its name scopes start with the export wrapper's
    own attribute, then the network's module paths). The graph preparation drops that
    metadata but keeps node names, so this reads the model as exported.
    """
    found = set()
    for node in proto.graph.node:
        for entry in node.metadata_props:
            if entry.key != "pkg.torch.onnx.name_scopes":
                continue
            paths = {name.partition(".")[2] for name in ast.literal_eval(entry.value)}
            if paths & set(scopes):
                found.add(node.name)
    return frozenset(found)


def _split_nodes(fp32_path: Path, prepared: Path) -> tuple[list[str], list[str]]:
    """weight_nodes of the prepared graph, with FLOAT_SCOPES' nodes kept float."""
    return weight_nodes(onnx.load(str(prepared)), scope_nodes(onnx.load(str(fp32_path))))


def quantize_static_qdq(
    fp32_path: str | Path,
    out_path: str | Path,
    reader: CalibrationDataReader,
    per_channel: bool = True,
) -> Path:
    """Static INT8 in QDQ format: uint8 activations calibrated by MinMax, int8 weights.

    Outputs of MatMul and Gemm stay float (ONNX Runtime runs them as MatMulIntegerToFloat),
    so their bias and residual Adds read float values; Conv outputs are re-quantized.

    Args:
        fp32_path: the exported FP32 model.
        out_path: where the INT8 model goes.
        reader: calibration batches (e.g. DieCalibrationReader over >= 500 training dies).
        per_channel: per-output-channel weight scales.
    Returns:
        out_path.
    """
    out_path = Path(out_path)
    prepared = prepare_graph(fp32_path, out_path.with_suffix(".prep.onnx"))
    quantize, keep = _split_nodes(Path(fp32_path), prepared)
    quantize_static(
        str(prepared), str(out_path), reader, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(WEIGHT_OPS), nodes_to_quantize=quantize, nodes_to_exclude=keep,
        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        extra_options={
            "MatMulConstBOnly": True,
            "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
        },
    )  # fmt: skip
    prepared.unlink()
    return out_path


def quantize_dynamic_int8(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Dynamic INT8: QInt8 weights of Conv/Gemm/MatMul, activations quantized at run time.

    Only exclusions are named: the dynamic quantizer first rewrites each Gemm as MatMul + Add
    under new names (`<name>_MatMul`), so a list of nodes to quantize would silently skip every
    Gemm, and a Gemm kept float must be excluded under its new name too.

    Returns: out_path.
    """
    out_path = Path(out_path)
    prepared = prepare_graph(fp32_path, out_path.with_suffix(".prep.onnx"))
    _, keep = _split_nodes(Path(fp32_path), prepared)
    quantize_dynamic(
        str(prepared), str(out_path), op_types_to_quantize=list(WEIGHT_OPS),
        nodes_to_exclude=keep + [f"{name}_MatMul" for name in keep], weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )  # fmt: skip
    prepared.unlink()
    return out_path


def quantize_torch_dynamic(model: nn.Module) -> nn.Module:
    """PyTorch dynamic INT8 of nn.Linear layers (a copy; the model is left as it is).

    Left float: nn.MultiheadAttention's output projection (PyTorch skips it) and the linears
    of nn.TransformerEncoderLayer, whose inference fast-path check reads `linear1.weight` as a
    tensor and fails on a quantized layer (where it is a method). torch.ao.quantization is
    deprecated in favour of torchao (not part of this stack); its warnings are silenced here.
    """
    model = copy.deepcopy(model).cpu().eval()
    inside = {
        f"{parent}.{child}".lstrip(".")
        for parent, module in model.named_modules()
        if isinstance(module, nn.TransformerEncoderLayer)
        for child, _ in module.named_modules()
    }
    spec = {
        name: torch.ao.quantization.default_dynamic_qconfig
        for name, module in model.named_modules()
        if type(module) is nn.Linear and name not in inside
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


def parity_gate(
    fp32_probs: np.ndarray,
    int8_probs: np.ndarray,
    labels: np.ndarray,
    val_probs_int8: np.ndarray,
    val_labels: np.ndarray,
    fp32_threshold: float,
    escape_target: float,
    fpr_budget: float = 0.0,
    max_flip_rate: float = 0.005,
    max_escape: float = 0.01,
    max_fpr: float = 0.15,
) -> dict:
    """Whether an INT8 model may replace its FP32 model.

    The INT8 model keeps the FP32 threshold when that still meets `escape_target` on
    validation; otherwise its own threshold is chosen there (calibrate.choose_threshold).
    On test, at each model's own threshold: decisions (classes from metrics.decide) that
    differ from FP32 at most `max_flip_rate`, escape below `max_escape`, FPR below `max_fpr`.

    Args:
        fp32_probs, int8_probs, labels: test probabilities (N, C) and classes (N,).
        val_probs_int8, val_labels: validation probabilities of the INT8 model and classes.
        fp32_threshold: the FP32 model's operating threshold.
        escape_target: the validation escape target the threshold is chosen for.
        fpr_budget: the FPR budget it was chosen with (calibrate.choose_threshold).
    Returns:
        {"passed", "checks", "threshold", "recalibrated", "operating_point", "flip_rate",
        "flip_rate_at_fp32_threshold", "escape", "fpr", "limits", ...}; rates carry counts and
        95% Clopper-Pearson bounds.
    """
    point = _int8_point(val_probs_int8, val_labels, fp32_threshold, escape_target, fpr_budget)
    fp32_pred = decide(fp32_probs, fp32_threshold)
    int8_pred = decide(int8_probs, point.threshold)
    same_threshold = decide(int8_probs, fp32_threshold)
    flips = rate(int((fp32_pred != int8_pred).sum()), len(labels))
    escape, fpr = escape_rate(labels, int8_pred), false_positive_rate(labels, int8_pred)
    checks = {
        "flip_rate": bool(flips["rate"] <= max_flip_rate),
        "escape": bool(escape["rate"] < max_escape),
        "fpr": bool(fpr["rate"] < max_fpr),
    }  # NaN (no dies of a kind) fails its check
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "threshold": point.threshold,
        "fp32_threshold": float(fp32_threshold),
        "recalibrated": point.threshold != fp32_threshold,
        "operating_point": asdict(point),
        "flip_rate": flips,
        "flip_rate_at_fp32_threshold": rate(int((fp32_pred != same_threshold).sum()), len(labels)),
        "escape": escape,
        "fpr": fpr,
        "limits": {"max_flip_rate": max_flip_rate, "max_escape": max_escape, "max_fpr": max_fpr},
    }


def _int8_point(
    probs, labels, fp32_threshold: float, escape_target: float, fpr_budget: float
) -> OperatingPoint:
    """The FP32 threshold when it holds on validation, else one chosen for the INT8 model."""
    pred = decide(probs, fp32_threshold)
    escape = escape_rate(labels, pred)["rate"]
    if not escape <= escape_target:  # NaN: no defective validation dies, recalibrate
        return choose_threshold(probs, labels, escape_target, fpr_budget)
    return OperatingPoint(
        threshold=float(fp32_threshold),
        escape_target=escape_target,
        val_escape=escape,
        val_fpr=false_positive_rate(labels, pred)["rate"],
        val_defective=int((labels != GOOD).sum()),
        val_good=int((labels == GOOD).sum()),
        fpr_budget=fpr_budget,
    )


def write_gate(path: str | Path, verdict: dict) -> Path:
    """Write a gate verdict (with its figures) as JSON. Returns: the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(verdict, indent=2, default=_plain))
    return path


def _plain(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)
