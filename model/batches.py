"""Batches over the uint8 image cache: a Dataset that slices whole batches, and its loader."""

from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from model.data import DieSplit


class DieDataset(Dataset):
    """Dies of one split with their encoded notes; indexing a list returns a whole batch.

    Images stay uint8 (decoded once, in the cache) until they reach the training device.
    """

    def __init__(self, split: DieSplit, note_ids: np.ndarray, note_mask: np.ndarray):
        self.images = split.images  # (N, H, W, 3) uint8, memory map or array
        self.process = torch.from_numpy(np.nan_to_num(split.process, nan=0.0))
        self.missing = torch.from_numpy(np.isnan(split.process))
        self.note_ids = torch.from_numpy(note_ids)
        self.note_mask = torch.from_numpy(note_mask)
        labels = split.labels if split.labels is not None else np.full(len(split), -1)
        self.labels = torch.from_numpy(np.asarray(labels, np.int64))
        self._images_digest = split.digest

    @cached_property
    def digest(self) -> str:
        """A digest of everything a model reads of these dies.

        The images of the decode cache (a memory map) are named by their content digest;
        images held in memory are hashed.
        """
        h = hashlib.blake2b(digest_size=16)
        cached = isinstance(self.images, np.memmap)
        h.update(str(self.images.shape).encode())
        h.update(self._images_digest.encode() if cached else np.ascontiguousarray(self.images))
        for t in (self.process, self.missing, self.note_ids, self.note_mask, self.labels):
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.sort(np.asarray(indices))  # sorted reads are sequential in the memory map
        images = torch.from_numpy(np.ascontiguousarray(self.images[idx])).permute(0, 3, 1, 2)
        return {"image": images} | self.fields(torch.from_numpy(idx))  # (B, 3, H, W) uint8

    def fields(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything of the dies at positions `t` (sorted, int64) but their images."""
        return {
            "process": self.process[t],  # (B, 48) z-scores, 0 where missing
            "missing": self.missing[t],  # (B, 48) bool
            "note_ids": self.note_ids[t],  # (B, L) int64
            "note_mask": self.note_mask[t],  # (B, L) bool
            "label": self.labels[t],  # (B,) int64, -1 when unlabelled
            "index": t,  # (B,) position in the split
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def _keep(batch):
    return batch


def die_loader(
    dataset: DieDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    distributed: bool = False,
) -> DataLoader:
    """A DataLoader yielding batch dicts; sharded across ranks when `distributed`."""
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=_keep,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
