"""Shared fixtures: one small synthetic data set per session, and throw-away split copies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from model.schema import IMAGES_DIR, NOTES_FILE
from model.synthetic.generate import generate_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 600-die synthetic data set (train/val/test + synth_truth.csv), generated once.

    Read-only for tests: copy a split with `copy_split` before changing anything.
    """
    out = tmp_path_factory.mktemp("tiny_data")
    generate_dataset(out, n=600, seed=0, workers=2)
    return out


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
