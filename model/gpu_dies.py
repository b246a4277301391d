"""Dies rendered with torch for the GPU check: no data set, no scipy, nothing to download.

Each die is its fab's striped layout with noise; a particle is a few bright spots, a scratch
a thin line, a pattern defect a dark block, and a process deviation leaves the image alone
and shifts a handful of process parameters. Some notes name the defect. The result is laid
out as training reads a prepared data set (uint8 images in the cache's (N, H, W, 3) format),
so the real training code runs on it unchanged.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from model.batches import DieDataset
from model.data import DieSplit
from model.schema import FABS, NUM_CLASSES

PARTICLE, SCRATCH, PATTERN, PROCESS = 1, 2, 3, 4
GOOD_SHARE = 0.6
_CHUNK = 256  # dies rendered at once (bounds the float working set)


@dataclass
class CheckData:
    """Train and val splits as model.train.train_model reads them (what Prepared offers)."""

    splits: dict[str, DieSplit]
    datasets: dict[str, DieDataset]

    @property
    def digest(self) -> str:
        joined = ",".join(f"{k}:{v.digest}" for k, v in sorted(self.splits.items()))
        return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()


def check_data(
    sizes: dict[str, int], img_size: int, note_len: int, vocab: int, device
) -> CheckData:
    """Rendered splits by name (e.g. {"train": 4000, "val": 1000}), seeded by their names."""
    splits, datasets = {}, {}
    for name, n in sizes.items():
        seed = zlib.crc32(name.encode()) % 10_000
        splits[name], datasets[name] = render_split(n, img_size, note_len, vocab, seed, device)
    return CheckData(splits, datasets)


def render_split(n: int, size: int, note_len: int, vocab: int, seed: int, device):
    """Returns: (DieSplit, DieDataset) of `n` rendered dies of side `size`."""
    g = np.random.default_rng(seed)
    labels = np.where(g.random(n) < GOOD_SHARE, 0, g.integers(1, NUM_CLASSES, n))
    fabs = g.integers(0, len(FABS), n)
    images = np.concatenate(
        [
            _render(labels[i : i + _CHUNK], fabs[i : i + _CHUNK], size, seed * 7919 + i, device)
            for i in range(0, n, _CHUNK)
        ]
    )
    process = g.standard_normal((n, 48)).astype(np.float32)
    process[labels == PROCESS, :6] += 2.5
    process[g.random((n, 48)) < 0.05] = np.nan
    note_ids, note_mask = _notes(labels, note_len, vocab, g)
    split = DieSplit(
        ids=[f"check-{seed}-{i}" for i in range(n)],
        images=images,
        process=process,
        notes=[""] * n,
        labels=labels.astype(np.int64),
        metadata=pd.DataFrame({"fab": [FABS[f] for f in fabs]}),
        digest=f"rendered-{seed}-{n}-{size}",
    )
    return split, DieDataset(split, note_ids, note_mask)


def _notes(labels: np.ndarray, note_len: int, vocab: int, g) -> tuple[np.ndarray, np.ndarray]:
    """Random word ids; half the defective dies' notes start with their class's word."""
    n = len(labels)
    lengths = g.integers(0, note_len + 1, n) * (g.random(n) < 0.7)
    mask = np.arange(note_len)[None, :] < lengths[:, None]
    ids = g.integers(NUM_CLASSES + 1, max(vocab, NUM_CLASSES + 2), (n, note_len))
    named = (labels > 0) & (lengths > 0) & (g.random(n) < 0.5)
    ids[named, 0] = labels[named]
    return (ids * mask).astype(np.int64), mask


@torch.no_grad()
def _render(labels: np.ndarray, fabs: np.ndarray, size: int, seed: int, device) -> np.ndarray:
    """uint8 (B, size, size, 3) dies, rendered on `device`."""
    g = torch.Generator(device=device).manual_seed(seed)
    B = len(labels)
    lab = torch.as_tensor(labels, device=device)[:, None, None]
    axis = torch.arange(size, device=device, dtype=torch.float32)
    yy, xx = axis[:, None].expand(size, size), axis[None, :].expand(size, size)
    period = (6.0 + 3.0 * torch.as_tensor(fabs, device=device, dtype=torch.float32))[:, None, None]
    img = 0.45 + 0.2 * torch.sin(2 * torch.pi * xx / period)
    img = img + 0.04 * torch.randn(B, size, size, generator=g, device=device)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, 1, 1, generator=g, device=device)

    cx, cy, r = uniform(0.2, 0.8) * size, uniform(0.2, 0.8) * size, uniform(0.02, 0.05) * size
    spot = ((xx - cx) ** 2 + (yy - cy) ** 2) < r**2
    img = torch.where(spot & (lab == PARTICLE), 0.95, img)
    slope = uniform(-1.0, 1.0)
    line = (yy - cy - slope * (xx - cx)).abs() < 1.0
    img = torch.where(line & (lab == SCRATCH), 0.05, img)
    block = ((xx - cx).abs() < 3 * r) & ((yy - cy).abs() < 2 * r)
    img = torch.where(block & (lab == PATTERN), 0.2, img)
    tint = torch.tensor([1.0, 0.95, 0.85], device=device)
    rgb = img[..., None] * tint
    return (rgb.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
