"""The signal audit on the session's tiny data set: its keys, sane numbers and its text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

import model.synthetic.audit as audit
from model.schema import CLASS_NAMES, IMAGES_DIR
from model.synthetic.generate import TRUTH_FILE

DEFECTS = CLASS_NAMES[1:]
PER_CLASS = 4


def _light_classifier(**kwargs):
    """The audit's classifier with fewer boosting rounds: the numbers stay meaningful."""
    return HistGradientBoostingClassifier(**{**kwargs, "max_iter": 10})


@pytest.fixture(scope="module")
def result(tiny_data):
    with pytest.MonkeyPatch.context() as mp, threadpool_limits(1):
        mp.setattr(audit, "HistGradientBoostingClassifier", _light_classifier)
        return audit.signal_audit(tiny_data, max_per_class=PER_CLASS, seed=0)


@pytest.fixture(scope="module")
def truth(tiny_data) -> pd.DataFrame:
    return pd.read_csv(tiny_data / TRUTH_FILE)


def _auc_ok(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def test_keys(result):
    assert set(result) == {"discoloration", "visibility", "image_statistics_auc"}
    assert set(result["discoloration"]) == {
        "n_class4",
        "n_cosmetic_good",
        "auc_image_only",
        "auc_image_and_process",
    }
    assert list(result["visibility"]) == list(DEFECTS)
    assert list(result["image_statistics_auc"]) == list(DEFECTS)
    for v in result["visibility"].values():
        assert set(v) == {"n", "visible_share", "median_changed_pixels"}


def test_discoloration_counts_and_aucs(result, truth):
    d = result["discoloration"]
    discolored = truth[truth["discoloration"]]
    assert d["n_class4"] == int((discolored["label"] == 4).sum())
    assert d["n_cosmetic_good"] == int((discolored["label"] == 0).sum())
    assert d["n_cosmetic_good"] > 50
    assert d["n_class4"] >= 2  # enough for a (weak) cross-validated AUC on tiny data
    assert _auc_ok(d["auc_image_only"])
    assert _auc_ok(d["auc_image_and_process"])


def test_visibility(result, truth):
    for label, name in enumerate(DEFECTS, start=1):
        v = result["visibility"][name]
        count = int((truth["label"] == label).sum())
        assert v["n"] == min(count, PER_CLASS)
        if v["n"]:
            assert 0.0 <= v["visible_share"] <= 1.0
            assert v["median_changed_pixels"] >= 0
        else:
            assert math.isnan(v["visible_share"])
    for name in ("particle", "scratch", "pattern"):  # always drawn into the image
        assert result["visibility"][name]["visible_share"] >= 0.75


def test_per_class_image_statistics_auc(result, truth):
    for label, name in enumerate(DEFECTS, start=1):
        auc = result["image_statistics_auc"][name]
        if (truth["label"] == label).sum() >= 2:
            assert _auc_ok(auc), name
        else:
            assert math.isnan(auc)


def test_image_statistics(tiny_data):
    png = sorted((tiny_data / "val" / IMAGES_DIR).iterdir())[0]
    pixels = np.asarray(audit.Image.open(png))
    features = audit.image_statistics(pixels)
    assert features.shape == (22,)
    assert np.isfinite(features).all()
    flat = audit.image_statistics(np.full((256, 256, 3), 128, np.uint8))
    assert np.isfinite(flat).all()


def test_cv_auc_needs_two_of_each_class():
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.zeros(20, int)
    y[0] = 1
    assert math.isnan(audit._cv_auc(x, y, seed=0))


def test_format_audit_names_every_class(result):
    text = audit.format_audit(result)
    assert text.startswith("Signal audit")
    for name in DEFECTS:
        assert name in text
    d = result["discoloration"]
    assert f"{d['auc_image_only']:.3f}" in text
    assert f"({d['n_class4']} vs {d['n_cosmetic_good']} dies)" in text


def test_format_audit_with_missing_numbers(result):
    empty = {
        **result,
        "discoloration": {**result["discoloration"], "auc_image_only": float("nan")},
        "visibility": {
            n: {"n": 0, "visible_share": float("nan"), "median_changed_pixels": float("nan")}
            for n in DEFECTS
        },
    }
    text = audit.format_audit(empty)
    assert "nan" in text
    assert all(name in text for name in DEFECTS)
