"""A deployable model bundle: an ONNX model with everything needed to run it on dies.

A bundle folder holds `model.onnx` (the INT8 artifact of a multimodal model; the FP32
export of the vision-only CNN), its `model.operating_point.json`, and the `scaler.json` and
`tokenizer.json` it was trained with. The registry stores and hands out bundles;
serving and the champion comparison read them.

A deployed multimodal bundle also holds `model.fp16.onnx` with its own operating point, and
its manifest names the variant for each kind of station (`station_variants`): a CPU runs
the INT8 model; a GPU runs the FP16 model on ONNX Runtime's CUDA provider, or the static
INT8 (QDQ) model on TensorRT where that provider is present. A variant that failed its
parity gate is never chosen. `open_for_station` opens the one this machine can run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
from onnxruntime import InferenceSession

from model.batches import DieDataset
from model.calibrate import OperatingPoint
from model.checkpoint import load_trained
from model.config import ModelConfig, RunConfig
from model.data import DieSplit, ProcessScaler, load_split
from model.export import export_onnx
from model.metrics import summarize
from model.onnx_runtime import (
    CPU,
    CUDA,
    TENSORRT,
    ModelFileError,
    cuda_usable,
    load_session,
    operating_point_path,
    predict_session,
)
from model.prepare import SCALER_FILE, TOKENIZER_FILE, encode_split
from model.tokenizer import load_tokenizer

MODEL_FILE = "model.onnx"
FP16_FILE = "model.fp16.onnx"
TRT_CACHE_DIR = "tensorrt_engines"  # built engines, kept beside the bundle's files


def export_fp32_bundle(model_path: str | Path, prepared_dir: str | Path, dest: str | Path) -> Path:
    """A bundle of a trained model's FP32 ONNX export at its own operating point."""
    model, cfg, point = load_trained(model_path, "cpu")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    point.save(operating_point_path(export_onnx(model, cfg, dest / MODEL_FILE)))
    _copy_statistics(prepared_dir, dest)
    return dest


def _copy_statistics(prepared_dir: str | Path, dest: Path) -> None:
    for name in (SCALER_FILE, TOKENIZER_FILE):
        shutil.copyfile(Path(prepared_dir) / name, dest / name)


