"""Evaluation figures: notes split, baseline side by side, the small-set warning, end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from model.calibrate import OperatingPoint
from model.checkpoint import save_trained
from model.config import load_config
from model.evaluate import (
    MIN_DEFECTIVE,
    SEED_ESCAPE,
    at_escape,
    evaluate_model,
    evaluation_from_predictions,
)
from model.evaluation_job import run_evaluation
from model.evaluation_report import SECTIONS
from model.metrics import decide
from model.network import build_model
from model.prepare import prepare
from model.schema import CLASS_NAMES
from model.train import train_model


def probs_for(classes, confidence: float = 0.9) -> np.ndarray:
    """Softmax rows giving each die's class `confidence`, the rest spread evenly."""
    classes = np.asarray(classes)
    probs = np.full((len(classes), 5), (1 - confidence) / 4)
    probs[np.arange(len(classes)), classes] = confidence
    return probs


def evaluation(labels, pred, has_note, pred_no_notes=None, **kw):
    n = len(labels)
    bare = None if pred_no_notes is None else probs_for(pred_no_notes)
    return evaluation_from_predictions(
        "test",
        [f"D{i}" for i in range(n)],
        np.array(labels),
        probs_for(pred),
        0.5,
        np.array(has_note),
        bare,
        **kw,
    )


def test_notes_removed_and_note_subsets_are_scored_apart():
    labels = [0, 0, 0, 0, 4, 4, 4, 4]
    note = [True, True, False, False, True, True, False, False]
    bare = [0, 0, 0, 0, 0, 0, 4, 4]  # without their notes the two noted defects escape
    notes = evaluation(labels, labels, note, bare).metrics["notes"]
    assert notes["all_dies"]["notes_present"]["escape"]["k"] == 0
    removed = notes["all_dies"]["notes_removed"]["escape"]
    assert (removed["k"], removed["n"], removed["rate"]) == (2, 4, 0.5)
    with_note = notes["dies_with_note"]
    assert with_note["notes_present"]["n"] == 4 and with_note["notes_present"]["escape"]["k"] == 0
    assert with_note["notes_removed"]["escape"]["k"] == 2
    assert with_note["notes_removed"]["escape"]["n"] == 2
    assert notes["dies_without_note"]["notes_present"]["n"] == 4
    assert "notes_removed" not in notes["dies_without_note"]


def test_headline_per_class_and_confusion_are_named_and_counted():
    labels = [0, 0, 1, 2, 3, 4]
    pred = [0, 1, 1, 2, 0, 4]
    m = evaluation(labels, pred, [True] * 6).metrics
    assert m["n"] == 6 and m["n_defective"] == 4 and m["n_good"] == 2
    assert m["model"]["accuracy"] == pytest.approx(4 / 6)
    assert list(m["model"]["per_class"]) == list(CLASS_NAMES)
    assert m["model"]["per_class"]["particle"]["precision"] == pytest.approx(0.5)
    assert m["model"]["per_class"]["pattern"]["recall"] == 0.0
    assert m["model"]["confusion"][3][0] == 1 and sum(map(sum, m["model"]["confusion"])) == 6
    assert m["model"]["escape"]["k"] == 1 and m["model"]["fpr"]["k"] == 1
    assert m["class_counts"] == {name: 2 if name == "good" else 1 for name in CLASS_NAMES}


def test_baseline_is_scored_on_the_same_dies_at_its_own_threshold():
    labels = [0, 0, 1, 1, 4, 4]
    model_pred = [0, 0, 1, 1, 4, 0]
    base_probs = probs_for([0, 1, 1, 1, 4, 4], confidence=0.6)
    base_probs[3] = [0.35, 0.6, 0.05 / 3, 0.05 / 3, 0.05 / 3]  # flagged at 0.5, not at 0.7
    ev = evaluation(
        labels, model_pred, [True] * 6, baseline_probs=base_probs, baseline_threshold=0.7
    )
    m = ev.metrics
    assert m["baseline"]["threshold"] == 0.7 and m["baseline"]["n"] == 6
    assert m["baseline"]["escape"]["k"] == 1 and m["baseline"]["fpr"]["k"] == 1
    assert ev.baseline_pred.tolist() == [0, 1, 1, 0, 4, 4]
    assert m["paired"] == {
        "escapes_model_only": 1,
        "escapes_baseline_only": 1,
        "escapes_both": 0,
        "false_positives_model_only": 0,
        "false_positives_baseline_only": 1,
        "false_positives_both": 0,
    }


