"""Error analysis of an evaluation: the misclassified dies, one by one and in aggregate.

Each shown die has its image with the attention map laid over it, the process parameters
that deviate most, its note, the true and predicted class and the softmax probabilities.
The aggregates say which classes are confused, whether errors follow missing notes and
whether they cluster in ranges of a process parameter.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from model.evaluate import Evaluation
from model.metrics import confusion, rate
from model.schema import CLASS_NAMES, GOOD, parameter_names

EDGES = np.array([-3.0, -2.0, 2.0, 3.0])  # z-score bin edges
BINS = ("<-3", "-3..-2", "-2..2", "2..3", ">3", "missing")
NORMAL = "-2..2"  # the bin of ordinary values, not reported as a cluster
TOP_PARAMETERS = 5
PANELS_PER_ROW = 2


def error_analysis(
    evaluation: Evaluation,
    data,
    split: str | None = None,
    num_examples: int = 20,
    min_bin_dies: int = 10,
    top_bins: int = 5,
) -> dict:
    """Examples and aggregates of the misclassified dies of one evaluated split.

    Args:
        evaluation: the split's Evaluation.
        data: the Prepared it was computed on (images, z-scores, notes).
        split: the split (default: the evaluation's).
        num_examples: dies to show, escapes first.
        min_bin_dies: a parameter bin needs this many dies to be reported.
        top_bins: how many standing-out bins to report.
    Returns:
        {"n", "n_errors", "error_rate", "examples", "confused_pairs", "notes",
        "parameter_bins", "parameter_bins_all", "figure"}; "figure" is a matplotlib Figure
        of the examples (None when nothing is misclassified).
    """
    part = data.splits[split or evaluation.split]
    if list(part.ids) != list(evaluation.ids):
        raise ValueError("the evaluation and the data hold different dies")
    y, pred = evaluation.labels, evaluation.y_pred
    wrong = pred != y
    shown = pick_examples(evaluation, num_examples)
    examples = [describe_example(evaluation, part, i) for i in shown]
    bins = parameter_bins(part.process, wrong, min_bin_dies)
    return {
        "n": int(len(y)),
        "n_errors": int(wrong.sum()),
        "error_rate": rate(int(wrong.sum()), len(y)),
        "examples": examples,
        "confused_pairs": confused_pairs(y, pred),
        "notes": errors_by_note(wrong, evaluation.has_note),
        "parameter_bins": bins["standing_out"][:top_bins],
        "parameter_bins_all": bins["all"],
        "figure": plot_examples(examples, part, evaluation.region_map) if examples else None,
    }


def pick_examples(evaluation: Evaluation, num_examples: int) -> list[int]:
    """Misclassified dies: escapes first, each group by confidence, most confident first."""
    y, pred, probs = evaluation.labels, evaluation.y_pred, evaluation.probs
    wrong = np.flatnonzero(pred != y)
    confidence = probs[wrong, pred[wrong]]
    escape = (y[wrong] != GOOD) & (pred[wrong] == GOOD)
    order = np.lexsort((wrong, -confidence, ~escape))  # last key sorts first
    return [int(i) for i in wrong[order][:num_examples]]


def describe_example(evaluation: Evaluation, part, i: int) -> dict:
    """One misclassified die as plain numbers and names."""
    y, pred = int(evaluation.labels[i]), int(evaluation.y_pred[i])
    note = part.notes[i].strip()
    return {
        "index": i,
        "die_id": part.ids[i],
        "true": CLASS_NAMES[y],
        "predicted": CLASS_NAMES[pred],
        "escape": y != GOOD and pred == GOOD,
        "confidence": float(evaluation.probs[i, pred]),
        "probabilities": {n: float(p) for n, p in zip(CLASS_NAMES, evaluation.probs[i])},
        "top_parameters": top_deviations(part.process[i]),
        "note": note or "no note",
        "has_note": bool(note),
    }


def top_deviations(z: np.ndarray, k: int = TOP_PARAMETERS) -> list[dict]:
    """The k parameters with the largest |z| (missing cells skipped), signed and named."""
    names = parameter_names()
    present = np.flatnonzero(~np.isnan(z))
    order = present[np.argsort(-np.abs(z[present]), kind="stable")][:k]
    return [{"name": names[j], "z": float(z[j])} for j in order]


def confused_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> list[dict]:
    """Off-diagonal confusion counts, most frequent first (true class, predicted class)."""
    m = confusion(y_true, y_pred)
    support = m.sum(axis=1)
    pairs = [
        {
            "true": CLASS_NAMES[t],
            "predicted": CLASS_NAMES[p],
            "count": int(m[t, p]),
            "share_of_true": float(m[t, p] / support[t]),
        }
        for t in range(len(m))
        for p in range(len(m))
        if t != p and m[t, p] > 0
    ]
    return sorted(pairs, key=lambda r: -r["count"])  # stable: ties keep class order


def errors_by_note(wrong: np.ndarray, has_note: np.ndarray) -> dict:
    """Error rate (with counts and 95% interval) of dies with and without a note."""
    with_note = rate(int(wrong[has_note].sum()), int(has_note.sum()))
    without = rate(int(wrong[~has_note].sum()), int((~has_note).sum()))
    return {
        "with_note": with_note,
        "without_note": without,
        "difference": without["rate"] - with_note["rate"],
    }


def bin_index(z: np.ndarray) -> np.ndarray:
    """Bin of each z-score in BINS order (the last bin holds the missing cells)."""
    idx = np.digitize(np.nan_to_num(z, nan=0.0), EDGES)
    return np.where(np.isnan(z), len(BINS) - 1, idx)


def parameter_bins(process: np.ndarray, wrong: np.ndarray, min_dies: int = 10) -> dict:
    """Error rate per parameter and z-score bin.

    Returns:
        {"all": every non-empty bin, in parameter and bin order; "standing_out": bins outside
        the normal range (-2..2) of at least `min_dies` dies that err more often than all dies,
        highest error rate first}.
    """
    overall = float(wrong.mean()) if len(wrong) else float("nan")
    rows = []
    for j, name in enumerate(parameter_names()):
        idx = bin_index(process[:, j])
        for b, label in enumerate(BINS):
            inside = idx == b
            if inside.any():
                r = rate(int(wrong[inside].sum()), int(inside.sum()))
                rows.append(
                    {
                        "parameter": name,
                        "bin": label,
                        **r,
                        "lift": r["rate"] / overall if overall > 0 else float("nan"),
                        "above_overall": bool(r["lo"] > overall),
                    }
                )
    standing = [
        r for r in rows if r["bin"] != NORMAL and r["n"] >= min_dies and r["rate"] > overall
    ]
    standing.sort(key=lambda r: (-r["rate"], -r["n"]))
    return {"all": rows, "standing_out": standing}


def heatmap(region_map: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """A (K,) region map as an (H, W) map scaled to [0, 1] per die (None: K not a square)."""
    side = math.isqrt(len(region_map))
    if side * side != len(region_map) or side == 0:
        return None
    grid = np.asarray(region_map, np.float32).reshape(side, side)
    spread = float(grid.max() - grid.min())
    grid = (grid - grid.min()) / spread if spread > 0 else np.zeros_like(grid)
    up = Image.fromarray(grid, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(up), 0.0, 1.0)


def plot_examples(examples: list[dict], part, region_map: np.ndarray | None) -> Figure:
    """Image with attention overlay and a text card per example, two examples a row."""
    rows = math.ceil(len(examples) / PANELS_PER_ROW)
    fig = Figure(figsize=(13, 3.3 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 2 * PANELS_PER_ROW, width_ratios=[1, 1.05] * PANELS_PER_ROW)
    for n, ex in enumerate(examples):
        r, c = divmod(n, PANELS_PER_ROW)
        ax_img, ax_txt = fig.add_subplot(grid[r, 2 * c]), fig.add_subplot(grid[r, 2 * c + 1])
        image = np.asarray(part.images[ex["index"]])
        ax_img.imshow(image, interpolation="nearest")
        heat = None if region_map is None else heatmap(region_map[ex["index"]], image.shape[:2])
        if heat is not None:
            ax_img.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        color = "crimson" if ex["escape"] else "black"
        ax_img.set_title(ex["die_id"], fontsize=9, color=color)
        ax_img.set_axis_off()
        ax_txt.set_axis_off()
        ax_txt.text(
            0,
            1,
            _card(ex),
            va="top",
            ha="left",
            fontsize=8.5,
            family="monospace",
            color=color,
            transform=ax_txt.transAxes,
        )
    fig.suptitle(
        "Misclassified dies, escapes first (red); overlay: attention over image regions, "
        "scaled per die (red high, blue low)"
    )
    return fig


def _card(ex: dict) -> str:
    """The text beside one example's image."""
    lines = [f"true {ex['true']}", f"pred {ex['predicted']}" + ("  ESCAPE" if ex["escape"] else "")]
    lines += ["softmax:"] + [f"  {n:<18s}{p:.3f}" for n, p in ex["probabilities"].items()]
    lines += ["most deviating (z):"]
    lines += [f"  {t['name']:<27s}{t['z']:+.1f}" for t in ex["top_parameters"]]
    note = textwrap.wrap(ex["note"], 40, max_lines=2, placeholder=" ...")
    return "\n".join(lines + ["note: " + (note[0] if note else "")] + note[1:])
