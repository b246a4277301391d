"""Shared fixtures: one small synthetic data set per session, and throw-away split copies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from model.config import load_config
from model.prepare import prepare
from model.schema import IMAGES_DIR, NOTES_FILE
from model.synthetic.generate import generate_dataset
from model.train import train_model


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 600-die synthetic data set (train/val/test + synth_truth.csv), generated once.

    Read-only for tests: copy a split with `copy_split` before changing anything.
    """
    out = tmp_path_factory.mktemp("tiny_data")
    generate_dataset(out, n=600, seed=0, workers=2)
    return out


@pytest.fixture(scope="session")
def smoke_prepared(tiny_data, tmp_path_factory):
    """The smoke config over `tiny_data` and its prepared splits (read-only: deepcopy the
    config before changing it)."""
    out = tmp_path_factory.mktemp("smoke")
    cfg = load_config(
        "configs/smoke.yaml",
        [f"data_dir={tiny_data}", f"out_dir={out}", f"data.cache_dir={out / 'cache'}"],
    )
    return cfg, prepare(cfg, out / "prepared")


@pytest.fixture(scope="session")
def smoke_multimodal(smoke_prepared, tmp_path_factory):
    """A smoke multimodal model trained once per session; its model.pt is in `.folder`."""
    cfg, data = smoke_prepared
    return train_model("multimodal", data, cfg, tmp_path_factory.mktemp("mm"), progress=False)


@pytest.fixture
def copy_split(tiny_data, tmp_path) -> Callable[..., Path]:
    """Copy one split of `tiny_data` into tmp_path and return the copy's folder.

    `copy_split(split="val", n=12)` keeps the first `n` dies (by sorted id) of every table,
    the notes and the images, so corruption tests stay fast; `n=None` copies everything.
    """

    def copy(split: str = "val", n: int | None = 12) -> Path:
        src, dst = tiny_data / split, tmp_path / split
        if n is None:
            shutil.copytree(src, dst)
            return dst
        (dst / IMAGES_DIR).mkdir(parents=True)
        keep = sorted(p.stem for p in (src / IMAGES_DIR).iterdir())[:n]
        for table in src.glob("*.csv"):
            rows = pd.read_csv(table, dtype={"die_id": str})
            rows[rows["die_id"].isin(keep)].to_csv(dst / table.name, index=False)
        notes = json.loads((src / NOTES_FILE).read_text())
        kept = {k: v for k, v in notes.items() if k in keep}
        (dst / NOTES_FILE).write_text(json.dumps(kept, indent=0, sort_keys=True))
        for die in keep:
            shutil.copy2(src / IMAGES_DIR / f"{die}.png", dst / IMAGES_DIR / f"{die}.png")
        return dst

    return copy