def test_at_the_seeds_escape_rate_each_model_shows_the_good_dies_it_flags():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 400 + [1] * 250)
    defect = np.concatenate([rng.uniform(0.0, 0.6, 400), rng.uniform(0.3, 1.0, 250)])
    probs = np.stack([1 - defect] + [defect / 4] * 4, axis=1)
    point = at_escape(labels, probs, SEED_ESCAPE)
    assert point["escape"]["k"] <= int(SEED_ESCAPE * 250) and point["escape"]["k"] >= 6
    flagged = decide(probs, point["threshold"]) != 0
    assert point["fpr"]["k"] == int(flagged[:400].sum()) > 0
    assert point["false_flags"] == pytest.approx(flagged[:400].sum() / flagged.sum())
    looser = at_escape(labels, probs, 0.2)  # more misses allowed: fewer good dies flagged
    assert looser["fpr"]["k"] < point["fpr"]["k"]
    m = evaluation(labels, [0] * 650, [True] * 650, baseline_probs=probs, baseline_threshold=0.5)
    m = m.metrics
    assert m["seed_point"]["baseline"] == point and m["seed_point"]["escape"] == SEED_ESCAPE


def test_without_a_baseline_there_is_no_comparison():
    m = evaluation([0, 1], [0, 1], [True, False]).metrics
    assert m["baseline"] is None and m["paired"] is None and m["seed_point"] is None
    with pytest.raises(ValueError, match="threshold"):
        evaluation([0, 1], [0, 1], [True, False], baseline_probs=probs_for([0, 1]))
    with pytest.raises(ValueError, match="baseline_point"):
        evaluate_model(None, 0.5, None, baseline=object())


def test_fewer_than_300_defective_dies_warns_that_one_percent_cannot_be_shown():
    few = [0] * 10 + [2] * (MIN_DEFECTIVE - 1)
    warnings = evaluation(few, few, [False] * len(few)).metrics["warnings"]
    assert len(warnings) == 1 and "a sub-1% escape rate cannot be shown" in warnings[0]
    assert f"only {MIN_DEFECTIVE - 1} defective dies" in warnings[0]
    enough = [0] * 10 + [2] * MIN_DEFECTIVE
    assert evaluation(enough, enough, [False] * len(enough)).metrics["warnings"] == []


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    """A smoke model trained on tiny data and an untrained baseline, as runs/<name>/<kind>/."""
    out = tmp_path_factory.mktemp("eval_runs")
    overrides = [
        f"data_dir={tiny_data}",
        f"out_dir={out}",
        f"data.cache_dir={out / 'cache'}",
        "train.stage1_epochs=0",
        "train.stage2_epochs=1",
        "train.max_batches_per_epoch=2",
    ]
    cfg = load_config("configs/smoke.yaml", overrides)
    run = out / cfg.name
    train_model(
        "multimodal", prepare(cfg, run / "prepared"), cfg, run / "multimodal", progress=False
    )
    (run / "baseline").mkdir()
    point = OperatingPoint(0.5, 0.005, 0.0, 0.0, 0, 0)
    save_trained(
        run / "baseline" / "model.pt", build_model(cfg.model, "baseline"), "baseline", cfg, point
    )
    return run


def test_run_evaluation_writes_the_report_end_to_end(trained_run, tmp_path):
    model, base = trained_run / "multimodal" / "model.pt", trained_run / "baseline" / "model.pt"
    kw = {"baseline_path": base, "device": "cpu", "num_examples": 6}
    first = run_evaluation(model, tmp_path / "a", **kw)
    second = run_evaluation(model, tmp_path / "b", **kw)
    assert first["statistics"] == str((trained_run / "prepared").resolve())
    assert first["n"] == 120 and first["baseline"] is not None and first["warnings"]
    assert first["at_seed_escape"]["baseline"]["escape"]["rate"] <= SEED_ESCAPE
    assert "flags that are good dies" in (tmp_path / "a" / "evaluation.html").read_text()
    page = (tmp_path / "a" / "evaluation.html").read_text()
    assert all(f">{title}</h2>" in page for title in SECTIONS.values())
    assert page.count("data:image/png;base64,") >= 4
    payload = json.loads((tmp_path / "a" / "evaluation.json").read_text())
    assert set(payload) == {"title", "evaluation", "error_analysis", "fairness"}
    assert payload["evaluation"]["model"]["escape"] == first["escape"]
    a, b = (tmp_path / d / "evaluation.json" for d in "ab")
    assert a.read_bytes() == b.read_bytes()  # same model, same data: the same file
    assert second["escape"] == first["escape"]


def test_run_evaluation_refits_the_statistics_when_the_run_has_none(trained_run, tmp_path):
    alone = tmp_path / "elsewhere" / "multimodal"
    alone.mkdir(parents=True)
    shutil.copy(trained_run / "multimodal" / "model.pt", alone / "model.pt")
    summary = run_evaluation(alone / "model.pt", tmp_path / "out", device="cpu", num_examples=2)
    assert summary["statistics"].startswith("refitted on")
    assert (tmp_path / "out" / "prepared" / "scaler.json").exists()
    assert summary["baseline"] is None and summary["n"] == 120
