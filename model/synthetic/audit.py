"""The signal audit: proof that a synthetic data set is neither too easy nor too hard.

Three findings are measured on a generated data set:
1. image statistics alone cannot tell class-4 discoloration from cosmetic discoloration on
   good dies (cross-validated AUC near 0.5), while adding the process log separates them;
2. every defect class leaves a visible signature in the image, except the designed
   invisible share of class 4 (each die is rendered again without its defect, and the
   pixels that change beyond the noise floor are counted);
3. for reference, how far simple image statistics get on each class against good dies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from model.schema import CLASS_NAMES, METADATA_FILE, PROCESS_LOGS_FILE, parameter_names
from model.synthetic.generate import TRUTH_FILE
from model.synthetic.images import render_die
from model.synthetic.world import WORLD_FILE, Look, World

SIGNATURE_LEVEL = 12  # grey levels: about three times the strongest sensor noise
SIGNATURE_PIXELS = 8  # changed pixels for a defect to count as visible


def signal_audit(data_dir: str | Path, max_per_class: int = 60, seed: int = 0) -> dict:
    """Measure the three findings on the data set at `data_dir` (needs its truth file).

    Returns:
        A dict of numbers: AUCs of the discoloration test, per-class visibility and
        per-class image-statistics AUC.
    """
    root = Path(data_dir)
    dies = _load(root)
    features = np.stack([image_statistics(_image(root, d)) for d in dies.itertuples()])
    z = dies[list(parameter_names())].to_numpy(np.float64)
    top = -np.sort(-np.abs(z), axis=1)[:, :3]  # the three largest deviations, any parameter
    process = np.hstack([z, top])
    return {
        "discoloration": _discoloration_test(dies, features, process, seed),
        "visibility": _visibility(dies, max_per_class, seed, _look(root)),
        "image_statistics_auc": _per_class_auc(dies, features, seed),
    }


def image_statistics(pixels: np.ndarray) -> np.ndarray:
    """Simple global and regional statistics of one image: colour, contrast, extremes."""
    x = pixels.astype(np.float32) / 255.0
    grey = x.mean(axis=2)
    chroma = x / (x.sum(axis=2, keepdims=True) + 1e-6)
    cells = chroma.reshape(4, 64, 4, 64, 3).mean(axis=(1, 3)).reshape(16, 3)
    grey_cells = grey.reshape(8, 32, 8, 32).std(axis=(1, 3)).ravel()
    q = np.quantile(grey, [0.001, 0.01, 0.5, 0.99, 0.999])
    return np.concatenate(
        [
            x.mean(axis=(0, 1)),
            x.std(axis=(0, 1)),
            cells.max(axis=0) - cells.min(axis=0),
            cells.std(axis=0),
            q,
            [q[4] - q[3], q[1] - q[0], grey_cells.max(), grey_cells.min(), grey_cells.std()],
        ]
    )


def _load(root: Path) -> pd.DataFrame:
    truth = pd.read_csv(root / TRUTH_FILE)
    parts = []
    for split in sorted(truth["split"].unique()):
        meta = pd.read_csv(root / split / METADATA_FILE)
        logs = pd.read_csv(root / split / PROCESS_LOGS_FILE)
        parts.append(meta.merge(logs, on="die_id"))
    dies = truth.merge(pd.concat(parts), on="die_id")
    names = list(parameter_names())
    z = dies[names]
    dies[names] = ((z - z.mean()) / z.std()).fillna(0.0)
    return dies.reset_index(drop=True)


def _image(root: Path, die) -> np.ndarray:
    return np.asarray(Image.open(root / die.split / "images" / f"{die.die_id}.png").convert("RGB"))


def _cv_auc(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    folds = min(5, int(min(y.sum(), (1 - y).sum())))
    if folds < 2:
        return float("nan")
    model = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.08, random_state=seed)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


def _discoloration_test(dies, features, process, seed) -> dict:
    """Class 4 with discoloration against cosmetically discoloured good dies."""
    sel = (dies["discoloration"] & dies["label"].isin([0, 4])).to_numpy()
    y = (dies.loc[sel, "label"] == 4).to_numpy(int)
    return {
        "n_class4": int(y.sum()),
        "n_cosmetic_good": int((1 - y).sum()),
        "auc_image_only": _cv_auc(features[sel], y, seed),
        "auc_image_and_process": _cv_auc(np.hstack([features[sel], process[sel]]), y, seed),
    }


def _look(root: Path) -> Look:
    """The looks the set was rendered with: its drawn world's, else the demo fab's."""
    path = root / WORLD_FILE
    return World.load(path).look if path.is_file() else Look()


def _visibility(dies: pd.DataFrame, max_per_class: int, seed: int, look: Look) -> dict:
    out = {}
    for label in range(1, len(CLASS_NAMES)):
        rows = dies[dies["label"] == label]
        rows = rows.sample(min(len(rows), max_per_class), random_state=seed)
        changed = [_changed_pixels(r, look) for r in rows.to_dict("records")]
        out[CLASS_NAMES[label]] = {
            "n": len(changed),
            "visible_share": float(np.mean([c >= SIGNATURE_PIXELS for c in changed]))
            if changed
            else float("nan"),
            "median_changed_pixels": float(np.median(changed)) if changed else float("nan"),
        }
    return out


def _changed_pixels(row: dict, look: Look) -> int:
    with_defect = render_die(row, look=look).astype(np.int16)
    without = render_die(row, with_defect=False, look=look).astype(np.int16)
    return int((np.abs(with_defect - without).max(axis=2) > SIGNATURE_LEVEL).sum())


def _per_class_auc(dies: pd.DataFrame, features: np.ndarray, seed: int) -> dict:
    out = {}
    for label in range(1, len(CLASS_NAMES)):
        sel = dies["label"].isin([0, label]).to_numpy()
        y = (dies.loc[sel, "label"] == label).to_numpy(int)
        out[CLASS_NAMES[label]] = _cv_auc(features[sel], y, seed)
    return out


def format_audit(result: dict) -> str:
    """The audit as a short human-readable text."""
    d = result["discoloration"]
    lines = [
        "Signal audit",
        f"  class 4 vs cosmetic discoloration ({d['n_class4']} vs {d['n_cosmetic_good']} dies):",
        f"    image statistics only  AUC {d['auc_image_only']:.3f}  (0.5: no better than chance)",
        f"    image + process log    AUC {d['auc_image_and_process']:.3f}",
        "  visible signature per class (die rendered again without its defect):",
    ]
    for name, v in result["visibility"].items():
        lines.append(
            f"    {name:18s} visible {v['visible_share']:6.1%}  "
            f"median changed pixels {v['median_changed_pixels']:7.0f}  (n={v['n']})"
        )
    lines.append("  simple image statistics, class vs good (AUC):")
    for name, auc in result["image_statistics_auc"].items():
        lines.append(f"    {name:18s} {auc:.3f}")
    return "\n".join(lines)
