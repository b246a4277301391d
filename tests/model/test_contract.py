"""Reading a split folder: a clean split reads, every broken one is refused by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from model.contract import (
    DatasetError,
    DuplicateIdError,
    IdMismatchError,
    ImageFormatError,
    InvalidValueError,
    MissingColumnError,
    MissingFileError,
    UnknownLabelError,
    read_split,
)
from model.schema import (
    IMAGES_DIR,
    LABELS_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    NOTES_FILE,
    PROCESS_LOGS_FILE,
    parameter_names,
)


def _table(split_dir, name) -> pd.DataFrame:
    return pd.read_csv(split_dir / name, dtype={"die_id": str})


def _write(table: pd.DataFrame, split_dir, name) -> None:
    table.to_csv(split_dir / name, index=False)


def _notes(split_dir) -> dict:
    return json.loads((split_dir / NOTES_FILE).read_text())


def _set_notes(split_dir, notes: dict) -> None:
    (split_dir / NOTES_FILE).write_text(json.dumps(notes))


# --- a clean split -----------------------------------------------------------------------


def test_clean_split_reads(tiny_data):
    tables = read_split(tiny_data / "val")
    ids = tables.ids
    n = len(ids)
    assert n == 120
    assert ids == sorted(ids)
    assert len(set(ids)) == n
    assert list(tables.process.columns) == list(parameter_names())
    assert list(tables.process.index) == ids
    assert all(dtype == np.float64 for dtype in tables.process.dtypes)
    assert tables.labels.dtype == np.int64
    assert tables.labels.shape == (n,)
    assert set(np.unique(tables.labels)) <= set(range(5))
    assert list(tables.metadata.index) == ids
    assert set(METADATA_COLUMNS[1:]) <= set(tables.metadata.columns)
    assert [p.stem for p in tables.image_paths] == ids
    assert all(p.exists() for p in tables.image_paths)
    # Notes: aligned on ids, "" where the die has none, and the written texts where it has one.
    written = _notes(tiny_data / "val")
    assert len(tables.notes) == n
    assert tables.notes == [written.get(i, "").strip() for i in ids]
    assert "" in tables.notes and any(tables.notes)
    assert tables.missing_notes == sum(1 for i in ids if not written.get(i))


def test_labels_follow_sorted_ids(copy_split):
    split = copy_split(n=8)
    labels = _table(split, LABELS_FILE)
    expected = dict(zip(labels["die_id"], labels["label"]))
    _write(labels.iloc[::-1], split, LABELS_FILE)  # row order in the file does not matter
    process = _table(split, PROCESS_LOGS_FILE)
    _write(process.sample(frac=1.0, random_state=0), split, PROCESS_LOGS_FILE)
    tables = read_split(split)
    assert tables.ids == sorted(expected)
    assert tables.labels.tolist() == [expected[i] for i in tables.ids]


def test_process_columns_in_any_order(copy_split):
    split = copy_split(n=6)
    process = _table(split, PROCESS_LOGS_FILE)
    reference = read_split(split).process
    names = list(parameter_names())
    _write(process[["die_id", *reversed(names)]], split, PROCESS_LOGS_FILE)
    tables = read_split(split)
    assert list(tables.process.columns) == names
    pd.testing.assert_frame_equal(tables.process, reference)


def test_missing_notes_and_empty_cells_are_allowed_and_counted(copy_split):
    split = copy_split(n=10)
    process = _table(split, PROCESS_LOGS_FILE)
    ids = sorted(process["die_id"])
    process = process.set_index("die_id").fillna(1.0)  # drop the generator's own dropouts
    process.loc[ids[0], "humidity"] = np.nan
    process.loc[ids[1], "humidity"] = np.nan
    process.loc[ids[1], "focus_offset"] = np.nan
    process.reset_index().to_csv(split / PROCESS_LOGS_FILE, index=False)
    _set_notes(split, {ids[0]: "routine check ok", ids[1]: "", ids[2]: "   "})
    tables = read_split(split)
    assert tables.empty_cells == 3
    assert np.isnan(tables.process.loc[ids[1], "focus_offset"])
    assert tables.notes[0] == "routine check ok"
    assert tables.notes[1:3] == ["", ""]
    assert tables.missing_notes == len(ids) - 1


def test_note_may_be_null(copy_split):
    split = copy_split(n=4)
    ids = sorted(_table(split, LABELS_FILE)["die_id"])
    _set_notes(split, {ids[0]: None, ids[1]: "nominal run"})
    tables = read_split(split)
    assert tables.notes == ["", "nominal run", "", ""]
    assert tables.missing_notes == 3


def test_unlabelled_batch(copy_split):
    split = copy_split(n=6)
    (split / LABELS_FILE).unlink()
    with pytest.raises(MissingFileError) as err:
        read_split(split)
    assert err.value.offending == [LABELS_FILE]
    tables = read_split(split, require_labels=False)
    assert tables.labels is None
    assert len(tables.ids) == 6


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [LABELS_FILE, PROCESS_LOGS_FILE, METADATA_FILE, NOTES_FILE, IMAGES_DIR]
)
def test_missing_file(copy_split, name):
    split = copy_split(n=3)
    target = split / name
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(MissingFileError) as err:
        read_split(split)
    assert err.value.offending == [name]
    assert name in str(err.value)


def test_all_errors_are_dataset_errors():
    for cls in (
        MissingFileError,
        MissingColumnError,
        InvalidValueError,
        UnknownLabelError,
        DuplicateIdError,
        IdMismatchError,
        ImageFormatError,
    ):
        assert issubclass(cls, DatasetError)
        assert issubclass(cls, ValueError)


def test_message_lists_at_most_ten_offenders():
    err = DatasetError("bad", [f"d{i}" for i in range(13)])
    assert err.offending == [f"d{i}" for i in range(13)]
    assert "d9" in str(err) and "d10" not in str(err)
    assert "(and 3 more)" in str(err)
    assert str(DatasetError("plain")) == "plain"


def test_missing_process_column(copy_split):
    split = copy_split(n=4)
    process = _table(split, PROCESS_LOGS_FILE)
    _write(process.drop(columns=["etch_duration"]), split, PROCESS_LOGS_FILE)
    with pytest.raises(MissingColumnError) as err:
        read_split(split)
    assert err.value.offending == ["etch_duration"]
    assert "etch_duration" in str(err.value)


def test_missing_die_id_column(copy_split):
    split = copy_split(n=4)
    metadata = _table(split, METADATA_FILE)
    _write(metadata.drop(columns=["wafer_zone"]), split, METADATA_FILE)
    with pytest.raises(MissingColumnError) as err:
        read_split(split)
    assert err.value.offending == ["wafer_zone"]


def test_unknown_extra_process_column(copy_split):
    split = copy_split(n=4)
    process = _table(split, PROCESS_LOGS_FILE)
    _write(process.assign(chuck_wobble=1.0), split, PROCESS_LOGS_FILE)
    with pytest.raises(MissingColumnError) as err:
        read_split(split)
    assert err.value.offending == ["chuck_wobble"]
    assert "chuck_wobble" in str(err.value)


def test_non_numeric_process_value(copy_split):
    split = copy_split(n=5)
    process = _table(split, PROCESS_LOGS_FILE)
    die = sorted(process["die_id"])[2]
    process["focus_offset"] = process["focus_offset"].astype(object)
    process.loc[process["die_id"] == die, "focus_offset"] = "n/a?"
    _write(process, split, PROCESS_LOGS_FILE)
    with pytest.raises(InvalidValueError) as err:
        read_split(split)
    assert err.value.offending == [f"{die}:focus_offset"]
    assert f"{die}:focus_offset" in str(err.value)


def test_infinite_process_value(copy_split):
    split = copy_split(n=5)
    process = _table(split, PROCESS_LOGS_FILE)
    die = sorted(process["die_id"])[1]
    process.loc[process["die_id"] == die, "humidity"] = np.inf
    _write(process, split, PROCESS_LOGS_FILE)
    with pytest.raises(InvalidValueError) as err:
        read_split(split)
    assert err.value.offending == [die]


@pytest.mark.parametrize("bad", [5, -1, 2.5, "x"])
def test_unknown_label(copy_split, bad):
    split = copy_split(n=5)
    labels = _table(split, LABELS_FILE)
    die = sorted(labels["die_id"])[3]
    labels["label"] = labels["label"].astype(object)
    labels.loc[labels["die_id"] == die, "label"] = bad
    _write(labels, split, LABELS_FILE)
    with pytest.raises(UnknownLabelError) as err:
        read_split(split)
    assert len(err.value.offending) == 1
    assert err.value.offending[0].startswith(f"{die}=")
    assert die in str(err.value)
    assert str(bad) in err.value.offending[0]


def test_missing_label_value(copy_split):
    split = copy_split(n=4)
    labels = _table(split, LABELS_FILE)
    die = labels["die_id"].iloc[0]
    labels["label"] = labels["label"].astype(float)
    labels.loc[labels["die_id"] == die, "label"] = np.nan
    _write(labels, split, LABELS_FILE)
    with pytest.raises(UnknownLabelError) as err:
        read_split(split)
    assert err.value.offending[0].startswith(f"{die}=")


@pytest.mark.parametrize("name", [PROCESS_LOGS_FILE, LABELS_FILE, METADATA_FILE])
def test_duplicate_die_id(copy_split, name):
    split = copy_split(n=5)
    table = _table(split, name)
    die = table["die_id"].iloc[2]
    _write(pd.concat([table, table.iloc[[2]]]), split, name)
    with pytest.raises(DuplicateIdError) as err:
        read_split(split)
    assert err.value.offending == [die]
    assert name in str(err.value) and die in str(err.value)


def test_two_images_for_one_die(copy_split):
    split = copy_split(n=3)
    png = sorted((split / IMAGES_DIR).iterdir())[0]
    shutil.copy(png, png.with_suffix(".tif"))
    with pytest.raises(DuplicateIdError) as err:
        read_split(split)
    assert err.value.offending == [png.stem]


def test_process_row_without_image(copy_split):
    split = copy_split(n=6)
    die = sorted(_table(split, PROCESS_LOGS_FILE)["die_id"])[4]
    (split / IMAGES_DIR / f"{die}.png").unlink()
    with pytest.raises(IdMismatchError) as err:
        read_split(split)
    assert err.value.offending == [f"{die} (no images)"]
    assert die in str(err.value)


def test_die_without_label(copy_split):
    split = copy_split(n=6)
    labels = _table(split, LABELS_FILE)
    die = labels["die_id"].iloc[0]
    _write(labels.iloc[1:], split, LABELS_FILE)
    with pytest.raises(IdMismatchError) as err:
        read_split(split)
    assert err.value.offending == [f"{die} (no labels)"]


def test_image_without_any_table_row(copy_split, tiny_data):
    split = copy_split(n=4)
    stray = sorted((tiny_data / "val" / IMAGES_DIR).iterdir())[-1]
    shutil.copy(stray, split / IMAGES_DIR / stray.name)
    with pytest.raises(IdMismatchError) as err:
        read_split(split)
    missing = {f"{stray.stem} (no {m})" for m in ("process_logs", "metadata", "labels")}
    assert set(err.value.offending) == missing


def test_note_for_unknown_die(copy_split):
    split = copy_split(n=4)
    notes = _notes(split)
    notes["Z-L9999-W01-D001"] = "particles observed near the edge"
    _set_notes(split, notes)
    with pytest.raises(IdMismatchError) as err:
        read_split(split)
    assert err.value.offending == ["Z-L9999-W01-D001 (note only)"]
    assert "Z-L9999-W01-D001" in str(err.value)


@pytest.mark.parametrize(
    "content", ["{not json", "[1, 2]", '{"A-L0001-W01-D001": 3}'], ids=["syntax", "list", "number"]
)
def test_bad_notes_file(copy_split, content):
    split = copy_split(n=3)
    (split / NOTES_FILE).write_text(content)
    with pytest.raises(InvalidValueError) as err:
        read_split(split)
    assert NOTES_FILE in str(err.value)


def test_non_image_file_in_images(copy_split):
    split = copy_split(n=3)
    (split / IMAGES_DIR / "readme.txt").write_text("not a die")
    with pytest.raises(ImageFormatError) as err:
        read_split(split)
    assert err.value.offending == ["readme.txt"]
    assert "readme.txt" in str(err.value)


def test_unreadable_csv(copy_split):
    split = copy_split(n=3)
    (split / METADATA_FILE).write_bytes(b"")
    with pytest.raises(InvalidValueError) as err:
        read_split(split)
    assert METADATA_FILE in str(err.value)
