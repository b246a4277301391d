"""Fairness audit: escape rate and false-positive rate across manufacturing conditions.

Subgroups are fab, chamber, shift, wafer zone, note presence and season (from the
timestamp's month). Each group gets its rates with 95% Clopper-Pearson intervals; each
dimension gets its largest gap, flagged when the two groups' intervals do not overlap; the
recommendations follow from those numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from model.evaluate import Evaluation
from model.metrics import escape_rate, false_positive_rate
from model.schema import FABS, GOOD, SHIFTS, WAFER_ZONES

SEASONS = ("winter", "spring", "summer", "autumn")
SEASON_OF_MONTH = {12: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 2, 9: 3, 10: 3, 11: 3}
DIMENSIONS = ("fab", "chamber", "shift", "wafer_zone", "note", "season")
ORDER = {
    "fab": FABS,
    "shift": SHIFTS,
    "wafer_zone": WAFER_ZONES,
    "note": ("present", "absent"),
    "season": SEASONS,
}
MIN_DIES = 30  # fewer defective (or good) dies than this: the rate is not judged
ESCAPE_TARGET = 0.01
MITIGATION = {
    "fab": "oversample {g} dies in training, check its tool offsets, and track it apart",
    "chamber": "oversample {g} dies in training, requalify the chamber's sensors, track it apart",
    "shift": "check note coverage and quality on the {g} shift and train with more note dropout",
    "wafer_zone": "oversample {g} dies in training and review the attention maps there",
    "note": "train with more note dropout so the path for {g} notes stays strong",
    "season": "train on data covering every season and watch humidity-driven drift ({g})",
}


def season_of(timestamps) -> np.ndarray:
    """Season name per timestamp (winter DJF, spring MAM, summer JJA, autumn SON)."""
    months = pd.to_datetime(pd.Series(list(timestamps)), errors="coerce", utc=True).dt.month
    return np.array([SEASONS[SEASON_OF_MONTH[int(m)]] if m == m else "unknown" for m in months])


def subgroups(evaluation: Evaluation, metadata: pd.DataFrame) -> pd.DataFrame:
    """One column per audited dimension, one row per die (in evaluation order)."""
    meta = metadata.set_index("die_id") if "die_id" in metadata.columns else metadata
    meta = meta.reindex(evaluation.ids)
    frame = pd.DataFrame(index=pd.Index(evaluation.ids, name="die_id"))
    for dim in ("fab", "chamber", "shift", "wafer_zone"):
        if dim in meta.columns:
            frame[dim] = meta[dim].astype("string").fillna("unknown").to_numpy()
    frame["note"] = np.where(evaluation.has_note, "present", "absent")
    if "timestamp" in meta.columns:
        frame["season"] = season_of(meta["timestamp"])
    return frame


def group_stats(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Counts, escape rate and FPR (each with its 95% interval) of one group of dies."""
    return {
        "n": int(len(y_true)),
        "n_defective": int((y_true != GOOD).sum()),
        "n_good": int((y_true == GOOD).sum()),
        "escape": escape_rate(y_true, y_pred),
        "fpr": false_positive_rate(y_true, y_pred),
    }


def fairness_audit(evaluation: Evaluation, metadata: pd.DataFrame, min_dies: int = MIN_DIES):
    """Per-subgroup escape rate and FPR, the largest gaps and what to do about them.

    Args:
        evaluation: the split's Evaluation (labels, decisions, note presence).
        metadata: the split's metadata, indexed by die_id (or with a die_id column).
        min_dies: defective (good) dies a group needs for its escape rate (FPR) to be judged.
    Returns:
        {"overall", "min_dies", "dimensions": {dim: {"groups", "escape_gap", "fpr_gap"}},
        "recommendations": [str]}.
    """
    frame = subgroups(evaluation, metadata)
    y, pred = evaluation.labels, evaluation.y_pred
    dims = {}
    for dim in (d for d in DIMENSIONS if d in frame.columns):
        values = frame[dim].to_numpy()
        groups = {g: group_stats(y[values == g], pred[values == g]) for g in _order(dim, values)}
        dims[dim] = {
            "groups": groups,
            "escape_gap": largest_gap(groups, "escape", min_dies),
            "fpr_gap": largest_gap(groups, "fpr", min_dies),
        }
    return {
        "overall": group_stats(y, pred),
        "min_dies": min_dies,
        "dimensions": dims,
        "recommendations": recommendations(dims, min_dies),
    }


