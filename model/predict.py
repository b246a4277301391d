"""Running a trained model over batches: probabilities and, on request, explanations."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from model.batches import DieDataset, die_loader
from model.checkpoint import unwrap
from model.network import MultimodalDefectDetector

REMEMBERED = 8  # scorings predict_once keeps: a run's test and validation splits, both models
_remembered: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
_remembered_lock = threading.Lock()


def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA when it is available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_inputs(batch: dict, device: torch.device, with_notes: bool = True) -> dict:
    """The forward() keyword arguments of a batch, on `device`, images as float [0, 1].

    A batch with a precomputed image front end (model.front_end) passes it instead of images.
    """
    note_mask = batch["note_mask"].to(device, non_blocking=True)
    if not with_notes:
        note_mask = torch.zeros_like(note_mask)
    if "front_end" in batch:
        images = None
        front_end = {"front_end": tuple(_to(t, device) for t in batch["front_end"])}
    else:
        images = batch["image"].to(device, non_blocking=True)
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images
        front_end = {}
    return front_end | {
        "images": images,
        "process_logs": batch["process"].to(device, non_blocking=True),
        "process_missing": batch["missing"].to(device, non_blocking=True),
        "note_tokens": batch["note_ids"].to(device, non_blocking=True),
        "note_mask": note_mask,
    }


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device, non_blocking=True)


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: DieDataset,
    batch_size: int = 128,
    device: torch.device | None = None,
    with_notes: bool = True,
    keep: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Softmax probabilities for every die of `dataset`, in dataset order.

    Args:
        model: a network with the forward(images, process_logs, ...) signature.
        dataset: the dies.
        batch_size: dies per forward pass.
        device: where to run (default: where the model is).
        with_notes: False scores every die as if it had no note.
        keep: aux outputs to return as well (e.g. "region_map", "fused_embedding").
    Returns:
        {"probs": (N, C), "labels": (N,), plus one (N, ...) array per kept aux output}.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[str, list] = {"probs": [], "labels": [], "index": []}
    out.update({k: [] for k in keep})
    for batch in die_loader(dataset, batch_size, shuffle=False):
        logits, aux = model(**model_inputs(batch, device, with_notes))
        out["probs"].append(torch.softmax(logits.float(), dim=1).cpu())
        out["labels"].append(batch["label"])
        out["index"].append(batch["index"])
        for k in keep:
            out[k].append(aux[k].float().cpu())
    model.train(was_training)
    order = torch.cat(out.pop("index")).argsort()
    return {k: torch.cat(v)[order].numpy() for k, v in out.items()}


def predict_once(
    model: nn.Module,
    dataset: DieDataset,
    batch_size: int = 128,
    with_notes: bool = True,
    keep: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """predict(), computed once per model weights and dies: the steps of a run that read the
    same model's test figures (training's summary, the evaluation, the INT8 reference) share
    one pass. The region map is always kept for the models that draw it.
    """
    kept = tuple(sorted(set(keep) | ({"region_map"} if draws_regions(model) else set())))
    key = _scoring_key(model, dataset, with_notes, kept)
    with _remembered_lock:
        out = _remembered.get(key)
        if out is not None:
            _remembered.move_to_end(key)
    if out is None:
        out = predict(model, dataset, batch_size, with_notes=with_notes, keep=kept)
        with _remembered_lock:
            _remembered[key] = out
            while len(_remembered) > REMEMBERED:
                _remembered.popitem(last=False)
    return {k: v.copy() for k, v in out.items() if k in ("probs", "labels", *keep)}


def draws_regions(model: nn.Module) -> bool:
    """Whether the model's forward returns a region map (the multimodal detector does)."""
    return isinstance(unwrap(model), MultimodalDefectDetector)


def _scoring_key(model: nn.Module, dataset: DieDataset, with_notes: bool, keep: tuple) -> str:
    device = next(model.parameters()).device.type
    h = hashlib.blake2b(f"{type(model).__qualname__}|{device}|{with_notes}|{keep}".encode())
    h.update(dataset.digest.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()
