"""Exploratory data analysis of a data set in the dataset contract.

`explore_dataset` reads the split folders directly (labels, metadata, process logs, operator
notes and images), draws six views as PNG files, and writes a self-contained `eda.html`
(images embedded as data URIs, key numbers as tables) and an `eda.json` summary. Figures are
plain `matplotlib.figure.Figure` objects rendered by the Agg canvas, so no pyplot state is touched.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from wordcloud import WordCloud

from model.schema import (
    CLASS_NAMES,
    GOOD,
    IMAGE_SUFFIXES,
    IMAGES_DIR,
    LABELS_FILE,
    METADATA_FILE,
    NOTES_FILE,
    PROCESS_LOGS_FILE,
    SHIFTS,
    process_parameters,
)

VIEWS = {
    "class_distribution": "Class distribution",
    "sample_images": "Sample images per class",
    "parameter_boxplots": "Most discriminative process parameters",
    "note_wordclouds": "Operator notes per class",
    "missing_modality": "Missing modalities",
    "parameter_correlation": "Process parameter correlation",
}
TOP_PARAMETERS = 8
MIN_CLASS_VALUES = 5  # a class needs this many values of a parameter to be scored on it
TAIL = 2.5  # out-of-range threshold, in robust standard deviations of the good dies


def explore_dataset(
    data_dir: str | Path,
    out_dir: str | Path,
    splits=("train",),
    max_images_per_class: int = 6,
    seed: int = 0,
) -> dict:
    """Write the six EDA views, `eda.html` and `eda.json` for the given splits.

    Args:
        data_dir: folder holding one sub-folder per split.
        out_dir: target folder (created).
        splits: split folders to read and pool.
        max_images_per_class: columns of the sample-image grid.
        seed: picks the sample images and lays out the word clouds.
    Returns:
        The summary: class counts, note-missing rates, top parameters, file paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.concat([_load_split(Path(data_dir) / s) for s in splits], ignore_index=True)
    z = _z_scores(frame)
    summary = {"data_dir": str(data_dir), "splits": list(splits)} | _summarise(frame, z)
    figures = {
        "class_distribution": _plot_class_distribution(summary["class_counts"]),
        "sample_images": _plot_sample_images(frame, max_images_per_class, seed),
        "parameter_boxplots": _plot_parameter_boxplots(frame, z, summary["top_parameters"]),
        "note_wordclouds": _plot_note_wordclouds(frame, seed),
        "missing_modality": _plot_missing_modality(summary),
        "parameter_correlation": _plot_correlation(z),
    }
    files = {}
    for key, fig in figures.items():
        files[key] = str(out / f"{key}.png")
        fig.savefig(files[key], dpi=100)
    files.update(html=str(out / "eda.html"), json=str(out / "eda.json"))
    summary["files"] = files
    Path(files["html"]).write_text(_render_html(summary), encoding="utf-8")
    Path(files["json"]).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _load_split(split_dir: Path) -> pd.DataFrame:
    """One row per labelled die: label, shift, note, image path and the raw process values."""
    ids = {"die_id": str}
    labels = pd.read_csv(split_dir / LABELS_FILE, dtype=ids)
    meta = pd.read_csv(split_dir / METADATA_FILE, dtype=ids, usecols=["die_id", "shift"])
    logs = pd.read_csv(split_dir / PROCESS_LOGS_FILE, dtype=ids)
    notes_path = split_dir / NOTES_FILE
    notes = json.loads(notes_path.read_text()) if notes_path.exists() else {}
    frame = labels.merge(meta, on="die_id", how="left").merge(logs, on="die_id", how="left")
    frame["label"] = frame["label"].astype(int)
    frame["note"] = [str(notes.get(d) or "").strip() for d in frame["die_id"]]
    frame["image_dir"] = str(split_dir / IMAGES_DIR)
    return frame