def largest_gap(groups: dict, metric: str, min_dies: int = MIN_DIES) -> dict | None:
    """The groups with the highest and lowest rate of `metric` ("escape" or "fpr").

    Groups with fewer than `min_dies` dies in the rate's denominator are left out while at
    least two groups are large enough; otherwise every group with one die or more counts.
    The gap is significant when the two groups' 95% intervals do not overlap.
    """
    judged = [g for g, s in groups.items() if s[metric]["n"] >= min_dies]
    small_included = len(judged) < 2
    if small_included:
        judged = [g for g, s in groups.items() if s[metric]["n"] > 0]
    if len(judged) < 2:
        return None
    rates = {g: groups[g][metric] for g in judged}
    high = max(judged, key=lambda g: rates[g]["rate"])  # first of equals, in group order
    low = min(judged, key=lambda g: rates[g]["rate"])
    return {
        "high": high,
        "low": low,
        "high_rate": rates[high]["rate"],
        "low_rate": rates[low]["rate"],
        "gap": rates[high]["rate"] - rates[low]["rate"],
        "significant": bool(rates[low]["hi"] < rates[high]["lo"]),
        "groups_compared": judged,
        "small_groups_included": small_included,
    }


def recommendations(dims: dict, min_dies: int = MIN_DIES) -> list[str]:
    """What the audit's numbers call for, dimension by dimension."""
    out = []
    for dim, audit in dims.items():
        out += _small_groups(dim, audit["groups"], min_dies)
        out += _gap_advice(dim, audit)
        out += _above_target(dim, audit["groups"], min_dies)
    gaps = [a[k] for a in dims.values() for k in ("escape_gap", "fpr_gap")]
    if not any(g and g["significant"] for g in gaps):
        out.append(
            "no significant escape-rate or FPR gap in any audited dimension; "
            "keep monitoring the per-group rates in production"
        )
    return out


def _small_groups(dim: str, groups: dict, min_dies: int) -> list[str]:
    out = []
    for count, what, judged in (
        ("n_defective", "defective", "escape rate"),
        ("n_good", "good", "FPR"),
    ):
        small = [f"{g} (n={s[count]})" for g, s in groups.items() if s[count] < min_dies]
        if small:
            out.append(
                f"too few {what} dies to judge {judged} in {dim} {', '.join(small)}: "
                f"collect at least {min_dies} per group before drawing conclusions"
            )
    return out


def _gap_advice(dim: str, audit: dict) -> list[str]:
    out = []
    for key, name in (("escape_gap", "escape-rate"), ("fpr_gap", "FPR")):
        gap = audit[key]
        if gap and gap["significant"]:
            out.append(
                f"{name} gap between {dim} {gap['high']} ({gap['high_rate']:.2%}) and "
                f"{gap['low']} ({gap['low_rate']:.2%}) is significant (95% intervals do not "
                f"overlap): " + MITIGATION[dim].format(g=gap["high"])
            )
    return out


def _above_target(dim: str, groups: dict, min_dies: int) -> list[str]:
    above = [
        f"{g} ({s['escape']['rate']:.2%}, 95% lower bound {s['escape']['lo']:.2%})"
        for g, s in groups.items()
        if s["n_defective"] >= min_dies and s["escape"]["lo"] > ESCAPE_TARGET
    ]
    if not above:
        return []
    return [f"escape rate above the {ESCAPE_TARGET:.0%} target in {dim} {', '.join(above)}"]


def _order(dim: str, values: np.ndarray) -> list[str]:
    """Groups present in `values`: the contract's order where it has one, else sorted."""
    present = set(values.tolist())
    known = [g for g in ORDER.get(dim, ()) if g in present]
    return known + sorted(present - set(known))
