"""A small but real training run folder (model.pt, history, summary, ONNX FP32 and INT8,
operating points, gate verdict, scaler, tokenizer, reports) for the registry tests."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from model.calibrate import OperatingPoint
from model.checkpoint import save_trained
from model.config import load_config
from model.data import ProcessScaler
from model.metrics import summarize
from model.network import build_model
from model.schema import NUM_CLASSES
from model.tokenizer import save_tokenizer, train_note_tokenizer
from registry import Split, log_training

KIND = "multimodal"
EXPERIMENT = "dieguard-registry-tests"
DATA_DIGEST = "d1d2d3d4d5d6d7d8d9d0e1e2e3e4e5e6"
SPLIT_DIGESTS = {"train": "a" * 32, "val": "b" * 32, "test": "c" * 32}
GIT_COMMIT = "5ef2313"
INT8_THRESHOLD = 0.3125
FP32_THRESHOLD = 0.25


def write_onnx(path: Path, weight: np.ndarray) -> None:
    """A real ONNX model: x (B, 4) -> softmax(x @ weight) (B, NUM_CLASSES)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", NUM_CLASSES])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    w = numpy_helper.from_array(weight.astype(np.float32), "w")
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def point(threshold: float) -> dict:
    return asdict(OperatingPoint(threshold, 0.005, 0.004, 0.1, 250, 750))


def build_run(root: Path) -> dict:
    """A run folder as training, deployment, validation and EDA leave it (tiny, real files)."""
    run = root / "runs" / "smoke"
    cfg = load_config("configs/smoke.yaml", [f"out_dir={root / 'runs'}"])
    prepared = run / "prepared"
    prepared.mkdir(parents=True)
    ProcessScaler(np.zeros(48), np.ones(48)).save(prepared / "scaler.json")
    notes = ["scratch near the edge", "probe mark", "edge chip after dicing", "particle"]
    save_tokenizer(train_note_tokenizer(notes * 5, 60), prepared / "tokenizer.json")

    kind_dir = run / KIND
    kind_dir.mkdir()
    model = build_model(cfg.model, KIND)
    save_trained(kind_dir / "model.pt", model, KIND, cfg, OperatingPoint(**point(FP32_THRESHOLD)))
    history = pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "stage": [1, 2, 2],
            "train_loss": [1.2, 0.9, 0.7],
            "train_focal": [np.nan, 0.5, 0.4],  # stage 1 has no focal term
            "val_loss": [1.1, 0.8, 0.75],
            "val_escape": [0.01, 0.004, 0.003],
            "val_fpr": [0.5, 0.2, 0.15],
            "val_macro_f1": [0.3, 0.6, 0.7],
        }
    )
    history.to_csv(kind_dir / "history.csv", index=False)

    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, 200)
    probs = rng.dirichlet(np.ones(NUM_CLASSES), 200)
    test = summarize(labels, probs, FP32_THRESHOLD)
    summary = {
        KIND: {
            "seconds": 12.5,
            "best_epoch": 2,
            "threshold": FP32_THRESHOLD,
            "val_fpr": 0.15,
            "test": test,
            "test_no_notes": summarize(labels, probs[::-1].copy(), FP32_THRESHOLD),
        }
    }
    (run / "summary.json").write_text(json.dumps(summary))

    deploy = run / "deploy"
    deploy.mkdir()
    weight = rng.normal(size=(4, NUM_CLASSES))
    write_onnx(deploy / "model.onnx", weight)
    (deploy / "model.operating_point.json").write_text(json.dumps(point(FP32_THRESHOLD)))
    quantize_dynamic(deploy / "model.onnx", deploy / "model.int8.onnx", weight_type=QuantType.QInt8)
    (deploy / "model.int8.operating_point.json").write_text(json.dumps(point(INT8_THRESHOLD)))
    gate = {"chosen": "dynamic", "passed": True, "gates": {"dynamic": {"passed": True}}}
    (deploy / "int8_gate.json").write_text(json.dumps(gate))

    reports = root / "reports"
    for name, content in {
        "evaluation/evaluation.html": "<html>evaluation</html>",
        "evaluation/evaluation.json": json.dumps({"macro_f1": 0.7}),
        "data_docs/index.html": "<html>data docs</html>",
        "data_docs/validations/run.json": json.dumps({"success": True}),
        "eda/summary.json": json.dumps({"dies": 200}),
    }.items():
        (reports / name).parent.mkdir(parents=True, exist_ok=True)
        (reports / name).write_text(content)
    splits = {}
    for name, digest in SPLIT_DIGESTS.items():
        (root / "data" / name).mkdir(parents=True)
        splits[name] = Split(digest, root / "data" / name, rows=100)
    return {
        "folder": run,
        "config": cfg.to_dict(),
        "deploy": deploy,
        "splits": splits,
        "weight": weight,
        "artifacts": {
            "evaluation": reports / "evaluation",
            "data_docs": reports / "data_docs",
            "eda": reports / "eda",
            "eda_summary": reports / "eda" / "summary.json",
        },
    }


def log_fake_run(store, files: dict, **extra):
    """log_training of a fake run folder as the tests log it (extra: keyword arguments)."""
    return log_training(
        store,
        EXPERIMENT,
        files["folder"],
        files["config"],
        files["splits"],
        kinds=(KIND,),
        deployments={KIND: files["deploy"]},
        artifacts=files["artifacts"],
        **extra,
    )