def _z_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """(value - nominal) / sigma for the 48 parameters in contract order; absent columns NaN."""
    cols = {}
    for p in process_parameters():
        raw = frame[p.name] if p.name in frame else pd.Series(np.nan, index=frame.index)
        cols[p.name] = (pd.to_numeric(raw, errors="coerce") - p.nominal) / p.sigma
    return pd.DataFrame(cols, index=frame.index)


def _parameter_scores(z: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Score each parameter by how much more often a defect class leaves the good range.

    A value is out of range when it lies more than TAIL robust standard deviations from the
    median of the good dies; the score is the largest excess share of out-of-range values of a
    defect class over the good dies. It catches mean shifts and deviations of either sign.
    """
    good = z[labels == GOOD]
    spread = 1.4826 * (good - good.median()).abs().median()
    outside = (z - good.median()).abs() > TAIL * spread.where(spread > 1e-9, 1.0)
    outside = outside.where(z.notna())  # NaN cells are dropped, not counted as in range
    base = outside[labels == GOOD].mean()
    rows = []
    for name in z.columns:
        best, best_cls = 0.0, None
        for cls, cls_name in enumerate(CLASS_NAMES):
            values = outside.loc[labels == cls, name].dropna()
            if cls == GOOD or len(values) < MIN_CLASS_VALUES or np.isnan(base[name]):
                continue
            if values.mean() - base[name] > best:
                best, best_cls = float(values.mean() - base[name]), cls_name
        rows.append({"name": name, "score": best, "class": best_cls})
    return pd.DataFrame(rows).sort_values("score", ascending=False, kind="stable")


def _rate(mask: pd.Series) -> float | None:
    return float(mask.mean()) if len(mask) else None


def _summarise(frame: pd.DataFrame, z: pd.DataFrame) -> dict:
    """Class counts, note-missing rates, empty process cells and top parameters."""
    counts = frame["label"].value_counts()
    class_counts = {n: int(counts.get(i, 0)) for i, n in enumerate(CLASS_NAMES)}
    missing = frame["note"] == ""
    shifts = list(SHIFTS) + sorted(set(frame["shift"].dropna().astype(str)) - set(SHIFTS))
    empty = z.isna().mean().sort_values(ascending=False, kind="stable")
    top = _parameter_scores(z, frame["label"]).head(TOP_PARAMETERS)
    return {
        "n_dies": len(frame),
        "class_counts": class_counts,
        "class_share": {n: c / max(len(frame), 1) for n, c in class_counts.items()},
        "note_missing": {
            "overall": _rate(missing),
            "per_class": {
                n: _rate(missing[frame["label"] == i]) for i, n in enumerate(CLASS_NAMES)
            },
            "per_shift": {s: _rate(missing[frame["shift"].astype(str) == s]) for s in shifts},
        },
        "empty_cells": {
            "overall": float(z.isna().to_numpy().mean()),
            "top": {k: float(v) for k, v in empty.head(10).items()},
        },
        "top_parameters": top.to_dict("records"),
    }


def _plot_class_distribution(class_counts: dict) -> Figure:
    """Bar per class name (log scale) annotated with count and percentage."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    names, counts = list(class_counts), np.array(list(class_counts.values()))
    ax.bar(names, np.maximum(counts, 1e-3), color="tab:blue")
    ax.set_yscale("log")
    ax.set_ylim(0.8, max(counts.max(), 1) * 4)
    total = max(counts.sum(), 1)
    for i, c in enumerate(counts):
        ax.text(i, max(c, 1) * 1.1, f"{c} ({100 * c / total:.1f}%)", ha="center", va="bottom")
    ax.set_ylabel("dies (log scale)")
    ax.set_title(f"Class distribution ({counts.sum()} dies)")
    return fig


def _pick_samples(frame: pd.DataFrame, label: int, k: int, seed: int) -> list[pd.Series]:
    """Up to k rows of one class, chosen deterministically for the seed."""
    rows = frame[frame["label"] == label].sort_values("die_id")
    if len(rows) == 0 or k <= 0:
        return []
    rng = np.random.default_rng([seed, label])
    picked = np.sort(rng.choice(len(rows), size=min(k, len(rows)), replace=False))
    return [rows.iloc[i] for i in picked]


def _read_image(row: pd.Series) -> np.ndarray | None:
    for suffix in IMAGE_SUFFIXES:
        path = Path(row["image_dir"]) / f"{row['die_id']}{suffix}"
        if path.exists():
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB").resize((128, 128)))
    return None


def _plot_sample_images(frame: pd.DataFrame, k: int, seed: int) -> Figure:
    """Grid: one row per class, up to k sample dies per row."""
    cols = max(k, 1)
    fig = Figure(figsize=(1.7 * cols + 1.2, 1.8 * len(CLASS_NAMES)), layout="constrained")
    axes = fig.subplots(len(CLASS_NAMES), cols, squeeze=False)
    for label, name in enumerate(CLASS_NAMES):
        samples = _pick_samples(frame, label, k, seed)
        for j, ax in enumerate(axes[label]):
            ax.set_xticks([])
            ax.set_yticks([])
            image = _read_image(samples[j]) if j < len(samples) else None
            if image is not None:
                ax.imshow(image)
                ax.set_title(samples[j]["die_id"], fontsize=6)
            else:
                ax.axis("off" if j else "on")
                text = "missing image" if j < len(samples) else ("no dies" if j == 0 else "")
                ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
        axes[label][0].set_ylabel(name, fontsize=10)
    fig.suptitle("Sample images per class")
    return fig


def _plot_parameter_boxplots(frame: pd.DataFrame, z: pd.DataFrame, top: list[dict]) -> Figure:
    """Per-class box plots of the z-scores of the top parameters."""
    fig = Figure(figsize=(16, 8), layout="constrained")
    axes = fig.subplots(2, math.ceil(max(len(top), 1) / 2), squeeze=False).ravel()
    for ax, entry in zip(axes, top):
        present = [i for i in range(len(CLASS_NAMES)) if (frame["label"] == i).any()]
        data = [z.loc[frame["label"] == i, entry["name"]].dropna().to_numpy() for i in present]
        ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(present) + 1), [CLASS_NAMES[i] for i in present])
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.axhline(0, color="grey", lw=0.6, ls="--")
        ax.set_title(
            f"{entry['name']}\n+{100 * entry['score']:.0f}% out of range ({entry['class']})",
            fontsize=9,
        )
        ax.set_ylabel("z-score")
    for ax in axes[len(top) :]:
        ax.axis("off")
    fig.suptitle("Most discriminative process parameters (z = (value - nominal) / sigma)")
    return fig


