"""Held-out evaluation: thresholds, catch rates, and one training judged on two data sets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from dieguard.cli import main
from model.contract import read_split
from model.data import load_split
from model.generalize import catch_rates, reference_threshold, with_golden_dies_of
from model.network import build_model
from model.schema import CLASS_NAMES, FABS, GOOD
from model.synthetic.generate import generate_dataset
from model.synthetic.world import draw_world


def _probs(defect: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Softmax rows with the given defect probability, all of it on class `cls`."""
    p = np.zeros((len(defect), len(CLASS_NAMES)))
    p[:, GOOD] = 1 - defect
    p[np.arange(len(defect)), cls] += defect
    return p


def test_the_reference_threshold_flags_at_most_that_share_of_good_dies():
    rng = np.random.default_rng(0)
    defect = rng.uniform(0, 1, 1000)
    labels = np.zeros(1000, int)
    t = reference_threshold(labels, _probs(defect, np.ones(1000, int)), 0.15)
    assert (defect >= t).sum() == 150
    assert reference_threshold(labels, _probs(defect, np.ones(1000, int)), 1.0) == 0.0
    with pytest.raises(ValueError, match="no good dies"):
        reference_threshold(np.ones(3, int), _probs(np.ones(3) * 0.5, np.ones(3, int)), 0.15)


def test_catch_rates_count_each_class_flagged_as_any_defect_and_as_its_own():
    labels = np.array([0, 1, 1, 2, 4, 4, 4])
    defect = np.array([0.9, 0.8, 0.1, 0.6, 0.7, 0.2, 0.5])
    called = np.array([3, 3, 1, 3, 4, 4, 1])  # the class each die's defect probability is on
    rates = catch_rates(labels, _probs(defect, called), 0.5)
    assert rates["particle"] == {"caught": 1, "own_class": 0, "n": 2}  # caught as a pattern
    assert rates["scratch"] == {"caught": 1, "own_class": 0, "n": 1}
    assert rates["pattern"] == {"caught": 0, "own_class": 0, "n": 0}
    assert rates["process_deviation"] == {"caught": 2, "own_class": 1, "n": 3}


def test_one_training_is_judged_on_each_held_out_set(tiny_data, tmp_path):
    other = tmp_path / "fab2"
    generate_dataset(other, n=80, val_n=10, test_n=40, seed=2, workers=1, world=draw_world(2))
    args = ["generalize", "--config", "configs/smoke.yaml", "--train-data", str(tiny_data)]
    args += ["--eval-data", str(tiny_data), "--eval-data", str(other)]
    args += [f"out_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "smoke" / "generalize.json").read_text())
    assert list(report["sets"]) == [str(tiny_data), str(other)]
    for folder, s in report["sets"].items():
        labels = read_split(f"{folder}/test").labels
        for c, name in enumerate(CLASS_NAMES[1:], start=1):
            assert s["catch_at_operating_point"][name]["n"] == int((labels == c).sum())
        t = s["test"]
        assert t["n"] == len(labels) and s["test_no_notes"]["n"] == len(labels)
        assert s["gates_passed"] == (t["escape"]["rate"] < 0.01 and t["fpr"]["rate"] < 0.15)
        assert f"{folder}: gates {'PASS' if s['gates_passed'] else 'FAIL'}" in result.output


def test_a_held_out_fab_is_judged_against_its_own_golden_dies(smoke_prepared, tmp_path):
    cfg, data = smoke_prepared
    other = tmp_path / "fab2"
    generate_dataset(other, n=200, val_n=10, test_n=10, seed=2, workers=1, world=draw_world(2))
    model = build_model(cfg.model, "multimodal")
    train = data.splits["train"]
    model.fit_reference(train.images, train.metadata["fab"].to_numpy(), train.labels)
    own = model.image_encoder.reference.templates.clone()
    moved = with_golden_dies_of(model, other, cfg, data.scaler)
    expected = build_model(cfg.model, "multimodal")
    part = load_split(other, "train", cfg.model.img_size, cfg.data.cache_dir, data.scaler)
    expected.fit_reference(part.images, part.metadata["fab"].to_numpy(), part.labels)
    tested = sorted(FABS.index(f) for f in set(read_split(other / "test").metadata["fab"]))
    assert tested
    templates = moved.image_encoder.reference.templates[tested]
    assert torch.equal(templates, expected.image_encoder.reference.templates[tested])
    assert not torch.equal(templates, own[tested])
    assert torch.equal(model.image_encoder.reference.templates, own)  # the trained model as it was
    for (name, a), b in zip(model.named_parameters(), moved.parameters()):
        assert torch.equal(a, b), name  # the learned weights travel unchanged


def test_a_held_out_fab_without_good_train_dies_is_refused(smoke_prepared, copy_split, tmp_path):
    cfg, data = smoke_prepared
    train, test = copy_split("train", n=20), copy_split("test", n=20)
    meta = pd.read_csv(train / "metadata.csv")
    meta.assign(fab="A").to_csv(train / "metadata.csv", index=False)  # no train die of fab B
    assert set(pd.read_csv(test / "metadata.csv")["fab"]) == {"B"}
    model = build_model(cfg.model, "multimodal")
    with pytest.raises(ValueError, match=r"golden die of fab\(s\) \['B'\]"):
        with_golden_dies_of(model, tmp_path, cfg, data.scaler)
