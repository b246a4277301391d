"""A deployable model bundle: an ONNX model with everything needed to run it on dies.

A bundle folder holds `model.onnx` (the INT8 artifact of a multimodal model; the FP32
export of the vision-only CNN), its `model.operating_point.json`, and the `scaler.json` and
`tokenizer.json` it was trained with. The registry stores and hands out bundles;
serving and the champion comparison read them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from model.batches import DieDataset
from model.calibrate import OperatingPoint
from model.checkpoint import load_trained
from model.config import ModelConfig, RunConfig
from model.data import DieSplit, ProcessScaler, load_split
from model.export import export_onnx
from model.metrics import summarize
from model.onnx_runtime import (
    CPU,
    ModelFileError,
    load_session,
    operating_point_path,
    predict_session,
)
from model.prepare import SCALER_FILE, TOKENIZER_FILE, encode_split
from model.tokenizer import load_tokenizer

MODEL_FILE = "model.onnx"


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
