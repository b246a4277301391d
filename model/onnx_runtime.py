"""ONNX Runtime sessions for exported dieguard models: loading with run-time provider choice,
checking the file against the deployment signature, and running batches of dies.

The deployment signature (see model.export) is five inputs and four outputs:
image float (B, 3, H, W) in [0, 1], process float (B, 48) with 0 where missing,
process_missing bool (B, 48), note_ids int64 (B, L), note_mask bool (B, L) ->
logits (B, C), region_map (B, K), process_attention (B, K, P), embedding (B, D).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from model.batches import DieDataset
from model.checkpoint import ModelFileError

INPUTS = {
    "image": "tensor(float)",
    "process": "tensor(float)",
    "process_missing": "tensor(bool)",
    "note_ids": "tensor(int64)",
    "note_mask": "tensor(bool)",
}
OUTPUTS = ("logits", "region_map", "process_attention", "embedding")
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def operating_point_path(onnx_path: str | Path) -> Path:
    """Where a model file's threshold lives: `<stem>.operating_point.json` beside it."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.operating_point.json")


def session_options(threads: int | None = None, quiet: bool = True) -> ort.SessionOptions:
    """Args: threads intra-op threads (None: ONNX Runtime's default). Returns: options."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    if quiet:
        options.log_severity_level = 3  # errors only: a missing CUDA library is not one here
    return options


def load_session(
    path: str | Path,
    providers: list[str] | None = None,
    threads: int | None = None,
    image_size: int | None = None,
) -> ort.InferenceSession:
    """Open an exported model, CUDA first when it really works, else the CPU.

    Args:
        path: the .onnx file.
        providers: explicit provider list (e.g. TensorRT, CUDA, CPU). None chooses at run time:
            CUDA then CPU when onnxruntime has CUDA and a GPU is visible, else CPU alone;
            a CUDA provider that fails to start leaves a CPU session (see get_providers()).
            TensorRT only when asked.
        threads: intra-op threads.
        image_size: when given, the side the model's image input must have.
    Returns:
        The session, its inputs and outputs checked against the deployment signature.
    Raises:
        ModelFileError: missing, corrupt, truncated or non-ONNX file, or other inputs/outputs.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if providers is None:
        providers = [CUDA, CPU] if cuda_usable() else [CPU]
    try:
        session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
    except Exception as err:  # onnxruntime raises its own classes (InvalidProtobuf, Fail...)
        raise ModelFileError(f"{path} is not a usable ONNX model: {err}") from err
    check_signature(session, path, image_size)
    return session


def cuda_usable() -> bool:
    """Whether a CUDA session can come up: the provider is built in and a GPU is visible.

    (onnxruntime-gpu lists CUDA on machines without a GPU; trying it there only logs errors.)
    """
    return CUDA in ort.get_available_providers() and torch.cuda.is_available()


def check_signature(
    session: ort.InferenceSession, path: str | Path = "model", image_size: int | None = None
) -> None:
    """Raise ModelFileError unless the session has exactly the deployment inputs and outputs
    (and, when `image_size` is given, images of that side)."""
    got = {i.name: i.type for i in session.get_inputs()}
    if got != INPUTS:
        raise ModelFileError(
            f"{path} does not take the dieguard inputs: expected {_fmt(INPUTS)}, got {_fmt(got)}"
        )
    outputs = [o.name for o in session.get_outputs()]
    if outputs[: len(OUTPUTS)] != list(OUTPUTS):
        raise ModelFileError(f"{path} outputs {outputs}, expected {list(OUTPUTS)}")
    shape = session.get_inputs()[0].shape  # batch, 3, H, W
    if image_size is not None and list(shape[1:]) != [3, image_size, image_size]:
        raise ModelFileError(f"{path} takes images of shape {shape}, expected side {image_size}")


def _fmt(signature: dict[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in signature.items()) or "nothing"


def onnx_inputs(batch: dict, with_notes: bool = True) -> dict[str, np.ndarray]:
    """The session inputs of a DieDataset batch (uint8 images become float in [0, 1]).

    Args:
        batch: a batch dict (image, process, missing, note_ids, note_mask), tensors or arrays.
        with_notes: False blanks every note mask (the no-note path).
    """
    image = np.asarray(batch["image"])
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
    mask = np.asarray(batch["note_mask"], bool)
    return {
        "image": np.ascontiguousarray(image, np.float32),
        "process": np.nan_to_num(np.asarray(batch["process"], np.float32), nan=0.0),
        "process_missing": np.asarray(batch["missing"], bool),
        "note_ids": np.asarray(batch["note_ids"], np.int64),
        "note_mask": mask if with_notes else np.zeros_like(mask),
    }


def run_session(session: ort.InferenceSession, batch_arrays: dict) -> dict[str, np.ndarray]:
    """Args: session; input arrays by name (ONNX names, or a DieDataset batch dict).

    Returns: {output name: array}.
    """
    if "missing" in batch_arrays:
        batch_arrays = onnx_inputs(batch_arrays)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(batch_arrays))))


def iter_batches(dataset: DieDataset, n: int | None = None, batch_size: int = 64) -> Iterator:
    """Batches of the first `n` dies (all when None), in dataset order."""
    n = len(dataset) if n is None else min(n, len(dataset))
    for start in range(0, n, batch_size):
        yield dataset.__getitems__(list(range(start, min(n, start + batch_size))))


def predict_session(
    session: ort.InferenceSession,
    dataset: DieDataset,
    n: int | None = None,
    batch_size: int = 64,
    with_notes: bool = True,
    keep: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Probabilities (and kept outputs) of the first `n` dies, like model.predict.predict.

    Returns: {"probs": (N, C), "logits": (N, C), "labels": (N,), plus one array per kept output}.
    """
    out: dict[str, list] = {"logits": [], "labels": [], **{k: [] for k in keep}}
    for batch in iter_batches(dataset, n, batch_size):
        result = run_session(session, onnx_inputs(batch, with_notes))
        out["labels"].append(np.asarray(batch["label"]))
        for k in ("logits", *keep):
            out[k].append(result[k])
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    arrays["probs"] = torch.softmax(torch.from_numpy(arrays["logits"]).float(), 1).numpy()
    return arrays
