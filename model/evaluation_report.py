"""The evaluation report: one self-contained HTML page and `evaluation.json` with every number.

Figures are plain `matplotlib.figure.Figure` objects (Agg canvas, no pyplot state), embedded
in the page as base64 PNGs and also written to `figures/`. The JSON carries no timestamps and
keeps a fixed key order, so the same model on the same data writes the same file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from model.evaluate import Evaluation
from model.evaluation_tables import note_rows, section_bodies
from model.schema import CLASS_NAMES

SECTIONS = {
    "summary": "Summary",
    "per_class": "Per-class metrics",
    "confusion": "Confusion matrix",
    "baseline": "Vision-only baseline",
    "notes": "With and without operator notes",
    "errors": "Error analysis",
    "fairness": "Fairness audit",
    "recommendations": "Recommendations",
}
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1500px}img{max-width:100%}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{padding:2px 8px;border:1px solid #ccc}"
    ".warn{color:#a00;font-weight:bold}"
)


def write_report(
    evaluation: Evaluation,
    errors: dict,
    fairness: dict,
    out_dir,
    title: str = "dieguard evaluation",
) -> tuple[Path, Path]:
    """Write `evaluation.html`, `evaluation.json` and `figures/*.png` into `out_dir`.

    Args:
        evaluation: from evaluate_model.
        errors: from error_analysis (its "figure" goes into the page, not the JSON).
        fairness: from fairness_audit.
        out_dir: target folder (created).
        title: the page's heading.
    Returns:
        (html_path, json_path).
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    m = evaluation.metrics
    figures = {
        "confusion": plot_confusion(m),
        "notes": plot_rates(note_rows(m), "Model with and without operator notes"),
        "fairness": plot_fairness(fairness),
    }
    if m["baseline"] is not None:
        rows = [("multimodal", m["model"]), ("vision-only baseline", m["baseline"])]
        figures["baseline"] = plot_rates(rows, "Multimodal model vs vision-only baseline")
    if errors.get("figure") is not None:
        figures["errors"] = errors["figure"]
    images = {key: _png(fig, out / "figures" / f"{key}.png") for key, fig in figures.items()}
    payload = report_json(evaluation, errors, fairness, title)
    json_path, html_path = out / "evaluation.json", out / "evaluation.html"
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=False), encoding="utf-8")
    html_path.write_text(render_html(payload, images), encoding="utf-8")
    return html_path, json_path


def report_json(evaluation: Evaluation, errors: dict, fairness: dict, title: str) -> dict:
    """Every number of the report, JSON-ready (NaN as null, numpy as Python types)."""
    return jsonable(
        {
            "title": title,
            "evaluation": evaluation.metrics,
            "error_analysis": {k: v for k, v in errors.items() if k != "figure"},
            "fairness": fairness,
        }
    )


def jsonable(value):
    """`value` with numpy types as Python ones, tuples as lists and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def plot_confusion(m: dict) -> Figure:
    """Confusion heatmaps (colour: share of the true class; text: counts)."""
    panels = [("multimodal", m["model"])]
    if m["baseline"] is not None:
        panels.append(("vision-only baseline", m["baseline"]))
    fig = Figure(figsize=(6.5 * len(panels), 5.5), layout="constrained")
    for i, (name, block) in enumerate(panels):
        counts = np.array(block["confusion"])
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax = fig.add_subplot(1, len(panels), i + 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (r, c), v in np.ndenumerate(counts):
            ax.text(
                c,
                r,
                str(v),
                ha="center",
                va="center",
                color="white" if share[r, c] > 0.6 else "black",
            )
        ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=30, ha="right")
        ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name} (colour: share of true class)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def plot_rates(rows: list[tuple[str, dict]], title: str) -> Figure:
    """Escape rate and FPR per row as horizontal bars with 95% interval error bars."""
    fig = Figure(figsize=(12, 1.0 + 0.55 * len(rows)), layout="constrained")
    for i, key in enumerate(("escape", "fpr")):
        ax = fig.add_subplot(1, 2, i + 1)
        _bars(ax, [label for label, _ in rows], [block[key] for _, block in rows])
        ax.set_title("escape rate" if key == "escape" else "false-positive rate")
        if i:
            ax.set_yticklabels([])
    fig.suptitle(title)
    return fig


def plot_fairness(fairness: dict) -> Figure:
    """Escape rate and FPR per subgroup, one row of panels per dimension."""
    dims = fairness["dimensions"]
    heights = [max(len(d["groups"]), 1) for d in dims.values()] or [1]
    fig = Figure(figsize=(12, 1.2 + 0.32 * sum(heights) + 0.6 * len(heights)), layout="constrained")
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights)
    for r, (dim, audit) in enumerate(dims.items()):
        labels = [f"{g} (n={s['n']})" for g, s in audit["groups"].items()]
        for c, key in enumerate(("escape", "fpr")):
            ax = fig.add_subplot(grid[r, c])
            _bars(ax, labels, [s[key] for s in audit["groups"].values()])
            gap = audit[f"{key}_gap"]
            flag = " - significant gap" if gap and gap["significant"] else ""
            name = "escape rate" if key == "escape" else "FPR"
            ax.set_title(f"{dim}: {name}{flag}", fontsize=9, color="crimson" if flag else "black")
    fig.suptitle("Fairness audit: rates with 95% Clopper-Pearson intervals")
    return fig


def _bars(ax, labels: list[str], rates: list[dict]) -> None:
    """Horizontal bars of rates (in %) with their intervals; empty groups say so."""
    y = np.arange(len(labels))
    value = np.array([r["rate"] if r["n"] else 0.0 for r in rates]) * 100
    lo = np.array([r["lo"] if r["n"] else 0.0 for r in rates]) * 100
    hi = np.array([r["hi"] if r["n"] else 0.0 for r in rates]) * 100
    err = np.vstack([np.maximum(value - lo, 0), np.maximum(hi - value, 0)])
    ax.barh(y, value, xerr=err, color="steelblue", ecolor="black", capsize=3)
    for yi, r, v in zip(y, rates, hi):
        text = f" {r['rate']:.1%} ({r['k']}/{r['n']})" if r["n"] else " no dies"
        ax.text(v, yi, text, va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("%")
    ax.set_xlim(0, min(max(float(hi.max(initial=0)) * 1.3, 1.0), 130.0))


def _png(fig: Figure, path: Path) -> str:
    """Save the figure to `path` and return it base64-encoded."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    path.write_bytes(buffer.getvalue())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(payload: dict, images: dict[str, str]) -> str:
    """The page: one section per SECTIONS entry, tables and the embedded figures."""
    bodies = section_bodies(payload)
    parts = [f"<h1>{html.escape(payload['title'])}</h1>"]
    for key, heading in SECTIONS.items():
        img = images.get(key)
        figure = f'<img alt="{key}" src="data:image/png;base64,{img}">' if img else ""
        parts.append(f'<h2 id="{key}">{html.escape(heading)}</h2>{bodies.get(key, "")}{figure}')
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(payload['title'])}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
