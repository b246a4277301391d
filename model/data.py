"""Loading dies for training and evaluation: z-scoring, the cached split, batches, augmentation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from model.cache import cached_images, split_digest
from model.contract import read_split
from model.schema import parameter_names

MAX_SHIFT = 4  # pixels of misalignment added by augmentation


@dataclass
class ProcessScaler:
    """Per-parameter z-scoring with statistics fitted on the training split."""

    mean: np.ndarray  # (48,)
    std: np.ndarray  # (48,)

    @classmethod
    def fit(cls, process: pd.DataFrame) -> ProcessScaler:
        values = process[list(parameter_names())].to_numpy(np.float64)
        std = np.nanstd(values, axis=0)
        return cls(mean=np.nanmean(values, axis=0), std=np.where(std > 0, std, 1.0))

    def transform(self, process: pd.DataFrame) -> np.ndarray:
        """z-scores as float32 (N, 48); NaN stays NaN (a missing cell)."""
        values = process[list(parameter_names())].to_numpy(np.float64)
        return ((values - self.mean) / self.std).astype(np.float32)

    def save(self, path: str | Path) -> None:
        names = parameter_names()
        payload = {n: [float(m), float(s)] for n, m, s in zip(names, self.mean, self.std)}
        Path(path).write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> ProcessScaler:
        payload = json.loads(Path(path).read_text())
        stats = np.array([payload[n] for n in parameter_names()], np.float64)
        return cls(mean=stats[:, 0], std=stats[:, 1])


@dataclass
class DieSplit:
    """One split, decoded: what training, evaluation and export read."""

    ids: list[str]
    images: np.ndarray  # uint8 (N, H, W, 3), a memory map of the cache
    process: np.ndarray  # float32 (N, 48) z-scores, NaN where missing
    notes: list[str]
    labels: np.ndarray | None  # int64 (N,)
    metadata: pd.DataFrame
    digest: str

    def __len__(self) -> int:
        return len(self.ids)


def load_split(
    data_dir: str | Path,
    split: str,
    img_size: int,
    cache_dir: str | Path,
    scaler: ProcessScaler,
    require_labels: bool = True,
) -> DieSplit:
    """Read, check and decode one split (images from the cache when present)."""
    tables = read_split(Path(data_dir) / split, require_labels=require_labels)
    digest = split_digest(tables)
    return DieSplit(
        ids=tables.ids,
        images=cached_images(tables, img_size, cache_dir, digest),
        process=scaler.transform(tables.process),
        notes=tables.notes,
        labels=tables.labels,
        metadata=tables.metadata,
        digest=digest,
    )


def train_scaler(data_dir: str | Path, cache_dir: str | Path) -> ProcessScaler:
    """The train split's z-score statistics, fitted once per train digest and saved."""
    tables = read_split(Path(data_dir) / "train")
    path = Path(cache_dir) / f"scaler-{split_digest(tables)}.json"
    if path.exists():
        return ProcessScaler.load(path)
    scaler = ProcessScaler.fit(tables.process)
    path.parent.mkdir(parents=True, exist_ok=True)
    scaler.save(path)
    return scaler


