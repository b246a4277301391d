"""The EDA report: six views, the self-contained HTML page and the summary numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from model.explore import VIEWS, _parameter_scores, _pick_samples, explore_dataset
from model.schema import CLASS_NAMES, LABELS_FILE, METADATA_FILE, NOTES_FILE, PROCESS_LOGS_FILE
from model.synthetic.generate import generate_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eda_data")
    generate_dataset(out, n=400, seed=3, workers=1)
    return out


@pytest.fixture(scope="module")
def report(data_dir, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eda_out")
    return explore_dataset(data_dir, out, max_images_per_class=4, seed=1), out


def _without_class(src: Path, dst: Path, label: int) -> None:
    """Copy a split's tables with every die of `label` removed (images are left as they are)."""
    dst.mkdir(parents=True)
    labels = pd.read_csv(src / LABELS_FILE, dtype={"die_id": str})
    keep = set(labels.loc[labels["label"] != label, "die_id"])
    for name in (LABELS_FILE, METADATA_FILE, PROCESS_LOGS_FILE):
        table = pd.read_csv(src / name, dtype={"die_id": str})
        table[table["die_id"].isin(keep)].to_csv(dst / name, index=False)
    notes = json.loads((src / NOTES_FILE).read_text())
    (dst / NOTES_FILE).write_text(json.dumps({k: v for k, v in notes.items() if k in keep}))
    shutil.copytree(src / "images", dst / "images")


def test_six_valid_pngs(report):
    summary, out = report
    for key in VIEWS:
        path = Path(summary["files"][key])
        assert path == out / f"{key}.png"
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == "PNG" and min(img.size) >= 300


def test_html_embeds_all_views(report):
    summary, _ = report
    page = Path(summary["files"]["html"]).read_text()
    assert page.count("data:image/png;base64,") == 6
    for title in VIEWS.values():
        assert f"<h2>{title}</h2>" in page
    assert "<table>" in page and 'src="data:image/png;base64,' in page


def test_json_matches_summary(report):
    summary, _ = report
    assert json.loads(Path(summary["files"]["json"]).read_text()) == summary


def test_class_counts_match_labels(report, data_dir):
    summary, _ = report
    labels = pd.read_csv(data_dir / "train" / LABELS_FILE)
    expected = {n: int((labels["label"] == i).sum()) for i, n in enumerate(CLASS_NAMES)}
    assert summary["class_counts"] == expected
    assert summary["n_dies"] == len(labels)
    assert sum(summary["class_share"].values()) == pytest.approx(1.0)


def test_note_missing_rates_match_notes(report, data_dir):
    summary, _ = report
    split = data_dir / "train"
    labels = pd.read_csv(split / LABELS_FILE, dtype={"die_id": str})
    meta = pd.read_csv(split / METADATA_FILE, dtype={"die_id": str})
    notes = json.loads((split / NOTES_FILE).read_text())
    missing = labels["die_id"].map(lambda d: not str(notes.get(d) or "").strip())
    rates = summary["note_missing"]
    assert rates["overall"] == pytest.approx(missing.mean())
    for i, name in enumerate(CLASS_NAMES):
        assert rates["per_class"][name] == pytest.approx(missing[labels["label"] == i].mean())
    shift = labels.merge(meta, on="die_id")["shift"]
    for name in ("day", "night"):
        assert rates["per_shift"][name] == pytest.approx(missing[shift == name].mean())


def test_top_parameters_sorted_and_named(report):
    top = report[0]["top_parameters"]
    assert len(top) == 8
    scores = [t["score"] for t in top]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert all(t["class"] in CLASS_NAMES[1:] for t in top if t["score"] > 0)


def test_absent_class_and_pooled_splits(data_dir, tmp_path):
    for split in ("train", "val"):
        _without_class(data_dir / split, tmp_path / "data" / split, label=3)
    summary = explore_dataset(tmp_path / "data", tmp_path / "out", splits=("train", "val"))
    assert summary["class_counts"]["pattern"] == 0
    assert summary["note_missing"]["per_class"]["pattern"] is None
    pooled = pd.concat(pd.read_csv(data_dir / s / LABELS_FILE) for s in ("train", "val"))
    assert summary["n_dies"] == int((pooled["label"] != 3).sum())
    assert all(Path(summary["files"][k]).stat().st_size > 0 for k in VIEWS)


def test_sample_choice_is_deterministic():
    frame = pd.DataFrame({"die_id": [f"D{i:03d}" for i in range(50)], "label": [1] * 50})
    ids = [[r["die_id"] for r in _pick_samples(frame, 1, 6, seed)] for seed in (0, 0, 1)]
    assert ids[0] == ids[1] and ids[0] != ids[2] and len(ids[0]) == 6
    assert _pick_samples(frame, 2, 6, 0) == []


def test_parameter_score_finds_the_shifted_parameter():
    rng = np.random.default_rng(0)
    z = pd.DataFrame(rng.standard_normal((300, 3)), columns=["a", "b", "c"])
    labels = pd.Series([0] * 240 + [2] * 30 + [4] * 30)
    z.loc[270:, "b"] += rng.choice([-5.0, 5.0], size=30)  # either sign, class 4 only
    z.loc[0:5, "c"] = np.nan
    scores = _parameter_scores(z, labels)
    assert scores.iloc[0]["name"] == "b" and scores.iloc[0]["class"] == CLASS_NAMES[4]
    assert scores.iloc[0]["score"] > 0.8
