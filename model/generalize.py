"""Held-out evaluation: train once on one data set, judge the model on data sets it never saw.

Each held-out set's test split is encoded with the training run's own z-score statistics and
tokenizer, scored at the operating point fixed on the training set's validation split, with
and without the operator notes, and judged by the release gates' escape and FPR limits. The
per-class catch rates are given at the operating point and at the threshold that flags 15%
of the good dies, so a miss can be told from a badly placed threshold; each also counts the
caught dies given their own class, so a misnamed defect can be told from a missed one. A
model that compares each die with its fab's golden die is given the held-out fabs' own
golden dies, fitted from their good train dies as onboarding a new layout does; its weights
stay as trained.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from model.config import RunConfig
from model.contract import read_split
from model.data import load_split
from model.metrics import decide, summarize
from model.predict import predict_once
from model.prepare import encode_split, prepare
from model.schema import CLASS_NAMES, GOOD
from model.train import train_model

REFERENCE_FPR = 0.15  # the second threshold: the one that flags this share of the good dies


def generalize(
    cfg: RunConfig, train_data: str | Path, eval_data: list[str | Path], kind: str = "multimodal"
) -> dict:
    """Train `kind` on `train_data`, then score it on the test split of each `eval_data` set.

    Returns:
        {"train_data", "kind", "best_epoch", "threshold", "sets": {path: figures}}, also
        written to <out_dir>/<name>/generalize.json.
    """
    cfg.data_dir = str(train_data)
    run = Path(cfg.out_dir) / cfg.name
    data = prepare(cfg, run / "prepared")
    result = train_model(kind, data, cfg, run / kind, progress=False)
    threshold = result.operating_point.threshold
    sets = {}
    for folder in eval_data:
        part = load_split(folder, "test", cfg.model.img_size, cfg.data.cache_dir, data.scaler)
        dataset = encode_split(part, data.tokenizer, cfg.model.max_note_len)
        model = with_golden_dies_of(result.model, folder, cfg, data.scaler)
        sets[str(folder)] = held_out_figures(model, dataset, threshold, cfg)
    report = {
        "train_data": str(train_data),
        "kind": kind,
        "best_epoch": result.best_epoch,
        "threshold": threshold,
        "sets": sets,
    }
    (run / "generalize.json").write_text(json.dumps(report, indent=2))
    return report


def with_golden_dies_of(model, folder: str | Path, cfg: RunConfig, scaler):
    """A copy of `model` whose golden dies are fitted from the good dies of `folder`'s train
    split; `model` itself when it compares with no golden die."""
    if getattr(getattr(model, "image_encoder", None), "reference", None) is None:
        return model
    part = load_split(folder, "train", cfg.model.img_size, cfg.data.cache_dir, scaler)
    tested = set(read_split(Path(folder) / "test").metadata["fab"])
    fitted_fabs = set(part.metadata["fab"][np.asarray(part.labels) == GOOD])
    if tested - fitted_fabs:
        raise ValueError(f"{folder}: no good train dies to fit the golden die of fab(s) "
                         f"{sorted(tested - fitted_fabs)}, which its test split holds")  # fmt: skip
    fitted = copy.deepcopy(model)
    fitted.fit_reference(part.images, part.metadata["fab"].to_numpy(), part.labels)
    return fitted


def held_out_figures(model, dataset, threshold: float, cfg: RunConfig) -> dict:
    """Figures, gate verdict and catch rates of one model on one held-out test split."""
    pred = predict_once(model, dataset)
    labels, probs = pred["labels"], pred["probs"]
    figures = summarize(labels, probs, threshold)
    no_notes = probs
    if model.reads_notes:
        no_notes = predict_once(model, dataset, with_notes=False)["probs"]
    reference = reference_threshold(labels, probs, REFERENCE_FPR)
    return {
        "test": figures,
        "test_no_notes": summarize(labels, no_notes, threshold),
        "gates_passed": bool(
            figures["escape"]["rate"] < cfg.gates.max_escape
            and figures["fpr"]["rate"] < cfg.gates.max_fpr
        ),
        "catch_at_operating_point": catch_rates(labels, probs, threshold),
        "reference_threshold": reference,
        "catch_at_reference_fpr": catch_rates(labels, probs, reference),
    }


def reference_threshold(labels: np.ndarray, probs: np.ndarray, fpr: float) -> float:
    """The lowest defect-probability threshold that flags at most `fpr` of the good dies."""
    good = np.sort(1.0 - probs[labels == GOOD, GOOD])
    if good.size == 0:
        raise ValueError("no good dies to set a false-positive rate on")
    allowed = int(np.floor(fpr * good.size))  # good dies that may be flagged
    if allowed >= good.size:
        return 0.0
    return float(np.nextafter(good[good.size - 1 - allowed], np.inf))


def catch_rates(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Each defect class's dies flagged (as any defect) at `threshold`, and how many of those
    were given their own class (a defect caught but misnamed costs macro F1, not escape)."""
    called = decide(probs, threshold)
    rates = {}
    for c in range(1, len(CLASS_NAMES)):
        mine = called[labels == c]
        rates[CLASS_NAMES[c]] = {
            "caught": int((mine != GOOD).sum()),
            "own_class": int((mine == c).sum()),
            "n": int(mine.size),
        }
    return rates


def format_report(report: dict) -> str:
    """One block per held-out set: gate verdict, figures, no-notes figures, catch rates."""
    lines = [f"trained on {report['train_data']} ({report['kind']}, best epoch "
             f"{report['best_epoch']}, threshold {report['threshold']:.4f})"]  # fmt: skip
    for folder, s in report["sets"].items():
        t, n = s["test"], s["test_no_notes"]
        lines += [
            f"{folder}: gates {'PASS' if s['gates_passed'] else 'FAIL'}",
            f"  escape {_rate(t['escape'])} (95% upper {t['escape']['hi']:.2%})  FPR "
            f"{_rate(t['fpr'])}  macro F1 {t['macro_f1']:.3f}",
            f"  notes removed: escape {_rate(n['escape'])}  FPR {_rate(n['fpr'])}",
            "  caught at the operating point: " + _catches(s["catch_at_operating_point"]),
            f"  caught at {REFERENCE_FPR:.0%} FPR: " + _catches(s["catch_at_reference_fpr"]),
        ]
    return "\n".join(lines)


def _rate(r: dict) -> str:
    return f"{r['rate']:.2%} ({r['k']}/{r['n']})"


def _catches(rates: dict) -> str:
    return "  ".join(
        f"{name} {c['caught']}/{c['n']} ({c['own_class']} as such)" for name, c in rates.items()
    )
