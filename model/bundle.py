"""A deployable model bundle: an ONNX model with everything needed to run it on dies.

A bundle folder holds `model.onnx` (the INT8 artifact of a multimodal model; the FP32
export of the vision-only CNN), its `model.operating_point.json`, and the `scaler.json` and
`tokenizer.json` it was trained with. The registry stores and hands out bundles;
serving and the champion comparison read them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from model.calibrate import OperatingPoint
from model.checkpoint import load_trained
from model.config import RunConfig
from model.data import ProcessScaler, load_split
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
    files = bundle_files(folder)
    session = load_session(files["model"], providers=[CPU])
    img_size = int(session.get_inputs()[0].shape[-1])
    note_len = max_note_len or _note_length(session, cfg.model.max_note_len)
    scaler = ProcessScaler.load(files["scaler"])
    part = load_split(cfg.data_dir, split, img_size, cfg.data.cache_dir, scaler)
    dataset = encode_split(part, load_tokenizer(files["tokenizer"]), note_len)
    pred = predict_session(session, dataset, batch_size=batch_size)
    threshold = OperatingPoint.load(files["operating_point"]).threshold
    return summarize(pred["labels"], pred["probs"], threshold)


def _note_length(session, default: int) -> int:
    """The note length a model takes (fixed in its graph), else the configured one."""
    for node in session.get_inputs():
        if "note" in node.name and isinstance(node.shape[-1], int):
            return node.shape[-1]
    return default
