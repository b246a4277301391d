"""The image front end computed before training, so training steps start at the ViT.

The multimodal image encoder begins with parameter-free steps: the golden-die comparison at
full resolution, the shrink to encoder size and the residual peaks. On a CPU they cost more
than the learned layers behind them. `compute_front_end` runs them once per split: over the
dies as they are (validation), or over a few augmented views of each die (training; epoch
e reads view e mod n). A batch from a `FrontEndDataset` carries `front_end` in place of
`image`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from model.batches import DieDataset, die_loader
from model.data import augment_batch


class FrontEndDataset(Dataset):
    """A split's dies with each image replaced by its encoder front end (held in memory).

    With several views, `view(i)` is the dataset of view i alone; indexing reads view 0.
    """

    def __init__(self, dies: DieDataset, views: list[tuple[torch.Tensor, torch.Tensor | None]]):
        self.dies, self.views = dies, views

    def __len__(self) -> int:
        return len(self.dies)

    def view(self, i: int) -> FrontEndDataset:
        return FrontEndDataset(self.dies, [self.views[i % len(self.views)]])

    def __getitems__(self, indices: list[int]) -> dict:
        t = torch.from_numpy(np.sort(np.asarray(indices)))
        pixels, peaks = self.views[0]
        front_end = (pixels[t].float(), None if peaks is None else peaks[t].float())
        return {"front_end": front_end} | self.dies.fields(t)


@torch.no_grad()
def compute_front_end(
    encoder: nn.Module,
    dies: DieDataset,
    batch_size: int,
    device: torch.device,
    views: int = 0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    optics: float = 0.0,
) -> FrontEndDataset:
    """Run `encoder.front_end` over every die of `dies`; results stay on the CPU.

    Args:
        encoder: an ImageEncoder whose golden dies (if any) are already fitted.
        dies: the split.
        batch_size: dies per pass.
        device: where to compute.
        views: 0 for the dies as they are, else this many augmented views of each die
            (`augment_batch`, orientation kept when the encoder compares with golden dies).
        seed: the augmentations' random stream.
        dtype: storage type (float16 halves the memory of training views).
        optics: the views' optics jitter (`augment_batch`).
    """
    turns = not encoder.keeps_orientation
    out = []
    for v in range(max(1, views)):
        gen = torch.Generator(device=device).manual_seed(seed * 1000 + v)
        pixels = peaks = None
        for batch in die_loader(dies, batch_size, shuffle=False):
            images = batch["image"].to(device).float() / 255.0
            if views:
                images = augment_batch(images, gen, turns=turns, optics=optics)
            x, p = encoder.front_end(images)
            if pixels is None:
                pixels = torch.empty((len(dies), *x.shape[1:]), dtype=dtype)
                peaks = None if p is None else torch.empty((len(dies), *p.shape[1:]), dtype=dtype)
            t = batch["index"]
            pixels[t] = x.to("cpu", dtype)
            if p is not None:
                peaks[t] = p.to("cpu", dtype)
        out.append((pixels, peaks))
    return FrontEndDataset(dies, out)
