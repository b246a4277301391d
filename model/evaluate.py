"""Evaluation of a trained model on one split: the seven figures of the evaluation plan.

`evaluate_model` runs the model (and the vision-only baseline, when given) once over the
split, with and without the operator notes, and keeps the raw predictions in an `Evaluation`
so that error analysis, the fairness audit and the report read them without recomputing.
All rates come from `model.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from model.calibrate import choose_threshold
from model.metrics import confusion, decide, per_class, summarize
from model.predict import draws_regions, predict_once
from model.schema import CLASS_NAMES, GOOD

MIN_DEFECTIVE = 300  # rule of three: 0 escapes in 300 defective dies bound the rate at 1%
SEED_ESCAPE = 0.032  # the image-only CNN's escape rate in production today


@dataclass
class Evaluation:
    """Predictions of one model on one split, and the numbers computed from them."""

    split: str
    ids: list[str]
    labels: np.ndarray  # (N,) true classes
    probs: np.ndarray  # (N, 5) softmax, notes present
    y_pred: np.ndarray  # (N,) decisions at the threshold
    threshold: float
    has_note: np.ndarray  # (N,) bool, the die had a note the model could read
    probs_no_notes: np.ndarray | None = None  # (N, 5) every note removed
    y_pred_no_notes: np.ndarray | None = None
    baseline_probs: np.ndarray | None = None  # (N, 5) the vision-only baseline
    baseline_pred: np.ndarray | None = None
    baseline_threshold: float | None = None
    region_map: np.ndarray | None = None  # (N, K) attention over image regions
    metrics: dict = field(default_factory=dict)


def evaluate_model(
    model: nn.Module,
    point,
    data,
    split: str = "test",
    baseline: nn.Module | None = None,
    baseline_point=None,
    batch_size: int = 128,
) -> Evaluation:
    """Score a model on one split, with and without notes, beside the baseline when given.

    Args:
        model: the trained network (multimodal or baseline).
        point: its OperatingPoint (or a bare threshold).
        data: a Prepared holding `split`.
        split: which split to score.
        baseline: the vision-only model to compare with, on the same dies.
        baseline_point: the baseline's own OperatingPoint (required with `baseline`).
        batch_size: dies per forward pass.
    Returns:
        The Evaluation; its `metrics` dict holds every figure.
    """
    if baseline is not None and baseline_point is None:
        raise ValueError("a baseline needs its own operating point (baseline_point)")
    dataset = data.datasets[split]
    keep = ("region_map",) if draws_regions(model) else ()
    full = predict_once(model, dataset, batch_size, with_notes=True, keep=keep)
    bare = predict_once(model, dataset, batch_size, with_notes=False)
    base = predict_once(baseline, dataset, batch_size) if baseline is not None else None
    return evaluation_from_predictions(
        split=split,
        ids=list(data.splits[split].ids),
        labels=full["labels"],
        probs=full["probs"],
        threshold=_threshold(point),
        has_note=dataset.note_mask.numpy().any(axis=1),
        probs_no_notes=bare["probs"],
        baseline_probs=None if base is None else base["probs"],
        baseline_threshold=None if base is None else _threshold(baseline_point),
        region_map=full.get("region_map"),
    )


def evaluation_from_predictions(
    split: str,
    ids: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    has_note: np.ndarray,
    probs_no_notes: np.ndarray | None = None,
    baseline_probs: np.ndarray | None = None,
    baseline_threshold: float | None = None,
    region_map: np.ndarray | None = None,
) -> Evaluation:
    """Decide every die at the thresholds and compute the figures (no model needed).

    Args: as the Evaluation fields; `*_probs` are (N, 5) softmax outputs.
    Returns:
        The Evaluation with `metrics` filled in.
    """
    labels = np.asarray(labels, np.int64)
    ev = Evaluation(
        split,
        list(ids),
        labels,
        probs,
        decide(probs, threshold),
        float(threshold),
        np.asarray(has_note, bool),
        region_map=region_map,
    )
    if probs_no_notes is not None:
        ev.probs_no_notes, ev.y_pred_no_notes = probs_no_notes, decide(probs_no_notes, threshold)
    if baseline_probs is not None:
        if baseline_threshold is None:
            raise ValueError("baseline probabilities need the baseline's threshold")
        ev.baseline_probs, ev.baseline_threshold = baseline_probs, float(baseline_threshold)
        ev.baseline_pred = decide(baseline_probs, baseline_threshold)
    ev.metrics = compute_metrics(ev)
    return ev


def describe(y_true: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Headline figures plus per-class precision/recall/F1/support and the confusion matrix."""
    out = summarize(y_true, probs, threshold)
    y_pred = decide(probs, threshold)
    stats = per_class(y_true, y_pred)
    out["per_class"] = {
        name: {
            "precision": float(stats["precision"][i]),
            "recall": float(stats["recall"][i]),
            "f1": float(stats["f1"][i]),
            "support": int(stats["support"][i]),
        }
        for i, name in enumerate(CLASS_NAMES)
    }
    out["confusion"] = confusion(y_true, y_pred).tolist()
    return out