def _plot_note_wordclouds(frame: pd.DataFrame, seed: int) -> Figure:
    """One word cloud per class; a class without notes shows 'no notes'."""
    fig = Figure(figsize=(14, 6.2), layout="constrained")
    axes = fig.subplots(2, math.ceil(len(CLASS_NAMES) / 2), squeeze=False).ravel()
    for label, (ax, name) in enumerate(zip(axes, CLASS_NAMES)):
        notes = frame.loc[(frame["label"] == label) & (frame["note"] != ""), "note"]
        ax.axis("off")
        ax.set_title(f"{name} ({len(notes)} notes)")
        try:
            cloud = WordCloud(
                width=480,
                height=260,
                background_color="white",
                random_state=seed,
                collocations=False,
            ).generate(" ".join(notes))
            ax.imshow(cloud.to_array(), interpolation="bilinear")
        except ValueError:  # no words left after stop-word removal, or no notes at all
            ax.text(0.5, 0.5, "no notes", ha="center", va="center", fontsize=16)
    for ax in axes[len(CLASS_NAMES) :]:
        ax.axis("off")
    return fig


def _bar_rates(ax, rates: dict, overall: float | None, title: str) -> None:
    names = list(rates)
    values = [np.nan if v is None else 100 * v for v in rates.values()]
    ax.bar(names, np.nan_to_num(values), color="tab:orange")
    for i, v in enumerate(values):
        ax.text(
            i,
            0 if np.isnan(v) else v,
            "n/a" if np.isnan(v) else f"{v:.0f}%",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    if overall is not None:
        ax.axhline(100 * overall, color="black", ls="--", lw=1, label="overall")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)


