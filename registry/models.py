"""Logging a run's models (MLflow 3 logged models) inside the active fluent run.

Per kind: ``<kind>-pytorch`` (the trained nn.Module, pickled by MLflow's PyTorch flavour, with
the original model.pt as an extra file), ``<kind>-fp32`` (the FP32 ONNX export with its
operating point) and ``<kind>-int8`` (the INT8 ONNX model carrying the serving bundle, see
registry.bundle: this is the one to register). A ready bundle folder (e.g. the FP32 export of
the vision-only baseline) is logged as ``<kind>-bundle``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import mlflow
import onnx
import onnxruntime

from registry.bundle import (
    GATE_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    SCALER_FILE,
    TOKENIZER_FILE,
    stage_extras,
)

FP32_FILE = "model.onnx"  # written by model.deploy.optimize_for_deployment
INT8_FILE = "model.int8.onnx"
FP16_FILE = "model.fp16.onnx"
KIND_TAG = "dieguard.kind"
ROLE_TAG = "dieguard.role"


def onnx_requirements() -> list[str]:
    """Pinned pip requirements of the ONNX models (onnxruntime: CPU or GPU build alike)."""
    return [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]


def log_pytorch(kind: str, model_pt: Path) -> str:
    """Log a model.pt as the module it rebuilds; returns the model URI.

    The module is pickled with MLflow's PyTorch flavour (``serialization_format="pickle"``;
    MLflow 3.17's default "pt2" would torch.export the model from example inputs and a
    TensorSpec signature, and gives five-input models no pyfunc: the deployable graph is
    the ONNX export already). It loads with ``mlflow.pytorch.load_model`` wherever dieguard
    is installed. The checkpoint itself (config and operating point included) rides along
    as an extra file for ``model.checkpoint.load_trained``.
    """
    from model.checkpoint import load_trained  # torch and the network, only when logging

    module, cfg, point = load_trained(model_pt)
    info = mlflow.pytorch.log_model(
        module,
        name=f"{kind}-pytorch",
        serialization_format="pickle",
        extra_files=[str(model_pt)],
        pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
        tags={KIND_TAG: kind, ROLE_TAG: "pytorch"},
        metadata={"threshold": point.threshold, "run_name": cfg.name},
    )
    return info.model_uri


def log_fp32(kind: str, deploy_dir: Path) -> str:
    """Log the FP32 ONNX export with its operating point; returns the model URI."""
    path = deploy_dir / FP32_FILE
    point = _operating_point(path)
    info = mlflow.onnx.log_model(
        onnx.load(str(path)),
        name=f"{kind}-fp32",
        save_as_external_data=False,
        extra_files=[str(point)],
        pip_requirements=onnx_requirements(),
        tags={KIND_TAG: kind, ROLE_TAG: "fp32"},
        metadata={"threshold": json.loads(point.read_text())["threshold"]},
    )
    return info.model_uri


def log_int8_bundle(kind: str, deploy_dir: Path, prepared: Path) -> str:
    """Log a deployment folder's INT8 model as the kind's serving bundle; returns its URI."""
    gate = deploy_dir / GATE_FILE
    return log_serving(
        f"{kind}-int8",
        kind,
        deploy_dir / INT8_FILE,
        prepared / SCALER_FILE,
        prepared / TOKENIZER_FILE,
        gate if gate.is_file() else None,
        station_files(deploy_dir, gate),
    )


def station_files(deploy_dir: Path, gate: Path) -> dict:
    """The FP16 model with its operating point and the station variants, when deployment
    wrote them (model.deploy): {"extra": files by bundle name, "variants": ...} or {}."""
    fp16 = deploy_dir / FP16_FILE
    if not (fp16.is_file() and gate.is_file()):
        return {}
    point = _operating_point(fp16)
    variants = json.loads(gate.read_text()).get("variants")
    return {"extra": {FP16_FILE: fp16, point.name: point}, "variants": variants}


def log_bundle_folder(kind: str, folder: Path) -> str:
    """Log a ready bundle folder (model.bundle.write_bundle, e.g. an FP32 baseline export)
    as the kind's serving bundle, named ``<kind>-bundle``; returns its URI."""
    gate = folder / GATE_FILE
    return log_serving(
        f"{kind}-bundle",
        kind,
        folder / MODEL_FILE,
        folder / SCALER_FILE,
        folder / TOKENIZER_FILE,
        gate if gate.is_file() else None,
        station_files(folder, gate),
    )


def log_serving(
    name: str,
    kind: str,
    onnx_path: Path,
    scaler: Path,
    tokenizer: Path,
    gate: Path | None,
    stations: dict | None = None,
) -> str:
    """Log an ONNX model with the serving bundle's side files (see registry.bundle).

    Args:
        name: the logged model's name.
        kind: the model kind, tagged ``dieguard.kind``.
        onnx_path: the model; its ``<stem>.operating_point.json`` must lie beside it.
        scaler, tokenizer: the statistics it was trained with.
        gate: int8_gate.json, or None.
        stations: station_files of the deployment (more model files and their variants).
    Returns:
        The logged model's URI, tagged ``dieguard.role=serving``.
    """
    point = _operating_point(onnx_path)
    proto = onnx.load(str(onnx_path))
    threshold = json.loads(point.read_text())["threshold"]
    with tempfile.TemporaryDirectory() as tmp:
        extras = stage_extras(
            Path(tmp),
            operating_point=point,
            scaler=scaler,
            tokenizer=tokenizer,
            gate=gate,
            model_sha256=hashlib.sha256(proto.SerializeToString()).hexdigest(),
            info={"kind": kind, "threshold": threshold, "source_onnx": str(onnx_path.resolve())}
            | ({"variants": stations["variants"]} if stations else {}),
            extra=(stations or {}).get("extra"),
        )
        info = mlflow.onnx.log_model(
            proto,
            name=name,
            save_as_external_data=False,
            extra_files=extras,
            pip_requirements=onnx_requirements(),
            tags={KIND_TAG: kind, ROLE_TAG: "serving"},
            metadata={"threshold": threshold, "bundle": MANIFEST_FILE},
        )
    return info.model_uri


def _operating_point(onnx_path: Path) -> Path:
    point = onnx_path.with_name(f"{onnx_path.stem}.operating_point.json")
    if not point.is_file():
        raise FileNotFoundError(f"{onnx_path} has no operating point file {point.name} beside it")
    return point
