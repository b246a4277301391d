import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from model.calibrate import OperatingPoint, choose_threshold
from model.deploy import GATE_FILE, SHIPPABLE, optimize_for_deployment
from model.onnx_runtime import load_session, operating_point_path, predict_session
from model.predict import predict
from model.quantize import (
    FLOAT_SCOPES,
    WEIGHT_OPS,
    DieCalibrationReader,
    parity_gate,
    quantize_torch_dynamic,
    scope_nodes,
    write_gate,
)

FLOAT_OPS = ("LayerNormalization", "Softmax", "Add")


@pytest.fixture(scope="module")
def deployed(smoke_prepared, smoke_multimodal, tmp_path_factory):
    """The session's smoke multimodal model taken through the whole deployment pipeline."""
    _, data = smoke_prepared
    out = tmp_path_factory.mktemp("quantize")
    verdict = optimize_for_deployment(smoke_multimodal.folder / "model.pt", data, out / "deploy")
    return data, smoke_multimodal, verdict, out / "deploy"


def test_the_fp16_model_ships_beside_int8_with_its_own_gate(deployed):
    data, result, verdict, folder = deployed
    fp16 = folder / "model.fp16.onnx"
    gate = verdict["gates"]["fp16"]
    assert OperatingPoint.load(operating_point_path(fp16)).threshold == gate["threshold"]
    assert verdict["variants"]["cuda"] == {
        "file": "model.fp16.onnx",
        "precision": "fp16",
        "format": "fp16",
        "passed": gate["passed"],
    }
    assert verdict["variants"]["cpu"]["format"] == verdict["chosen"]
    probs = predict_session(load_session(fp16), data.datasets["test"])["probs"]
    reference = predict(result.model, data.datasets["test"])["probs"]
    assert np.abs(probs - reference).max() < 0.01  # float16 weights: far closer than INT8
    assert verdict["sizes_mb"]["model.fp16.onnx"] < verdict["sizes_mb"]["model.onnx"]


def test_the_pipeline_leaves_both_models_with_their_thresholds_and_the_verdict(deployed):
    data, result, verdict, folder = deployed
    for name in ("model.onnx", "model.int8.onnx"):
        assert operating_point_path(folder / name).exists()
    assert OperatingPoint.load(operating_point_path(folder / "model.onnx")) == (
        result.operating_point
    )
    int8_point = OperatingPoint.load(operating_point_path(folder / "model.int8.onnx"))
    assert int8_point.threshold == verdict["gates"][verdict["chosen"]]["threshold"]
    assert json.loads((folder / GATE_FILE).read_text())["chosen"] == verdict["chosen"]
    assert verdict["chosen"] in SHIPPABLE
    assert set(verdict["gates"]) == {"static_qdq", "dynamic", "torch_dynamic", "fp16"}
    assert verdict["calibration_dies"] == len(data.datasets["train"])  # fewer than 512 here
    assert verdict["parity"]["no_notes"]["max_abs_prob"] < 1e-4
    assert verdict["sizes_mb"]["model.int8.onnx"] < verdict["sizes_mb"]["model.onnx"]


INT8_PROB_TOL = 0.05  # INT8 vs FP32 probabilities; the barely trained smoke model sits so
# close to its threshold (and to uniform) that decision agreement would test noise


@pytest.mark.parametrize("name", ["static_qdq", "dynamic"])
def test_int8_models_load_run_and_stay_close_to_fp32(deployed, name):
    data, result, _, folder = deployed
    session = load_session(folder / f"model.{name}.onnx")
    probs = predict_session(session, data.datasets["test"])["probs"]
    reference = predict(result.model, data.datasets["test"])["probs"]
    assert np.abs(probs - reference).max() < INT8_PROB_TOL


def test_static_int8_keeps_norms_softmax_and_residual_adds_in_float(deployed):
    proto = onnx.load(str(deployed[3] / "model.static_qdq.onnx"))
    dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "LayerNormalization" in ops and "Softmax" in ops
    for node in proto.graph.node:  # a float op reads no dequantized tensor (no QLinear fusion)
        if node.op_type in FLOAT_OPS:
            assert not dequantized & set(node.input), node.name
    dynamic = [n.op_type for n in onnx.load(str(deployed[3] / "model.dynamic.onnx")).graph.node]
    assert "MatMulInteger" in dynamic


@pytest.mark.parametrize("name", ["static_qdq", "dynamic"])
def test_the_float_scopes_stay_float(deployed, name):
    """The golden-die match, the patch embedding, the small encoders and the head: no INT8."""
    fp32 = deployed[3] / "model.onnx"
    products = {n.name: n.op_type for n in _nodes(fp32, scope_nodes(onnx.load(str(fp32))))}
    products = {k: op for k, op in products.items() if op in WEIGHT_OPS}
    assert set(FLOAT_SCOPES) >= {"image_encoder.reference", "head"}
    assert {"Conv", "MatMul", "Gemm"} <= set(products.values())
    quantized = deployed[3] / f"model.{name}.onnx"
    dequantized = {n.output[0] for n in _nodes(quantized) if n.op_type == "DequantizeLinear"}
    if name == "dynamic":  # it rewrites every Gemm as MatMul + Add under new names
        products = {(f"{k}_MatMul" if op == "Gemm" else k): op for k, op in products.items()}
        products = {k: "MatMul" if op == "Gemm" else op for k, op in products.items()}
    kept = _nodes(quantized, products)
    assert {n.name: n.op_type for n in kept} == products  # the same float ops, by name
    assert not any(dequantized & set(n.input) for n in kept)
    quantized_ops = {n.op_type for n in _nodes(quantized)}
    assert quantized_ops & {"DequantizeLinear", "MatMulInteger"}  # the rest is INT8


