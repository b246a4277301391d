"""Who the synthetic dies are: lots, wafers, positions, times, labels, and their hidden causes.

The plan is drawn from one random stream, die by die, before anything is rendered, so a
die's image, process log and note can be produced anywhere (any worker) from its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from model.schema import FABS, SPLITS

WAFER_RADIUS = 12  # dies from the centre to the edge of the wafer grid
START = datetime(2025, 12, 1, tzinfo=UTC)
SPAN_DAYS = 365
FAB_SHARE = (0.40, 0.35, 0.25)
CHAMBERS_PER_FAB = 4
# Share of each defect class among defective dies: particle, scratch, pattern, process deviation.
DEFECT_CLASS_SHARE = (0.30, 0.22, 0.22, 0.26)
ZONE_RISK = {"center": 0.7, "middle": 1.0, "edge": 1.7}  # edge dies fail more often
BENIGN_DISCOLORATION = 0.17  # share of good dies with cosmetic discoloration
CLASS4_VISIBLE = 0.6  # share of process-deviation dies that show discoloration
NOTE_MISSING = {"day": 0.33, "night": 0.50}


@dataclass(frozen=True)
class SplitSizes:
    """Dies per split; lots are never shared between splits."""

    train: int
    val: int
    test: int

    @classmethod
    def from_total(cls, n: int, val_n: int | None = None, test_n: int | None = None):
        val = round(0.2 * n) if val_n is None else val_n
        test = round(0.2 * n) if test_n is None else test_n
        if val < 0 or test < 0 or val + test >= n:
            raise ValueError(f"split sizes val={val} test={test} leave no training dies of {n}")
        return cls(train=n - val - test, val=val, test=test)


def wafer_positions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All die positions on the wafer grid with their zone names."""
    r = WAFER_RADIUS
    xs, ys = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1))
    keep = xs**2 + ys**2 <= r**2
    x, y = xs[keep], ys[keep]
    radius = np.sqrt(x**2 + y**2) / r
    zone = np.where(radius < 0.45, "center", np.where(radius < 0.8, "middle", "edge"))
    return x, y, zone


def plan_dies(sizes: SplitSizes, seed: int, defect_rate: float = 0.08) -> pd.DataFrame:
    """Draw the dies of all splits: metadata, labels and hidden causes, one row per die."""
    rng = np.random.default_rng(seed)
    px, py, pzone = wafer_positions()
    zone_risk = np.array([ZONE_RISK[z] for z in pzone])
    zone_risk = zone_risk / zone_risk.mean()
    targets = {"test": sizes.test, "val": sizes.val, "train": sizes.train}
    order = [s for s in ("test", "val", "train") if targets[s] > 0]
    rows: list[dict] = []
    lot_index = 0
    for split in order:
        filled = 0
        while filled < targets[split]:
            lot = _plan_lot(rng, lot_index, split, px, py, pzone, zone_risk, defect_rate)
            take = lot[: targets[split] - filled]  # a lot cut short never spills over
            rows.extend(take)
            filled += len(take)
            lot_index += 1
    plan = pd.DataFrame(rows)
    return _add_hidden_causes(plan, rng)


def _plan_lot(rng, lot_index, split, px, py, pzone, zone_risk, defect_rate) -> list[dict]:
    fab = FABS[rng.choice(len(FABS), p=FAB_SHARE)]
    lot_id = f"L{lot_index:04d}"
    # Lots are spread over a year in random order, so every split sees every season.
    lot_time = START + timedelta(days=float(rng.uniform(0, SPAN_DAYS)))
    rows = []
    for w in range(int(rng.integers(3, 7))):
        wafer_id = f"{fab}-{lot_id}-W{w + 1:02d}"
        chamber = f"{fab}-CH{int(rng.integers(1, CHAMBERS_PER_FAB + 1))}"
        wafer_risk = rng.lognormal(0.0, 0.5)  # some wafers are worse than others
        n_dies = int(rng.integers(8, 25))  # sampled inspection: a subset of the wafer's dies
        picks = rng.choice(len(px), size=n_dies, replace=False)
        wafer_time = lot_time + timedelta(hours=float(w * 1.5 + rng.uniform(0, 1)))
        for k, pos in enumerate(sorted(picks)):
            t = wafer_time + timedelta(seconds=float(k * 20 + rng.uniform(0, 10)))
            p_defect = min(0.9, defect_rate * zone_risk[pos] * wafer_risk / 1.13)
            defective = rng.random() < p_defect
            label = 1 + int(rng.choice(4, p=DEFECT_CLASS_SHARE)) if defective else 0
            rows.append(
                {
                    "die_id": f"{wafer_id}-D{pos:03d}",
                    "wafer_id": wafer_id,
                    "lot_id": lot_id,
                    "fab": fab,
                    "chamber": chamber,
                    "shift": "day" if 7 <= t.hour < 19 else "night",
                    "die_x": int(px[pos]),
                    "die_y": int(py[pos]),
                    "wafer_zone": str(pzone[pos]),
                    "timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "label": label,
                    "split": split,
                }
            )
    return rows


def _add_hidden_causes(plan: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Latent facts that the three modalities are rendered from (kept for audits)."""
    n = len(plan)
    label = plan["label"].to_numpy()
    good, class4 = label == 0, label == 4
    discolored = (good & (rng.random(n) < BENIGN_DISCOLORATION)) | (
        class4 & (rng.random(n) < CLASS4_VISIBLE)
    )
    plan["discoloration"] = discolored
    plan["image_visible"] = ~class4 | discolored  # class 4 without discoloration shows nothing
    plan["faint"] = (label > 0) & (label < 4) & (rng.random(n) < 0.25)
    p_missing = plan["shift"].map(NOTE_MISSING).to_numpy()
    plan["has_note"] = rng.random(n) >= p_missing
    plan["die_seed"] = rng.integers(0, 2**31 - 1, size=n)
    assert set(plan["split"]) <= set(SPLITS)
    return plan
