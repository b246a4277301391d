"""What the latency benchmark feeds the models: real test dies when data is given, else
random inputs of the model's shapes with a synthetic die image and sample notes.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from model.batches import DieDataset
from model.config import RunConfig
from model.export import example_inputs
from model.onnx_runtime import onnx_inputs
from model.prepare import Prepared, prepare
from model.schema import IMAGE_SIZE, IMAGES_DIR
from model.synthetic.notes import ROUTINE
from model.tokenizer import train_note_tokenizer


@dataclass
class BenchInputs:
    """Inputs for the benchmark; `batch(b)` gives the first b dies as session inputs."""

    arrays: dict[str, np.ndarray]  # session inputs of the largest batch
    pngs: list[bytes]  # encoded 256x256 die images
    notes: list[str]  # non-empty operator notes
    tokenizer: Tokenizer
    regions: int  # K of the region map
    dataset: DieDataset | None  # real dies (None for random inputs)

    @property
    def real(self) -> bool:
        return self.dataset is not None

    def batch(self, b: int) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v[:b]) for k, v in self.arrays.items()}


def bench_inputs(
    cfg: RunConfig, data: str | Path | Prepared | None, n: int, out: Path
) -> BenchInputs:
    """Args: the model's config; a data folder, Prepared or None; the largest batch; a folder
    for prepared statistics. Returns: BenchInputs.
    """
    regions = cfg.model.num_regions
    if data is None:
        arrays = {k: v.numpy() for k, v in example_inputs(cfg, n).items()}
        notes = list(ROUTINE)
        tokenizer = train_note_tokenizer(notes, min(cfg.model.vocab_size, 200))
        return BenchInputs(arrays, [_synthetic_png()], notes, tokenizer, regions, None)
    if isinstance(data, Prepared):
        prepared, folder = data, Path(cfg.data_dir)
    else:
        cfg, folder = copy.deepcopy(cfg), Path(data)
        cfg.data_dir = str(folder)
        prepared = prepare(cfg, out / "prepared", splits=("test",))
    dataset = prepared.datasets["test"]
    arrays = onnx_inputs(dataset.__getitems__((np.arange(n) % len(dataset)).tolist()))
    notes = [note for note in prepared.splits["test"].notes if note] or list(ROUTINE)
    images = sorted((folder / "test" / IMAGES_DIR).glob("*.png"))[:4]
    pngs = [p.read_bytes() for p in images] or [_synthetic_png()]
    return BenchInputs(arrays, pngs, notes, prepared.tokenizer, regions, dataset)


def _synthetic_png(seed: int = 0) -> bytes:
    """A smooth 256x256 RGB die-like image (noise alone would be slower to decode than a die)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE
    base = 0.5 + 0.2 * np.sin(8 * np.pi * x) * np.cos(8 * np.pi * y)
    pixels = base[..., None] * np.array([0.8, 0.7, 0.9]) + rng.normal(0, 0.02, (256, 256, 3))
    buffer = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
