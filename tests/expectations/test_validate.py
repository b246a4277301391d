"""End to end: the stored suites on good and deliberately broken copies of the tiny data set.

One validation run covers everything (GX costs ~3 s per split whatever its size): the three
good splits of `tiny_data` (linked, read-only) and one broken copy of `val` per kind of
damage, each checked as a split of its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from expectations.validate import (
    DataValidationError,
    QuarantinedError,
    ensure_not_quarantined,
    is_quarantined,
    quarantine,
    quarantine_status,
    validate_dataset,
)
from model.schema import (
    IMAGES_DIR,
    LABELS_FILE,
    METADATA_FILE,
    NOTES_FILE,
    PROCESS_LOGS_FILE,
    SPLITS,
)

N = 24  # dies per broken copy


def _edit_csv(split_dir: Path, name: str, edit) -> None:
    table = pd.read_csv(split_dir / name, dtype={"die_id": str})
    edit(table).to_csv(split_dir / name, index=False)


def _images(split_dir: Path) -> list[Path]:
    return sorted((split_dir / IMAGES_DIR).iterdir())


def _bad_labels(d: Path) -> None:
    """Label 7, an empty label and a repeated die id."""

    def edit(t):
        t["label"] = t["label"].astype(object)
        t.loc[0, "label"], t.loc[1, "label"] = 7, None
        return pd.concat([t, t.iloc[[3]]], ignore_index=True)

    _edit_csv(d, LABELS_FILE, edit)


def _bad_process_and_images(d: Path) -> None:
    """A missing column, text in a number, a far-off value for half the dies; a constant
    image and a truncated one."""

    def edit(t):
        t = t.drop(columns=["etch_rate"])
        t.loc[: len(t) // 2, "temperature_zone_3"] = 25.0  # a thermocouple read elsewhere
        t["rf_power"] = t["rf_power"].astype(object)
        t.loc[2, "rf_power"] = "ERR"
        return t

    _edit_csv(d, PROCESS_LOGS_FILE, edit)
    constant, corrupt = _images(d)[:2]
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(constant)
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # truncated upload


def _bad_metadata_and_notes(d: Path) -> None:
    """An unparseable timestamp and an overlong note."""

    def edit(t):
        t.loc[0, "timestamp"] = "31/02/2026 25:61"
        return t

    _edit_csv(d, METADATA_FILE, edit)
    notes = json.loads((d / NOTES_FILE).read_text())
    die = pd.read_csv(d / LABELS_FILE, dtype={"die_id": str})["die_id"].iloc[5]
    notes[die] = "operator pasted the whole log " * 100
    (d / NOTES_FILE).write_text(json.dumps(notes))


BROKEN = {  # split name -> (damage, failures expected as (suite, expectation, column))
    "bad_labels": (
        _bad_labels,
        {
            ("labels", "expect_column_values_to_be_in_set", "label"),
            ("labels", "expect_column_values_to_not_be_null", "label"),
            ("labels", "expect_column_values_to_be_unique", "die_id"),
        },
    ),
    "bad_process_images": (
        _bad_process_and_images,
        {
            ("process_logs", "expect_table_columns_to_match_set", None),
            ("process_logs", "expect_column_values_to_be_between", "etch_rate"),
            ("process_logs", "expect_column_values_to_be_between", "temperature_zone_3"),
            ("process_logs", "expect_column_values_to_be_in_type_list", "rf_power"),
            ("image_stats", "expect_column_values_to_be_between", "std"),
            ("image_stats", "expect_column_values_to_be_null", "error"),
        },
    ),
    "bad_metadata_notes": (
        _bad_metadata_and_notes,
        {
            ("metadata", "expect_column_values_to_be_dateutil_parseable", "timestamp"),
            ("metadata", "expect_column_values_to_match_regex", "timestamp"),
            ("notes", "expect_column_value_lengths_to_be_between", "note"),
        },
    ),
}


@pytest.fixture(scope="module")
def checked(tiny_data, tmp_path_factory):
    """(data folder, report) of one run over the good splits and every broken copy."""
    root = tmp_path_factory.mktemp("validate")
    data = root / "data"
    data.mkdir()
    for split in SPLITS:
        os.symlink(tiny_data / split, data / split)
    keep = sorted(p.stem for p in (tiny_data / "val" / IMAGES_DIR).iterdir())[:N]
    for name, (damage, _) in BROKEN.items():
        _copy_dies(tiny_data / "val", data / name, keep)
        damage(data / name)
    report = validate_dataset(data, root / "docs", splits=[*SPLITS, *BROKEN], threads=2)
    return data, report


def _copy_dies(src: Path, dst: Path, keep: list[str]) -> None:
    (dst / IMAGES_DIR).mkdir(parents=True)
    for name in (PROCESS_LOGS_FILE, LABELS_FILE, METADATA_FILE):
        rows = pd.read_csv(src / name, dtype={"die_id": str})
        rows[rows["die_id"].isin(keep)].to_csv(dst / name, index=False)
    notes = json.loads((src / NOTES_FILE).read_text())
    (dst / NOTES_FILE).write_text(json.dumps({k: v for k, v in notes.items() if k in keep}))
    for die in keep:
        (dst / IMAGES_DIR / f"{die}.png").write_bytes(
            (src / IMAGES_DIR / f"{die}.png").read_bytes()
        )


def _failed(report, split: str) -> set[tuple]:
    out = set()
    for suite, summary in report.results[split].items():
        for e in summary.get("expectations", []):
            if not e["success"]:
                out.add((suite, e["expectation_type"], e["kwargs"].get("column")))
    return out


@pytest.mark.parametrize("split", SPLITS)
def test_good_splits_pass_every_suite(checked, split):
    _, report = checked
    assert [f for f in report.failures if f.startswith(f"{split}/")] == []
    assert set(report.results[split]) == {
        "process_logs",
        "labels",
        "notes",
        "metadata",
        "image_stats",
        "die_ids",
    }
    assert all(summary["success"] for summary in report.results[split].values())
    assert len(report.digests[split]) == 32


def test_data_docs_are_built(checked):
    _, report = checked
    assert report.docs_index.name == "index.html" and report.docs_index.is_file()
    pages = list(report.docs_index.parent.glob("validations/**/*.html"))
    assert len(pages) == 6 * (len(SPLITS) + len(BROKEN))


@pytest.mark.parametrize("split", sorted(BROKEN))
def test_each_kind_of_damage_fails_its_expectation(checked, split):
    _, report = checked
    expected = BROKEN[split][1]
    failed = _failed(report, split)
    assert expected <= failed, f"missing failures: {expected - failed}"
    assert {suite for suite, _, _ in failed} == {suite for suite, _, _ in expected}
    lines = [f for f in report.failures if f.startswith(f"{split}/")]
    for suite, kind, column in expected:
        named = f"{split}/{suite}: {kind}" + (f"(column={column})" if column else "")
        assert any(line.startswith(named) for line in lines), (named, lines)


def test_failures_name_the_offending_die_file_and_value(checked):
    data, report = checked
    text = "\n".join(report.failures)
    labels = pd.read_csv(data / "bad_labels" / LABELS_FILE, dtype={"die_id": str})
    assert f"{labels.loc[labels['label'] == 7, 'die_id'].item()}=7" in text  # label, with its die
    assert "missing columns ['etch_rate']" in text
    assert "'ERR'" in text
    constant, corrupt = (p.name for p in _images(data / "bad_process_images")[:2])
    assert f"{constant}=0.0" in text  # its standard deviation
    assert f"{corrupt}: not a readable image" in text
    assert "31/02/2026 25:61" in text
    assert not report.success


def test_report_is_json_and_error_names_failed_expectations(checked):
    _, report = checked
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["success"] is False and as_dict["docs_index"].endswith("index.html")
    message = str(DataValidationError(report))
    assert "bad_labels/labels: expect_column_values_to_be_in_set(column=label)" in message
    assert str(report.docs_index) in message


def test_quarantine_marks_without_deleting_and_refuses_until_released(checked, tmp_path):
    data, report = checked
    before = _snapshot(data)
    record = quarantine(data, report, tmp_path / "quarantine")
    marker = data / "QUARANTINED.json"
    assert _snapshot(data) == before | {_entry(marker)}  # the marker, nothing else changed
    assert record.parent == tmp_path / "quarantine" and record.is_file()
    status = quarantine_status(data)
    assert status["failures"] == report.failures and status["digest"] == report.digest
    assert is_quarantined(data)
    with pytest.raises(QuarantinedError, match=f"delete {marker}") as refused:
        validate_dataset(data, tmp_path / "docs")
    assert isinstance(refused.value, DataValidationError)  # refused data: a retry won't help
    marker.unlink()  # release
    assert not is_quarantined(data)
    ensure_not_quarantined(data)


def test_quarantine_refuses_a_report_about_another_folder(checked, tmp_path):
    _, report = checked
    with pytest.raises(ValueError, match="not"):
        quarantine(tmp_path, report, tmp_path / "quarantine")


def _snapshot(root: Path) -> set[tuple]:
    return {_entry(Path(d) / f) for d, _, files in os.walk(root, followlinks=True) for f in files}


def _entry(path: Path) -> tuple:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns
