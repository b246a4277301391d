"""Feedback export: a split folder that the dataset contract reads, with the right labels."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from model.contract import read_split
from model.schema import METADATA_FILE, parameter_names
from service.feedback_export import (
    MANIFEST_FILE,
    NothingToExportError,
    export_feedback,
    metadata_row,
)
from service.image_store import ImageStore
from service.inspection_log import InspectionLog
from tests.service.test_image_store import encoded
from tests.service.test_inspection_log import T0, make_record

NAMES = parameter_names()


@pytest.fixture
def setup(tmp_path):
    """A started log on a SQLite file and an image store with three inspected dies."""
    store = ImageStore(tmp_path / "images")
    log = InspectionLog(f"sqlite:///{tmp_path / 'log.db'}").start()
    dies = {"A-L0042-W07-D113": ("png", 2), "B-L0007-W01-D005": ("jpeg", 3)}
    dies["C-L0001-W02-D010"] = ("png", 1)
    for i, (die_id, (fmt, defect_class)) in enumerate(dies.items()):
        record = make_record(
            die_id,
            at=T0 + timedelta(minutes=i),
            defect_class=defect_class,
            image_ref=store.put(encoded(fmt, seed=i), fmt),
            process_log={NAMES[0]: 1.5 + i, NAMES[1]: -2.0},
            metadata={"shift": "night", "die_x": 3, "die_y": -4} if i == 0 else {},
            operator_notes="" if i == 1 else f"note {i}",
        )
        log.record(record)
    yield log, store, tmp_path
    log.close()


def test_export_is_a_labelled_split_the_contract_reads(setup):
    log, store, tmp = setup
    log.add_feedback("A-L0042-W07-D113", "confirm", "kim")
    log.add_feedback("B-L0007-W01-D005", "override", "lee", true_class=0)
    summary = export_feedback(log, store, tmp / "export")
    split = read_split(tmp / "export")
    assert split.ids == ["A-L0042-W07-D113", "B-L0007-W01-D005"]
    assert split.labels.tolist() == [2, 0]  # confirm: the decided class; override: the operator's
    assert summary.count == 2 and summary.per_class["scratch"] == 1
    assert summary.per_class["good"] == 1 and summary.skipped == {}
    assert split.process[NAMES[0]].tolist() == [1.5, 2.5]
    assert split.process[NAMES[2]].isna().all()  # not given: an empty cell
    assert split.notes == ["note 0", ""]
    assert [p.suffix for p in split.image_paths] == [".png", ".jpg"]
    assert split.image_paths[1].read_bytes() == encoded("jpeg", seed=1)
    meta = split.metadata
    assert meta["fab"].tolist() == ["A", "B"] and meta["lot_id"].tolist() == ["L0042", "L0007"]
    assert meta["wafer_id"].tolist() == ["A-L0042-W07", "B-L0007-W01"]
    assert meta["timestamp"].tolist() == ["2026-03-01T08:00:00Z", "2026-03-01T08:01:00Z"]
    assert meta.loc["A-L0042-W07-D113", "shift"] == "night"
    assert "3,-4" in (tmp / "export" / METADATA_FILE).read_text()  # integer coordinates
    manifest = json.loads((tmp / "export" / MANIFEST_FILE).read_text())
    assert manifest["count"] == 2 and manifest["verdicts"] == {"confirm": 1, "override": 1}
    assert manifest["source"] == log.source


def test_a_later_export_replaces_an_earlier_one(setup):
    log, store, tmp = setup
    log.add_feedback("A-L0042-W07-D113", "confirm", "kim")
    export_feedback(log, store, tmp / "export")
    log.add_feedback("A-L0042-W07-D113", "override", "kim", true_class=4)  # the latest counts
    log.add_feedback("C-L0001-W02-D010", "confirm", "kim")
    summary = export_feedback(log, store, tmp / "export")
    assert summary.count == 2
    assert read_split(tmp / "export").labels.tolist() == [4, 1]
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []


def test_refuses_a_folder_that_is_not_an_export(setup):
    log, store, tmp = setup
    log.add_feedback("A-L0042-W07-D113", "confirm", "kim")
    (tmp / "data").mkdir()
    (tmp / "data" / "keep.txt").write_text("someone else's")
    with pytest.raises(FileExistsError, match="not an earlier feedback export"):
        export_feedback(log, store, tmp / "data")
    assert (tmp / "data" / "keep.txt").exists()


def test_nothing_to_export(setup):
    log, store, tmp = setup
    with pytest.raises(NothingToExportError, match="no confirmed or overridden die"):
        export_feedback(log, store, tmp / "export")
    log.add_feedback("A-L0042-W07-D113", "confirm", "kim")
    with pytest.raises(NothingToExportError, match="since"):
        export_feedback(log, store, tmp / "export", since=T0 + timedelta(days=365 * 100))
    assert not (tmp / "export").exists()


def test_a_die_without_a_stored_image_is_left_out_with_the_reason(setup):
    log, store, tmp = setup
    log.record(make_record("A-L0001-W01-D001", image_ref=""))  # the image could not be stored
    log.add_feedback("A-L0001-W01-D001", "confirm", "kim")
    with pytest.raises(NothingToExportError, match="image is not in the image store"):
        export_feedback(log, store, tmp / "export")
    log.add_feedback("C-L0001-W02-D010", "confirm", "kim")
    summary = export_feedback(log, store, tmp / "export")
    assert summary.count == 1 and list(summary.skipped) == ["A-L0001-W01-D001"]


def test_metadata_row_prefers_the_stations_metadata():
    record = make_record(
        metadata={"fab": "B", "lot_id": "L9", "timestamp": "2026-01-02T03:04:05+01:00"}
    )
    row = metadata_row(record)
    assert (row["fab"], row["lot_id"], row["timestamp"]) == ("B", "L9", "2026-01-02T02:04:05Z")
    assert row["chamber"] is None and row["wafer_zone"] is None
    odd = metadata_row(make_record("odd_die", metadata={"timestamp": "yesterday"}))
    assert odd["fab"] is None and odd["timestamp"] == "2026-03-01T08:00:00Z"
