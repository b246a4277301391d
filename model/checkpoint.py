"""Saving and restoring training state (every epoch) and trained models (once, at the end)."""

from __future__ import annotations

import pickle
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.calibrate import OperatingPoint
from model.config import RunConfig, config_from_dict
from model.network import build_model


class ModelFileError(ValueError):
    """A model file is unreadable, or does not match what it claims to be."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP or torch.compile wrapper."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))


def save_checkpoint(path: Path, model, optimizer, scheduler, state: dict, average=None) -> None:
    """Write the whole training state atomically (model, its weight average, optimizer,
    schedule, RNGs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": unwrap(model).state_dict(),
        "average": average.state_dict() if average is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": state,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The training state saved at `path` when it was saved under `fingerprint`, else None."""
    if not path.exists():
        return None
    payload = torch.load(path, weights_only=False, map_location="cpu")
    return payload if payload["state"].get("fingerprint") == fingerprint else None


def restore_checkpoint(payload: dict, model, optimizer, scheduler, average=None) -> dict:
    """Restore a training state read by read_checkpoint; returns the loop state."""
    unwrap(model).load_state_dict(payload["model"])
    if average is not None:
        average.load_state_dict(payload["average"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"]["torch"])
    np.random.set_state(payload["rng"]["numpy"])
    random.setstate(payload["rng"]["python"])
    return payload["state"]


def save_trained(path: Path, model: nn.Module, kind: str, cfg: RunConfig, point: OperatingPoint):
    """The trained model with everything needed to rebuild and use it."""
    torch.save(
        {
            "kind": kind,
            "config": cfg.to_dict(),
            "operating_point": asdict(point),
            "state_dict": unwrap(model).state_dict(),
        },
        path,
    )


def load_trained(
    path: str | Path, device: str = "cpu"
) -> tuple[nn.Module, RunConfig, OperatingPoint]:
    """Rebuild a model saved by save_trained.

    Raises:
        ModelFileError: the file is missing, unreadable or not a dieguard model.
    """
    try:
        payload = torch.load(path, weights_only=False, map_location=device)
        cfg = config_from_dict(payload["config"])
        model = build_model(cfg.model, payload["kind"])
        model.load_state_dict(payload["state_dict"])
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
    ) as err:
        raise ModelFileError(f"{path} is not a usable dieguard model: {err}") from err
    model.to(device).eval()
    return model, cfg, OperatingPoint(**payload["operating_point"])
