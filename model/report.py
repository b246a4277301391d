"""Train the configured kinds on one data set and report their test figures side by side."""

from __future__ import annotations

import json
from pathlib import Path

from model import distributed as ddp
from model.config import RunConfig
from model.metrics import summarize
from model.predict import pick_device, predict_once
from model.prepare import prepare
from model.remote import local_config
from model.train import TrainResult, train_model


def train_and_report(cfg: RunConfig, kinds=("baseline", "multimodal"), progress=True) -> dict:
    """Prepare the data once, train each kind, score it on test; write summary.json.

    Under torchrun every rank trains; rank 0 alone scores, prints and writes.

    Returns:
        {kind: {"test": summary, "test_no_notes": summary, "seconds": s, ...}}.
    """
    cfg = local_config(cfg)  # an s3:// data_dir: its verified local snapshot
    run = Path(cfg.out_dir) / cfg.name
    ddp.setup(pick_device(cfg.train.device))  # under torchrun: every rank trains, rank 0 reports
    data = prepare(cfg, run / "prepared")
    summary = {}
    for kind in kinds:
        result = train_model(kind, data, cfg, run / kind, progress=progress)
        if ddp.is_main():
            summary[kind] = score(result, data)
            print(format_line(kind, summary[kind]))
    if not ddp.is_main():
        return summary
    path = run / "summary.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}  # kinds trained before
    path.write_text(json.dumps(earlier | summary, indent=2))
    return summary


def score(result: TrainResult, data) -> dict:
    """Test figures of a trained model at its operating point, with and without notes."""
    threshold = result.operating_point.threshold
    out = {
        "seconds": round(result.seconds, 1),
        "best_epoch": result.best_epoch,
        "threshold": threshold,
        "val_fpr": result.operating_point.val_fpr,
    }
    for name, notes in (("test", True), ("test_no_notes", False)):
        if notes or result.model.reads_notes:  # an image-only model's figures hold without notes
            pred = predict_once(result.model, data.datasets["test"], with_notes=notes)
        out[name] = summarize(pred["labels"], pred["probs"], threshold)
    return out


def format_line(kind: str, s: dict) -> str:
    t = s["test"]
    e, f = t["escape"], t["fpr"]
    return (
        f"{kind:10s} escape {e['rate']:.2%} ({e['k']}/{e['n']}, 95% upper {e['hi']:.2%})  "
        f"FPR {f['rate']:.2%} ({f['k']}/{f['n']})  macro F1 {t['macro_f1']:.3f}  "
        f"no-notes escape {s['test_no_notes']['escape']['rate']:.2%} "
        f"FPR {s['test_no_notes']['fpr']['rate']:.2%}  trained in {s['seconds']:.0f}s"
    )
