"""Multi-process training plumbing (torchrun + DistributedDataParallel).

A run is distributed when torchrun starts it with WORLD_SIZE above 1; otherwise every
helper here is a no-op and training is the single-process loop. Rank 0 is the main
process: it alone reads and writes the run folder, validates and calibrates; the other
ranks receive what it decides through `from_main`.

    torchrun --nproc_per_node 4 -m model.train --config configs/gpu.yaml --kind multimodal
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")
_RANK_STRIDE = 1_000_003  # seed offset between ranks (a prime, far from epoch offsets)


def setup(device: torch.device) -> torch.device:
    """Join the torchrun process group when there is one (nccl on CUDA, gloo on CPU).

    Idempotent: a second call returns the same device without re-initialising.

    Args:
        device: the configured training device ("cuda" or "cpu").
    Returns:
        This rank's device: cuda:LOCAL_RANK on CUDA under torchrun, else `device`.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def cleanup() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def is_main() -> bool:
    """True on rank 0, and in a single-process run."""
    return rank() == 0


def rank_seed(seed: int) -> int:
    """A per-rank seed (dropout, augmentation); rank 0 keeps `seed` itself."""
    return seed + _RANK_STRIDE * rank()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model in DDP when distributed, else the model itself.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts
    from rank 0's weights and fitted buffers. Unused parameters are allowed: stage 1 trains
    with the head frozen and uses the contrastive loss only.
    """
    if not is_active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers. DDP does so before each forward; BatchNorm running
    statistics then move with each rank's own last batch, so call this after the last step."""
    if is_active():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def from_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn` on rank 0 only and hand its (picklable) result to every rank.

    Keep tensors in the result on the CPU: other ranks unpickle them where they were.
    """
    if not is_active():
        return fn(*args, **kwargs)
    box = [fn(*args, **kwargs) if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over all ranks (every rank passes the same keys, in order)."""
    if not is_active() or not values:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if _nccl() else None
    x = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(x)
    return dict(zip(values, (x / world_size()).tolist(), strict=True))


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. filling a cache), the other ranks after it."""
    if is_active() and not is_main():
        dist.barrier()
    yield
    if is_active() and is_main():
        dist.barrier()


def _nccl() -> bool:
    return dist.get_backend() == "nccl"