def load_multimodal_dataset(
    data_dir: str | Path,
    split: str = "train",
    img_size: int = 256,
    cache_dir: str | Path = ".cache/dieguard",
    augment: bool | None = None,
    seed: int = 0,
):
    """Load one split as tensors (the seed's contract).

    Args:
        data_dir: the data set root (train/val/test folders).
        split: 'train', 'val' or 'test'.
        img_size: image side (256 keeps the contract's full resolution).
        cache_dir: decode cache and saved z-score statistics.
        augment: apply one random augmentation pass; default True for train only.
        seed: augmentation seed.
    Returns:
        images (N, 3, H, W) float in [0, 1]; process_logs (N, 48) z-scored with the train
        statistics (NaN where a sensor dropped out); notes, a list of N strings ("" when
        absent); labels (N,) int64.
    """
    scaler = train_scaler(data_dir, cache_dir)
    part = load_split(data_dir, split, img_size, cache_dir, scaler)
    images = torch.from_numpy(np.array(part.images)).permute(0, 3, 1, 2)
    if augment is None:
        augment = split == "train"
    if augment:
        images = augment_batch(images, torch.Generator().manual_seed(seed))
    else:
        images = images.float() / 255.0
    return images, torch.from_numpy(part.process), list(part.notes), torch.from_numpy(part.labels)


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    turns: bool = True,
    optics: float = 0.0,
) -> torch.Tensor:
    """Random flips, quarter turns, small shifts and brightness/contrast jitter, batched.

    The station aligns every die, so the geometry stays on the pixel grid: the symmetries
    of a square and shifts of a few pixels (what misalignment does), no resampling.
    Runs on whichever device `images` is on (the generator must be on that device too).

    Args:
        images: (B, 3, H, W), uint8 or float in [0, 1].
        generator: random stream for reproducible augmentation.
        turns: flips and quarter turns; False keeps the layout's orientation (a model that
            compares with a golden die sees dies as the station does) and shifts by 1 px.
        optics: strength (0 to 1) of what another tool's optics change (`jitter_optics`).
    Returns:
        float (B, 3, H, W) in [0, 1].
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    B = x.shape[0]  # batch size

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, device=x.device, generator=generator)

    if turns:
        x = random_turns(x, generator)
    shift = MAX_SHIFT if turns else 1
    dy, dx = (uniform(-shift, shift + 1).floor().long() for _ in range(2))
    x = _shift(x, dy, dx)
    brightness, contrast = uniform(0.85, 1.15), uniform(0.85, 1.15)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast[:, None, None, None] + mean
    x = x * brightness[:, None, None, None]
    if optics:
        x = jitter_optics(x, optics, generator)
    return x.clamp(0.0, 1.0)


def jitter_optics(
    x: torch.Tensor, strength: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """What another inspection tool's optics do to a die (B, 3, H, W), each die its own draw:
    focus (from sharpened to blurred), a sub-pixel stage offset and sensor noise. A good die
    so changed differs from its golden die along every edge of the layout; a model that saw
    only one tool's optics takes that for a defect on the next tool."""
    B = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        u = torch.rand(B, device=x.device, generator=generator)
        return (lo + (hi - lo) * u)[:, None, None, None]

    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device) / 16.0  # ~ Gaussian, sigma 1
    kernel = (kernel[:, None] * kernel[None, :]).expand(x.shape[1], 1, 5, 5)
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=x.shape[1])
    x = x + uniform(-0.6 * strength, strength) * (blurred - x)  # < 0: an unsharp mask
    for dim in (2, 3):  # a shift of up to half a pixel along each axis, linearly interpolated
        a = uniform(-0.5 * strength, 0.5 * strength)
        x = (1 - a.abs()) * x + a.abs() * torch.where(a > 0, x.roll(1, dim), x.roll(-1, dim))
    return x + uniform(0.0, 0.02 * strength) * torch.randn(
        x.shape, device=x.device, generator=generator
    )


def shuffle_parameters(
    values: torch.Tensor, missing: torch.Tensor, share: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """For about `share` of the dies, the process parameters' identities shuffled: each chosen
    die's values and missing flags (B, P) move together under its own random permutation.

    A model trained so cannot rely on which parameter is out of range alone; it has to notice
    how far out a value is, which holds in a fab whose deviations move other parameters.
    """
    B, P = values.shape
    chosen = torch.rand(B, device=values.device, generator=generator) < share
    order = torch.rand(B, P, device=values.device, generator=generator).argsort(dim=1)
    order = torch.where(chosen[:, None], order, torch.arange(P, device=values.device))
    return values.gather(1, order), missing.gather(1, order)


def random_turns(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image (B, C, H, W) under its own random symmetry of the square (flips, turns)."""
    B = x.shape[0]  # batch size

    def coin() -> torch.Tensor:
        return (torch.rand(B, device=x.device, generator=generator) < 0.5)[:, None, None, None]

    x = torch.where(coin(), x.flip(3), x)
    x = torch.where(coin(), x.flip(2), x)
    return torch.where(coin(), x.transpose(2, 3), x)  # last: with the flips, all eight


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift each image by its own (dy, dx) whole pixels, wrapping around (B, C, H, W)."""
    B, C, H, W = x.shape
    rows = (torch.arange(H, device=x.device) - dy[:, None]) % H  # B, H
    cols = (torch.arange(W, device=x.device) - dx[:, None]) % W  # B, W
    x = x.gather(2, rows[:, None, :, None].expand(B, C, H, W))
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, W))