def _plot_missing_modality(summary: dict) -> Figure:
    """Share of dies without a note per class and shift; share of empty process cells."""
    fig = Figure(figsize=(16, 5), layout="constrained")
    ax_cls, ax_shift, ax_cells = fig.subplots(1, 3, width_ratios=[1.4, 0.8, 1.4])
    missing = summary["note_missing"]
    _bar_rates(ax_cls, missing["per_class"], missing["overall"], "dies without a note, per class")
    _bar_rates(ax_shift, missing["per_shift"], missing["overall"], "dies without a note, per shift")
    ax_cls.set_ylabel("% of dies")
    top = summary["empty_cells"]["top"]
    ax_cells.barh(list(top)[::-1], [100 * v for v in top.values()][::-1], color="tab:red")
    ax_cells.tick_params(axis="y", labelsize=8)
    ax_cells.set_xlabel("% empty cells")
    ax_cells.set_title(
        f"empty process cells (overall {100 * summary['empty_cells']['overall']:.2f}%)"
    )
    return fig


def _plot_correlation(z: pd.DataFrame) -> Figure:
    """Pearson correlation of the z-scores (pairwise NaN handling), contract order."""
    corr = z.corr(method="pearson", min_periods=3).to_numpy()
    fig = Figure(figsize=(13, 12), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    ticks = range(len(z.columns))
    ax.set_xticks(ticks, z.columns, rotation=90, fontsize=7)
    ax.set_yticks(ticks, z.columns, fontsize=7)
    steps = [p.process_step for p in process_parameters()]
    for i in range(1, len(steps)):
        if steps[i] != steps[i - 1]:
            ax.axhline(i - 0.5, color="black", lw=0.8)
            ax.axvline(i - 0.5, color="black", lw=0.8)
    fig.colorbar(image, ax=ax, shrink=0.7, label="Pearson r")
    ax.set_title("Process parameter correlation (z-scores, grouped by process step)")
    return fig


def _table(rows: list[tuple], header: tuple) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _key_tables(summary: dict) -> dict[str, str]:
    """HTML tables of the key numbers, keyed by the view they accompany."""
    nm, cells = summary["note_missing"], summary["empty_cells"]
    return {
        "class_distribution": _table(
            [(n, c, _pct(summary["class_share"][n])) for n, c in summary["class_counts"].items()],
            ("class", "dies", "share"),
        ),
        "parameter_boxplots": _table(
            [(t["name"], _pct(t["score"]), t["class"]) for t in summary["top_parameters"]],
            ("parameter", "excess share out of range", "class"),
        ),
        "missing_modality": _table(
            [("overall", _pct(nm["overall"]))]
            + [(f"class {k}", _pct(v)) for k, v in nm["per_class"].items()]
            + [(f"shift {k}", _pct(v)) for k, v in nm["per_shift"].items()]
            + [(f"empty cells: {k}", _pct(v)) for k, v in cells["top"].items()],
            ("group", "share without note / empty"),
        ),
    }


def _render_html(summary: dict) -> str:
    """A self-contained page: the six PNGs as data URIs and tables of the key numbers."""
    tables = _key_tables(summary)
    sections = []
    for key, title in VIEWS.items():
        data = base64.b64encode(Path(summary["files"][key]).read_bytes()).decode("ascii")
        sections.append(
            f"<h2>{html.escape(title)}</h2>{tables.get(key, '')}"
            f'<img alt="{key}" src="data:image/png;base64,{data}">'
        )
    style = "body{font-family:sans-serif;margin:2em}img{max-width:100%}td,th{padding:2px 8px}"
    head = f"<h1>dieguard EDA</h1><p>{html.escape(str(summary['data_dir']))} "
    head += f"splits {html.escape(', '.join(summary['splits']))}: {summary['n_dies']} dies</p>"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>dieguard EDA</title>"
        f"<style>{style}</style></head><body>{head}{''.join(sections)}</body></html>"
    )