def _nodes(path, names=None) -> list:
    return [n for n in onnx.load(str(path)).graph.node if names is None or n.name in names]


def test_torch_dynamic_int8_runs_in_pytorch_and_leaves_the_model_alone(deployed):
    data, result, _, _ = deployed
    quantized = quantize_torch_dynamic(result.model)
    kinds = {type(m).__module__ for m in quantized.modules()}
    assert any("quantized" in k for k in kinds)
    assert any(type(m) is nn.Linear for m in result.model.modules())
    probs = predict(quantized, data.datasets["test"])["probs"]
    assert np.isfinite(probs).all()
    reference = predict(result.model, data.datasets["test"])["probs"]
    assert np.abs(probs - reference).max() < INT8_PROB_TOL


def test_the_calibration_reader_feeds_each_sampled_die_once(deployed):
    train = deployed[0].datasets["train"]
    reader = DieCalibrationReader(train, n=50, batch_size=16)
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["image"]))
        assert batch["image"].dtype == np.float32 and batch["image"].max() <= 1.0
    assert sizes == [16, 16, 16, 2]
    reader.rewind()
    assert reader.get_next() is not None


def _dies(n_good=900, n_bad=100, seed=0):
    """Confident probabilities: good dies at P(good) 0.9, defective ones at 0.1."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_good, int), rng.integers(1, 5, n_bad)]
    probs = np.full((len(labels), 5), 0.025)
    probs[labels == 0, 0] = 0.9
    probs[labels != 0, 0] = 0.1
    probs[np.arange(len(labels))[labels != 0], labels[labels != 0]] = 0.825
    return probs, labels


def test_a_faithful_int8_model_passes_at_the_fp32_threshold():
    probs, labels = _dies()
    verdict = parity_gate(probs, probs.copy(), labels, probs, labels, 0.5, 0.005)
    assert verdict["passed"] and not verdict["recalibrated"]
    assert verdict["threshold"] == 0.5
    assert verdict["flip_rate"]["rate"] == 0.0
    assert verdict["escape"]["rate"] == 0.0 and verdict["fpr"]["rate"] == 0.0


def test_flipped_decisions_fail_the_gate_above_half_a_percent():
    probs, labels = _dies()
    int8 = probs.copy()
    int8[:10, 0] = 0.3  # 10 of 1000 good dies now flagged: 1% flips, FPR 1.1%
    verdict = parity_gate(probs, int8, labels, probs, labels, 0.5, 0.005)
    assert verdict["flip_rate"]["k"] == 10
    assert verdict["checks"] == {"flip_rate": False, "escape": True, "fpr": True}
    assert not verdict["passed"]


def test_a_shifted_int8_model_gets_its_own_threshold_on_validation():
    probs, labels = _dies()
    shifted = probs.copy()
    shifted[:, 0] = np.where(labels == 0, 0.97, 0.55)  # defect probability of bad dies 0.45
    verdict = parity_gate(probs, shifted, labels, shifted, labels, 0.5, 0.005)
    assert verdict["recalibrated"]
    expected = choose_threshold(shifted, labels, 0.005).threshold
    assert verdict["threshold"] == pytest.approx(expected) and expected < 0.5
    assert verdict["passed"]  # at its own threshold it decides exactly as FP32 does
    assert verdict["flip_rate_at_fp32_threshold"]["rate"] == pytest.approx(0.1)


def test_escape_and_false_positive_limits_are_enforced():
    probs, labels = _dies()
    bad = probs.copy()
    bad[labels != 0, 0] = 0.7  # test defect probability 0.3: every defect escapes at 0.5
    bad[:200, 0] = 0.4  # and 200 good dies are flagged
    verdict = parity_gate(probs, bad, labels, probs, labels, 0.5, 0.005)
    assert not verdict["recalibrated"]  # validation still holds the FP32 threshold
    assert verdict["checks"] == {"flip_rate": False, "escape": False, "fpr": False}
    assert verdict["escape"]["rate"] == 1.0 and verdict["fpr"]["k"] == 200


def test_the_verdict_is_written_as_json(tmp_path):
    probs, labels = _dies()
    verdict = parity_gate(probs, probs, labels, probs, labels, 0.5, 0.005)
    verdict["extra"] = np.float32(1.5)
    path = write_gate(tmp_path / "gate" / "int8_gate.json", verdict)
    back = json.loads(path.read_text())
    assert back["passed"] is True and back["extra"] == 1.5
    assert back["operating_point"]["threshold"] == 0.5


def test_torch_dynamic_quantization_leaves_transformer_layers_float():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.Sequential(nn.Linear(16, 16), layer).eval()
    quantized = quantize_torch_dynamic(model)
    assert type(quantized[0]) is not nn.Linear
    assert type(quantized[1].linear1) is nn.Linear
    with torch.no_grad():
        assert quantized(torch.randn(2, 4, 16)).shape == (2, 4, 16)
