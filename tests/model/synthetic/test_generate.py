"""The written data set: determinism, split sizes, lot separation, drift presets, read-back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from model.contract import read_split
from model.schema import (
    IMAGES_DIR,
    LABELS_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    NOTES_FILE,
    PROCESS_LOGS_FILE,
    SPLITS,
    parameter_names,
    process_parameters,
)
from model.synthetic.generate import DRIFTS, TRUTH_FILE, generate_dataset
from model.synthetic.images import PAD, _pattern_defect, layout, render_die
from model.synthetic.process import TEMPERATURE_ZONES

SMALL = {"n": 36, "val_n": 5, "test_n": 7}


def _files(root: Path) -> dict[str, str]:
    """Relative path to a digest of the bytes, for every file under `root`."""
    return {
        str(p.relative_to(root)): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("small")
    return out, generate_dataset(out, seed=5, workers=1, **SMALL)


def _drifted(tmp_path: Path, drift: str) -> Path:
    out = tmp_path / drift
    generate_dataset(out, seed=5, workers=1, drift=drift, **SMALL)
    return out


def _table(root: Path, name: str) -> pd.DataFrame:
    return pd.concat(pd.read_csv(root / s / name) for s in SPLITS if (root / s).exists())


def _notes(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in SPLITS:
        out |= json.loads((root / s / NOTES_FILE).read_text())
    return out


def test_same_seed_gives_identical_files(small, tmp_path):
    root, plan = small
    again = generate_dataset(tmp_path, seed=5, workers=2, **SMALL)
    pd.testing.assert_frame_equal(again, plan)
    first, second = _files(root), _files(tmp_path)
    assert first == second
    assert sum(name.endswith(".png") for name in first) == SMALL["n"]
    assert {TRUTH_FILE, f"train/{PROCESS_LOGS_FILE}", f"val/{NOTES_FILE}"} <= set(first)


def test_different_seed_gives_different_data(small, tmp_path):
    root, plan = small
    other = generate_dataset(tmp_path, seed=6, workers=1, **SMALL)
    assert not other["die_id"].equals(plan["die_id"])
    a, b = _files(root), _files(tmp_path)
    for name in (TRUTH_FILE, f"train/{PROCESS_LOGS_FILE}", f"train/{METADATA_FILE}"):
        assert a[name] != b[name]
    assert not {v for k, v in a.items() if k.endswith(".png")} & {
        v for k, v in b.items() if k.endswith(".png")
    }


def test_written_images_match_rendering_of_the_plan(tiny_data):
    """tiny_data was rendered by two worker processes: the pixels depend on the plan only."""
    truth = pd.read_csv(tiny_data / TRUTH_FILE)
    meta = _table(tiny_data, METADATA_FILE)
    rows = truth.merge(meta, on="die_id").groupby("label").head(2)
    for row in rows.to_dict("records"):
        path = tiny_data / row["split"] / IMAGES_DIR / f"{row['die_id']}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(path)), render_die(row))


def test_split_sizes_are_exact(small):
    root, plan = small
    expected = {"train": SMALL["n"] - SMALL["val_n"] - SMALL["test_n"], "val": 5, "test": 7}
    assert plan["split"].value_counts().to_dict() == expected
    for split, n in expected.items():
        for name in (LABELS_FILE, METADATA_FILE, PROCESS_LOGS_FILE):
            assert len(pd.read_csv(root / split / name)) == n
        assert len(list((root / split / IMAGES_DIR).iterdir())) == n


def test_default_split_sizes(tiny_data):
    counts = {s: len(pd.read_csv(tiny_data / s / LABELS_FILE)) for s in SPLITS}
    assert counts == {"train": 360, "val": 120, "test": 120}


def test_no_lot_or_wafer_in_two_splits(tiny_data):
    meta = pd.concat(pd.read_csv(tiny_data / s / METADATA_FILE).assign(split=s) for s in SPLITS)
    for key in ("lot_id", "wafer_id"):
        assert (meta.groupby(key)["split"].nunique() == 1).all(), key


@pytest.mark.parametrize("split", SPLITS)
def test_written_split_reads_back(tiny_data, split):
    tables = read_split(tiny_data / split)
    assert len(tables.ids) > 0
    assert list(tables.metadata.columns) == list(METADATA_COLUMNS[1:])
    assert tables.empty_cells < 0.01 * tables.process.size  # rare sensor dropouts
    assert 0.25 < tables.missing_notes / len(tables.ids) < 0.6


def test_truth_file(tiny_data):
    truth = pd.read_csv(tiny_data / TRUTH_FILE, keep_default_na=False)
    assert len(truth) == 600 and truth["die_id"].is_unique
    assert not set(METADATA_COLUMNS[1:]) & set(truth.columns)  # hidden causes only
    expected = {"label", "split", "discoloration", "image_visible", "has_note", "process_cause"}
    assert expected <= set(truth.columns)
    labels = _table(tiny_data, LABELS_FILE).set_index("die_id")["label"]
    assert truth.set_index("die_id")["label"].sort_index().equals(labels.sort_index())
    notes = _notes(tiny_data)
    assert set(notes) == set(truth.loc[truth["has_note"], "die_id"])
    assert all(notes.values())


def test_unknown_drift_preset(tmp_path):
    with pytest.raises(ValueError, match="unknown drift preset"):
        generate_dataset(tmp_path / "out", n=20, seed=0, drift="weather")
    assert not (tmp_path / "out").exists()


def test_recipe_drift_raises_temperatures(small, tmp_path):
    root, _ = small
    drifted = _drifted(tmp_path, "recipe")
    base = _table(root, PROCESS_LOGS_FILE).set_index("die_id")
    shifted = _table(drifted, PROCESS_LOGS_FILE).set_index("die_id").loc[base.index]
    sigma = {p.name: p.sigma for p in process_parameters()}
    shift = DRIFTS["recipe"].process_shift
    for name in TEMPERATURE_ZONES:
        delta = (shifted[name] - base[name]).dropna()
        np.testing.assert_allclose(delta, shift[name] * sigma[name], atol=1e-4)
        assert shifted[name].mean() > base[name].mean()
    assert shifted["etch_duration"].mean() < base["etch_duration"].mean()
    untouched = [n for n in parameter_names() if n not in shift]
    pd.testing.assert_frame_equal(base[untouched], shifted[untouched])
    images = {k: v for k, v in _files(root).items() if k.endswith(".png")}
    assert images == {k: v for k, v in _files(drifted).items() if k.endswith(".png")}
    assert _notes(root) == _notes(drifted)  # images and notes do not change


def test_notes_drift_adds_new_words(small, tmp_path):
    root, _ = small
    drifted = _drifted(tmp_path, "notes")
    before, after = _notes(root), _notes(drifted)
    assert set(before) == set(after)  # the same dies have notes
    words = DRIFTS["notes"].note_words

    def vocabulary(notes: dict[str, str]) -> set[str]:
        return {w for text in notes.values() for w in text.lower().replace(",", " ").split()}

    new = vocabulary(after) - vocabulary(before)
    assert new & {"mes", "ald", "qualified", "split"}
    assert not any(w.lower() in t.lower() for w in words for t in before.values())
    assert any(w.lower() in t.lower() for w in words for t in after.values())
    pd.testing.assert_frame_equal(
        _table(root, PROCESS_LOGS_FILE), _table(drifted, PROCESS_LOGS_FILE)
    )


def test_illumination_drift_darkens_images(small, tmp_path):
    root, plan = small
    drifted = _drifted(tmp_path, "illumination")
    for row in plan.itertuples():
        name = Path(row.split) / IMAGES_DIR / f"{row.die_id}.png"
        a = np.asarray(Image.open(root / name), np.float64)
        b = np.asarray(Image.open(drifted / name), np.float64)
        assert b.mean() < 0.9 * a.mean()
    pd.testing.assert_frame_equal(
        _table(root, PROCESS_LOGS_FILE), _table(drifted, PROCESS_LOGS_FILE)
    )


def _plan_rows(tiny_data: Path) -> pd.DataFrame:
    truth = pd.read_csv(tiny_data / TRUTH_FILE)
    return truth.merge(_table(tiny_data, METADATA_FILE), on="die_id")


def test_render_without_defect_differs_only_for_defective_dies(tiny_data):
    rows = _plan_rows(tiny_data)
    picked = pd.concat(
        [
            rows[rows["label"] == 0].head(4),
            rows[rows["label"] == 0][lambda r: r["discoloration"]].head(2),
            *(rows[rows["label"] == k].head(3) for k in (1, 2, 3)),
            rows[(rows["label"] == 4) & rows["image_visible"]].head(3),
            rows[(rows["label"] == 4) & ~rows["image_visible"]].head(3),
        ]
    )
    assert set(picked["label"]) == {0, 1, 2, 3, 4}
    for row in picked.to_dict("records"):
        with_defect = render_die(row)
        without = render_die(row, with_defect=False)
        assert with_defect.shape == (256, 256, 3) and with_defect.dtype == np.uint8
        visible = row["label"] > 0 and row["image_visible"]
        assert np.array_equal(with_defect, without) != visible, row["die_id"]


@pytest.mark.parametrize("faint", [False, True], ids=["plain", "faint"])
def test_pattern_defect_always_changes_the_metal(faint):
    """A bridge over metal or a shift along the lines must not leave the mask as it was."""
    unchanged = []
    for fab in ("A", "B", "C"):
        metal_full, _ = layout(fab)
        for seed in range(150):
            metal = metal_full[PAD : PAD + 256, PAD : PAD + 256].copy()
            _pattern_defect(metal, np.random.default_rng([seed, 3]), faint=faint)
            if np.array_equal(metal, metal_full[PAD : PAD + 256, PAD : PAD + 256]):
                unchanged.append((fab, seed))
    assert not unchanged
