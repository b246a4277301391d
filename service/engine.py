"""One serving model: a bundle folder opened in ONNX Runtime, run on batches of dies.

The engine encodes dies exactly as training did (bilinear resize to the model's side, the
training z-scores with 0 and a mask where a parameter is missing, the training tokenizer)
and returns each die's Decision with the raw outputs the explanation needs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model.bundle import bundle_files, open_for_station
from model.calibrate import OperatingPoint
from model.data import ProcessScaler
from model.onnx_runtime import operating_point_path, run_session
from model.schema import CLASS_NAMES, GOOD, parameter_names
from model.tokenizer import encode_notes, load_tokenizer
from registry.bundle import MANIFEST_FILE, VERSION_FILE
from service.records import Decision, DieInput


@dataclass(frozen=True)
class DieOutput:
    """One die's verdict and the outputs behind it."""

    decision: Decision
    logits: np.ndarray  # (C,)
    region_map: np.ndarray  # (K,)
    process_attention: np.ndarray  # (K, 48)
    embedding: np.ndarray  # (D,)


class ModelEngine:
    """A loaded bundle. Thread-safe: ONNX Runtime sessions may run concurrently."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        """Open a bundle folder (ModelFileError when it is incomplete or not a model)."""
        self.folder = Path(folder)
        files = bundle_files(self.folder)
        info = _bundle_info(self.folder)
        self.session, self.runs_on = _open_variant(self.folder, info, threads)
        self.scaler = ProcessScaler.load(files["scaler"])
        self.tokenizer = load_tokenizer(files["tokenizer"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.img_size = int(inputs["image"].shape[-1])
        self.note_len = int(inputs["note_ids"].shape[-1])
        self.version = str(info.get("version", "local"))
        self.kind = str(info.get("kind") or _kind_of(self.session))
        self.model_name = str(info.get("model_name", ""))
        self.threshold = self.runs_on["threshold"]
        self._names = parameter_names()

    @property
    def label(self) -> str:
        """E.g. 'dieguard v3 (multimodal)'."""
        return f"{self.model_name or 'model'} v{self.version} ({self.kind})"

    def encode(self, dies: list[DieInput]) -> dict[str, np.ndarray]:
        """The session inputs of a batch of dies."""
        S = self.img_size
        images = np.stack([_resized(d.image, S) for d in dies]).astype(np.float32) / 255.0
        raw = np.array([[d.process.get(n, np.nan) for n in self._names] for d in dies])
        z = ((raw - self.scaler.mean) / self.scaler.std).astype(np.float32)
        missing = np.isnan(z)
        ids, mask = encode_notes(self.tokenizer, [d.note for d in dies], self.note_len)
        return {
            "image": np.ascontiguousarray(images.transpose(0, 3, 1, 2)),  # B, 3, S, S
            "process": np.where(missing, 0.0, z).astype(np.float32),
            "process_missing": missing,
            "note_ids": ids,
            "note_mask": mask,
        }

    def predict(self, dies: list[DieInput], role: str) -> list[DieOutput]:
        """Run one batch; every die gets the batch's model time as its latency."""
        arrays = self.encode(dies)
        start = time.perf_counter()
        out = run_session(self.session, arrays)
        latency_ms = (time.perf_counter() - start) * 1000.0
        probs = _softmax(out["logits"].astype(np.float64))
        return [
            DieOutput(
                decision=self._decision(p, role, latency_ms),
                logits=out["logits"][i],
                region_map=out["region_map"][i],
                process_attention=out["process_attention"][i],
                embedding=out["embedding"][i],
            )
            for i, p in enumerate(probs)
        ]

    def _decision(self, p: np.ndarray, role: str, latency_ms: float) -> Decision:
        defect_probability = float(1.0 - p[GOOD])
        flagged = defect_probability >= self.threshold
        cls = int(1 + np.argmax(p[1:])) if flagged else GOOD
        return Decision(
            role=role,
            model_version=self.version,
            model_kind=self.kind,
            defect_class=cls,
            class_name=CLASS_NAMES[cls],
            confidence=float(p[cls]) if flagged else float(p[GOOD]),
            defect_probability=defect_probability,
            flagged=bool(flagged),
            probabilities={n: float(v) for n, v in zip(CLASS_NAMES, p)},
            latency_ms=latency_ms,
        )


def _open_variant(folder: Path, info: dict, threads: int | None):
    """The bundle's variant for this machine (INT8 on a CPU, FP16 or TensorRT INT8 on a
    GPU, see model.bundle.open_for_station), with what it runs on and its threshold."""
    session, runs_on = open_for_station(folder, info.get("variants"), threads)
    point = OperatingPoint.load(operating_point_path(folder / runs_on["file"]))
    return session, runs_on | {"threshold": point.threshold}


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kind_of(session) -> str:
    """A bundle without a manifest: the vision-only baseline has a single region."""
    regions = next(o for o in session.get_outputs() if o.name == "region_map").shape[-1]
    return "baseline" if regions == 1 else "multimodal"


def _bundle_info(folder: Path) -> dict:
    """What the registry wrote beside the bundle (version, kind), else the manifest's kind."""
    info = {}
    for name in (MANIFEST_FILE, VERSION_FILE):
        path = folder / name
        if path.is_file():
            info |= {k: v for k, v in json.loads(path.read_text()).items() if v is not None}
    return info