def bundle_files(folder: str | Path) -> dict[str, Path]:
    """The bundle's files by role; ModelFileError names any that are missing."""
    folder = Path(folder)
    files = {
        "model": folder / MODEL_FILE,
        "operating_point": operating_point_path(folder / MODEL_FILE),
        "scaler": folder / SCALER_FILE,
        "tokenizer": folder / TOKENIZER_FILE,
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ModelFileError(f"the model bundle {folder} lacks {', '.join(missing)}")
    return files


@dataclass
class BundleSplit:
    """One split encoded for one bundle: what running the bundle over those dies needs."""

    files: dict[str, Path]  # bundle_files of the bundle
    session: ort.InferenceSession  # its model, on the CPU
    part: DieSplit  # the split at the model's image size, z-scored with the bundle's scaler
    dataset: DieDataset  # the split with notes encoded by the bundle's tokenizer


def open_bundle_split(
    folder: str | Path,
    data_dir: str | Path,
    split: str,
    cache_dir: str | Path,
    max_note_len: int | None = None,
    default_note_len: int = ModelConfig.max_note_len,
) -> BundleSplit:
    """Open a bundle on the CPU and encode one split of a data set at the sizes it takes.

    Args:
        folder: the bundle folder (see bundle_files).
        data_dir: the data set root (train/val/test folders in the dataset contract).
        split: which split to encode.
        cache_dir: the decoded-image cache.
        max_note_len: note length to encode; None takes the one fixed in the model's graph.
        default_note_len: the length when the graph does not fix one.
    Returns:
        The bundle's files and session with the split and its encoded dataset.
    """
    files = bundle_files(folder)
    session = load_session(files["model"], providers=[CPU])
    img_size = int(session.get_inputs()[0].shape[-1])
    note_len = max_note_len or _note_length(session, default_note_len)
    scaler = ProcessScaler.load(files["scaler"])
    part = load_split(data_dir, split, img_size, cache_dir, scaler)
    dataset = encode_split(part, load_tokenizer(files["tokenizer"]), note_len)
    return BundleSplit(files, session, part, dataset)


def score_bundle(
    folder: str | Path,
    cfg: RunConfig,
    split: str = "test",
    max_note_len: int | None = None,
    batch_size: int = 64,
) -> dict:
    """A bundle's headline figures (metrics.summarize) on one split of cfg.data_dir.

    The split is encoded with the bundle's own scaler and tokenizer, at the image size its
    model takes, so a champion is scored on exactly the dies a candidate is.
    """
    opened = open_bundle_split(
        folder, cfg.data_dir, split, cfg.data.cache_dir, max_note_len, cfg.model.max_note_len
    )
    pred = predict_session(opened.session, opened.dataset, batch_size=batch_size)
    threshold = OperatingPoint.load(opened.files["operating_point"]).threshold
    return summarize(pred["labels"], pred["probs"], threshold)


def _note_length(session, default: int) -> int:
    """The note length a model takes (fixed in its graph), else the configured one."""
    for node in session.get_inputs():
        if "note" in node.name and isinstance(node.shape[-1], int):
            return node.shape[-1]
    return default


def station_variants(int8_format: str, gates: dict) -> dict:
    """The manifest's variants: which bundle file runs on which station, and its gate.

    Args:
        int8_format: the INT8 variant shipped as model.onnx ("static_qdq" or "dynamic").
        gates: parity-gate verdicts by variant (quantize.parity_gate), with int8_format's
            and "fp16".
    """
    variants = {
        "cpu": {"file": MODEL_FILE, "precision": "int8", "format": int8_format},
        "cuda": {"file": FP16_FILE, "precision": "fp16", "format": "fp16"},
    }
    variants["cpu"]["passed"] = bool(gates[int8_format]["passed"])
    variants["cuda"]["passed"] = bool(gates.get("fp16", {}).get("passed", False))
    if int8_format == "static_qdq":  # TensorRT runs QDQ graphs, not dynamic quantization
        variants["tensorrt"] = dict(variants["cpu"])
    return variants


def station_choices(variants: dict, providers: list[str], gpu: bool) -> list[str]:
    """The variants to try on this machine, best first; the CPU variant always last.

    Args:
        variants: the manifest's variants (station_variants).
        providers: ONNX Runtime's available providers.
        gpu: whether a CUDA device is usable.
    """
    wanted = []
    if gpu and TENSORRT in providers:
        wanted.append("tensorrt")
    if gpu and CUDA in providers:
        wanted.append("cuda")
    ok = [name for name in wanted if variants.get(name, {}).get("passed")]
    return ok + ["cpu"]


def open_for_station(
    folder: str | Path, variants: dict | None, threads: int | None = None
) -> tuple[InferenceSession, dict]:
    """Open the bundle's best variant for this machine.

    A variant whose provider does not come up (the session falls back) is closed and the
    next one tried. A bundle without variants opens model.onnx as load_session chooses.

    Returns:
        (session, runs_on): runs_on names the variant, precision, file, provider, and the
        variants that were tried and did not start.
    """
    folder = Path(folder)
    if not variants:
        session = load_session(folder / MODEL_FILE, threads=threads)
        runs_on = {"variant": "default", "precision": None, "file": MODEL_FILE}
        return session, runs_on | {"provider": session.get_providers()[0], "not_started": []}
    not_started = []
    for name in station_choices(variants, ort.get_available_providers(), cuda_usable()):
        providers, entry = _providers(name, folder), variants[name]
        session = load_session(folder / entry["file"], providers=providers, threads=threads)
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if session.get_providers()[0] == wanted:
            runs_on = {"variant": name, "precision": entry["precision"], "file": entry["file"]}
            return session, runs_on | {"provider": wanted, "not_started": not_started}
        not_started.append(f"{name}: {wanted} did not start")
    raise ModelFileError(f"no variant of {folder} opens here: {'; '.join(not_started)}")


def _providers(variant: str, folder: Path) -> list:
    """The providers a variant is opened with, in order (TensorRT caches its engines)."""
    if variant == "tensorrt":
        cache = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(folder / TRT_CACHE_DIR),
        }
        return [(TENSORRT, {"trt_fp16_enable": True, "trt_int8_enable": True} | cache), CUDA, CPU]
    return [CUDA, CPU] if variant == "cuda" else [CPU]