def compute_metrics(ev: Evaluation) -> dict:
    """Every figure of the evaluation, as plain numbers (see the module docstring)."""
    y, defective = ev.labels, ev.labels != GOOD
    metrics = {
        "split": ev.split,
        "n": int(len(y)),
        "n_defective": int(defective.sum()),
        "n_good": int((~defective).sum()),
        "n_with_note": int(ev.has_note.sum()),
        "class_counts": {n: int((y == i).sum()) for i, n in enumerate(CLASS_NAMES)},
        "threshold": ev.threshold,
        "model": describe(y, ev.probs, ev.threshold),
        "notes": notes_breakdown(ev),
        "baseline": None,
        "paired": None,
        "seed_point": None,
        "warnings": warnings_for(ev),
    }
    if ev.baseline_probs is not None:
        metrics["baseline"] = describe(y, ev.baseline_probs, ev.baseline_threshold)
        metrics["paired"] = paired_counts(y, ev.y_pred, ev.baseline_pred)
        metrics["seed_point"] = {
            "escape": SEED_ESCAPE,
            "model": at_escape(y, ev.probs, SEED_ESCAPE),
            "baseline": at_escape(y, ev.baseline_probs, SEED_ESCAPE),
        }
    return metrics


def at_escape(y_true: np.ndarray, probs: np.ndarray, escape: float) -> dict:
    """The figures at the highest threshold that lets at most `escape` of this split's
    defective dies through (a point of the split's own ROC curve, to compare models where
    they miss the same share), with the share of flagged dies that are good."""
    threshold = choose_threshold(probs, y_true, escape).threshold
    out = summarize(y_true, probs, threshold)
    escape, fpr = out["escape"], out["fpr"]
    flagged = fpr["k"] + escape["n"] - escape["k"]  # good dies flagged, defective ones caught
    out["false_flags"] = fpr["k"] / max(flagged, 1)
    return out


def notes_breakdown(ev: Evaluation) -> dict:
    """The model with notes present and removed, on all dies and on dies with/without a note."""
    t, y, note = ev.threshold, ev.labels, ev.has_note
    out = {
        "all_dies": {"notes_present": summarize(y, ev.probs, t)},
        "dies_with_note": {"notes_present": summarize(y[note], ev.probs[note], t)},
        "dies_without_note": {"notes_present": summarize(y[~note], ev.probs[~note], t)},
    }
    if ev.probs_no_notes is not None:
        bare = ev.probs_no_notes
        out["all_dies"]["notes_removed"] = summarize(y, bare, t)
        out["dies_with_note"]["notes_removed"] = summarize(y[note], bare[note], t)
    return out


def paired_counts(y_true: np.ndarray, model_pred: np.ndarray, baseline_pred: np.ndarray) -> dict:
    """Escapes and false alarms of the two models on the same dies: whose, and shared."""
    defective, good = y_true != GOOD, y_true == GOOD
    esc_m, esc_b = defective & (model_pred == GOOD), defective & (baseline_pred == GOOD)
    fp_m, fp_b = good & (model_pred != GOOD), good & (baseline_pred != GOOD)
    return {
        "escapes_model_only": int((esc_m & ~esc_b).sum()),
        "escapes_baseline_only": int((esc_b & ~esc_m).sum()),
        "escapes_both": int((esc_m & esc_b).sum()),
        "false_positives_model_only": int((fp_m & ~fp_b).sum()),
        "false_positives_baseline_only": int((fp_b & ~fp_m).sum()),
        "false_positives_both": int((fp_m & fp_b).sum()),
    }


def warnings_for(ev: Evaluation) -> list[str]:
    """What the numbers cannot show on this split."""
    n_defective = int((ev.labels != GOOD).sum())
    out = []
    if n_defective < MIN_DEFECTIVE:
        out.append(
            f"only {n_defective} defective dies in {ev.split}: a sub-1% escape rate cannot be "
            f"shown (by the rule of three that takes at least {MIN_DEFECTIVE} defective dies)"
        )
    return out


def _threshold(point) -> float:
    return float(getattr(point, "threshold", point))
