"""Write a synthetic data set in the dataset contract, deterministically for a seed."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from model.schema import (
    IMAGES_DIR,
    LABELS_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    NOTES_FILE,
    PROCESS_LOGS_FILE,
)
from model.synthetic.images import render_die
from model.synthetic.notes import write_note
from model.synthetic.plan import SplitSizes, plan_dies
from model.synthetic.process import TEMPERATURE_ZONES, draw_process_logs
from model.synthetic.world import WORLD_FILE, Look, Wording, World

TRUTH_FILE = "synth_truth.csv"  # hidden causes, beside the splits, for audits only


@dataclass(frozen=True)
class Drift:
    """A production change to simulate: process shifts, new note words, a light change."""

    process_shift: dict[str, float] = field(default_factory=dict)
    note_words: tuple[str, ...] = ()
    illumination: float = 1.0


DRIFTS = {
    "none": Drift(),
    "recipe": Drift(process_shift=dict.fromkeys(TEMPERATURE_ZONES, 1.5) | {"etch_duration": -1.0}),
    "notes": Drift(note_words=("recipe B qualified", "new MES form", "ALD tool swap", "lot split")),
    "illumination": Drift(illumination=0.8),
}


def generate_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    val_n: int | None = None,
    test_n: int | None = None,
    drift: str = "none",
    workers: int | None = None,
    world: World | None = None,
) -> pd.DataFrame:
    """Generate `n` dies split by lot into train/val/test under `out_dir`.

    Args:
        out_dir: target folder (created; existing files of the same names are replaced).
        n: dies in all splits together.
        seed: the whole data set is a function of this seed (and the sizes).
        val_n, test_n: split sizes (default 20% each); train gets the rest.
        drift: a preset of DRIFTS applied to every die.
        workers: image-rendering processes (default: all cores).
        world: the fab to simulate (model.synthetic.world; default: the demo fab). A given
            world is written beside the splits as synth_world.json.
    Returns:
        The plan: one row per die with its split, label and hidden causes.
    """
    if drift not in DRIFTS:
        raise ValueError(f"unknown drift preset {drift!r}; choose from {sorted(DRIFTS)}")
    preset = DRIFTS[drift]
    out = Path(out_dir)
    fab = world or World()
    plan = plan_dies(SplitSizes.from_total(n, val_n, test_n), seed)
    values, causes = draw_process_logs(plan, seed + 1, preset.process_shift, fab)
    plan["process_cause"] = causes
    notes = _draw_notes(plan, preset, fab.wording)
    for split, idx in plan.groupby("split").groups.items():
        _write_tables(out / split, plan.loc[idx], values.loc[idx], notes.loc[idx])
    _render_all(out, plan, preset.illumination, workers or os.cpu_count() or 1, fab.look)
    if world is not None:
        world.save(out / WORLD_FILE)
    plan.drop(columns=[c for c in plan.columns if c in METADATA_COLUMNS[1:]]).to_csv(
        out / TRUTH_FILE, index=False
    )
    return plan


def _draw_notes(plan: pd.DataFrame, preset: Drift, wording: Wording) -> pd.Series:
    texts = []
    for row in plan.itertuples():
        rng = np.random.default_rng([row.die_seed, 1])
        words = list(preset.note_words)
        has = row.has_note
        texts.append(write_note(row.label, row.process_cause, rng, words, wording) if has else "")
    return pd.Series(texts, index=plan.index)


def _write_tables(split_dir: Path, plan: pd.DataFrame, values: pd.DataFrame, notes: pd.Series):
    (split_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    values.to_csv(split_dir / PROCESS_LOGS_FILE, index=False)
    plan[["die_id", "label"]].to_csv(split_dir / LABELS_FILE, index=False)
    plan[list(METADATA_COLUMNS)].to_csv(split_dir / METADATA_FILE, index=False)
    present = {d: t for d, t in zip(plan["die_id"], notes) if t}
    (split_dir / NOTES_FILE).write_text(json.dumps(present, indent=0, sort_keys=True))


def _render_all(out: Path, plan: pd.DataFrame, illumination: float, workers: int, look: Look):
    cols = [
        "die_id",
        "split",
        "fab",
        "label",
        "wafer_zone",
        "die_x",
        "die_y",
        "faint",
        "discoloration",
        "die_seed",
    ]
    records = plan[cols].to_dict("records")
    chunks = [records[i : i + 256] for i in range(0, len(records), 256)]
    jobs = [(str(out), chunk, illumination, look) for chunk in chunks]
    if workers <= 1 or len(chunks) == 1:
        for job in jobs:
            _render_chunk(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_render_chunk, jobs))


def _render_chunk(job: tuple[str, list[dict], float, Look]) -> None:
    out, records, illumination, look = job
    for row in records:
        pixels = render_die(row, illumination, look=look)
        path = Path(out) / row["split"] / IMAGES_DIR / f"{row['die_id']}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
