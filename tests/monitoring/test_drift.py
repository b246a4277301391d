"""Drift on synthetic streams: the clean test split passes, each drift preset is caught by its
family, with real Evidently, a real image store and a real LanceDB store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from model.contract import read_split
from model.synthetic.generate import generate_dataset
from monitoring.config import MonitorConfig
from monitoring.drift import (
    embedding_drift,
    image_drift,
    intensity_statistics,
    js_distances,
    measure_drift,
    notes_drift,
    process_drift,
    prune_reports,
)
from service.image_store import ImageStore
from service.similar import SimilarDefects

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CONFIG = MonitorConfig()


def window_records(split_dir: Path, store: ImageStore, now=NOW, version="3") -> list[dict]:
    """A split's dies as inspection records received in the hour before `now`, their images
    put in the store."""
    split = read_split(split_dir)
    step = timedelta(hours=1) / (len(split.ids) + 1)
    return [
        {
            "inspection_id": f"{split_dir.parent.name}-{die}",
            "die_id": die,
            "received_at": now - timedelta(hours=1) + (i + 1) * step,
            "process_log": {k: float(v) for k, v in split.process.loc[die].items() if v == v},
            "operator_notes": split.notes[i],
            "image_ref": store.put(split.image_paths[i].read_bytes(), "png"),
            "model_version": version,
        }
        for i, die in enumerate(split.ids)
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ImageStore:
    return ImageStore(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """120 dies per drift preset, generated once for the module."""

    def make(preset: str) -> Path:
        out = tmp_path_factory.mktemp(preset)
        generate_dataset(out, n=120, seed=11, val_n=0, test_n=0, drift=preset, workers=1)
        return out / "train"

    return {preset: make(preset) for preset in ("recipe", "notes", "illumination")}


@pytest.fixture(scope="module")
def clean(tiny_data, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean_reports")
    records = window_records(tiny_data / "test", store)
    old = [r | {"received_at": NOW - timedelta(hours=2)} for r in records[:5]]
    return measure_drift(old + records, tiny_data / "train", store.root, out, NOW, CONFIG)


def test_the_clean_stream_does_not_drift(clean):
    assert clean.dies == 120  # the two-hour-old records are outside the window
    assert clean.drifted == []
    for name in ("process", "images", "notes"):
        family = clean.families[name]
        assert not family.skipped and family.score < family.threshold, name
        assert Path(family.report).stat().st_size > 10_000  # Evidently's HTML
    assert clean.families["process"].details["mean_shift_sigma"] == {}
    assert clean.families["notes"].details["new_words"] == {}  # typos are seen once
    assert "no similar-defect store" in clean.families["embeddings"].skipped
    json.dumps(clean.as_dict())
    assert {c.metric for c in clean.checks()} == {
        "drift_process",
        "drift_images",
        "drift_embeddings",
        "drift_notes",
    }


def test_a_recipe_change_drifts_the_process_family(tiny_data, drifted, store, tmp_path):
    reference = read_split(tiny_data / "train").process
    current = read_split(drifted["recipe"]).process
    family = process_drift(current, reference, CONFIG, tmp_path, NOW)
    assert family.drifted and family.score >= CONFIG.process_drift_share
    shifted = {f"temperature_zone_{i}" for i in range(1, 9)} | {"etch_duration"}
    named = set(family.details["drifted_columns"])
    assert len(named) >= 5 and named <= shifted, named


def test_the_three_sigma_rule_names_the_parameter(tiny_data, tmp_path):
    reference = read_split(tiny_data / "train").process
    current = read_split(tiny_data / "test").process.copy()
    current["etch_duration"] += 4 * reference["etch_duration"].std()
    family = process_drift(current, reference, CONFIG, tmp_path, NOW)
    assert family.drifted and family.score < CONFIG.process_drift_share  # one parameter
    assert list(family.details["mean_shift_sigma"]) == ["etch_duration"]


def test_a_light_change_drifts_the_images_family(tiny_data, drifted, store, tmp_path):
    records = window_records(drifted["illumination"], store)
    reference = read_split(tiny_data / "train").image_paths[:200]
    family = image_drift(records, store.root, reference, CONFIG, tmp_path, NOW)
    assert family.drifted and family.score == 1.0  # every intensity statistic moved
    assert {"r_mean", "g_mean", "b_mean"} <= set(family.details["drifted_columns"])


def test_missing_images_are_counted_and_can_skip_the_family(tiny_data, store, tmp_path):
    records = window_records(tiny_data / "test", store)[:40]
    for r in records[:15]:
        r["image_ref"] = "ff/" + "f" * 64 + ".png"  # never stored
    family = image_drift(records, store.root, [], CONFIG, tmp_path, NOW)
    assert family.skipped == "25 readable images in the window (15 unreadable)"
    assert image_drift(records, None, [], CONFIG, tmp_path, NOW).skipped == "no image store given"


def test_new_terms_drift_the_notes_family(tiny_data, drifted, tmp_path):
    reference = read_split(tiny_data / "train").notes
    family = notes_drift(read_split(drifted["notes"]).notes, reference, CONFIG, tmp_path, NOW)
    assert family.drifted
    new = family.details["new_words"]
    assert {"qualified", "swap", "split"} <= set(new) and min(new.values()) >= 2
    assert family.details["new_word_share"] >= CONFIG.new_word_share
    assert Path(family.report).is_file()


def test_a_few_clean_notes_are_judged_against_chance(tiny_data, tmp_path):
    """24 notes of the clean split sit about 0.35 from the reference by chance alone: the
    configured distance would flag most such windows, the chance quantile none."""
    reference = read_split(tiny_data / "train").notes
    written = [n for n in read_split(tiny_data / "test").notes if n.strip()]
    families = [
        notes_drift(written[i : i + 24], reference, CONFIG, tmp_path, NOW)
        for i in range(0, len(written) - 24, 12)
    ]
    assert len(families) >= 4 and not any(f.drifted for f in families)
    assert any(f.score >= CONFIG.notes_js_threshold for f in families)
    for f in families:
        assert f.threshold == pytest.approx(f.details["js_by_chance"], abs=1e-4)
        assert f.threshold > CONFIG.notes_js_threshold


def test_one_kind_of_note_over_and_over_drifts_the_notes_family(tiny_data, tmp_path):
    reference = read_split(tiny_data / "train").notes
    note = next(n for n in reference if n.strip())
    family = notes_drift([note] * 24, reference, CONFIG, tmp_path, NOW)
    assert family.drifted and family.score >= family.threshold
    assert family.details["new_words"] == {}  # no new word: the distance decides


def test_the_chance_distances_are_evidentlys_jensen_shannon():
    rng = np.random.default_rng(0)
    p, q = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, (3, 40)).astype(float)
    expected = [jensenshannon(p / p.sum(), row / row.sum()) for row in q]
    assert np.allclose(js_distances(p, q), expected)


def test_too_few_notes_skip_the_notes_family(tmp_path):
    family = notes_drift(["ok"] * 5 + [""] * 100, ["routine check ok"], CONFIG, tmp_path, NOW)
    assert family.skipped == "5 notes in the window" and not family.drifted


def test_intensity_statistics_of_a_constructed_image():
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:4, :, 0] = 200  # red: half 0, half 200
    pixels[..., 1] = np.arange(64, dtype=np.uint8).reshape(8, 8)  # green: 0..63
    stats = intensity_statistics(pixels)
    assert (stats["r_mean"], stats["r_std"]) == (100.0, 100.0)
    assert (stats["r_p01"], stats["r_p50"], stats["r_p99"]) == (0.0, 0.0, 200.0)
    assert (stats["g_p01"], stats["g_p50"], stats["g_p99"]) == (0.0, 31.0, 63.0)
    assert stats["b_std"] == 0.0 and len(stats) == 15


def embedding_rows(ids, rng, source, shift=0.0) -> list[dict]:
    scale = np.array([3.0, 2.0] + [0.5] * 14)  # two strong directions, then noise
    vectors = 10.0 + rng.standard_normal((len(ids), 16)) * scale
    vectors[:, 0] += shift
    origin = "ground_truth" if source == "training" else "model"
    return [
        {"die_id": i, "vector": v, "defect_class": 0, "class_name": "good", "source": source}
        | {"label_origin": origin}
        for i, v in zip(ids, vectors)
    ]


@pytest.mark.parametrize(("shift", "drifts"), [(0.0, False), (6.0, True)])
def test_embeddings_against_the_versions_training_dies(tmp_path, shift, drifts):
    rng = np.random.default_rng(0)
    similar = SimilarDefects(tmp_path / "similar")
    similar.add("3", embedding_rows([f"T-{i}" for i in range(300)], rng, "training"))
    window = [f"W-{i}" for i in range(100)]
    similar.add("3", embedding_rows(window, rng, "inspection", shift))
    rows = [{"die_id": d, "model_version": "3"} for d in window]
    family = embedding_drift(rows, str(tmp_path / "similar"), "3", CONFIG, tmp_path, NOW)
    assert not family.skipped
    assert family.drifted is drifts
    assert family.details["model_version"] == "3" and family.details["reference_dies"] == 300
    assert ("pc1" in family.details["drifted_columns"]) is drifts


def test_embeddings_skip_without_a_store_or_an_index(tmp_path):
    rows = [{"die_id": "W-1", "model_version": "3"}]
    nothing = embedding_drift(rows, None, "3", CONFIG, tmp_path, NOW)
    assert "no similar-defect store" in nothing.skipped
    uri = str(tmp_path / "similar")
    SimilarDefects(uri).add("4", embedding_rows(["W-1"], np.random.default_rng(0), "inspection"))
    assert embedding_drift(rows, uri, "3", CONFIG, tmp_path, NOW).skipped == (
        "no similar-defect index for version 3"
    )
    skipped = embedding_drift(rows, uri, "4", CONFIG, tmp_path, NOW).skipped
    assert skipped.startswith("version 4's index holds 0 training dies")


def test_only_check_folders_older_than_the_limit_are_pruned(tmp_path):
    names = ["20260301T100000Z", "20260302T100000Z", "20260302T130000Z", "notes-backup"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "process.html").write_text("<html></html>")
    (tmp_path / "20260101T000000Z").write_text("a file, not a check folder")
    removed = prune_reports(tmp_path, NOW)  # 2026-03-02 12:00
    assert [p.name for p in removed] == ["20260301T100000Z", "20260302T100000Z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "20260101T000000Z", "20260302T130000Z", "notes-backup",
    ]  # fmt: skip
