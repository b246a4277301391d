"""Read one split folder of the dataset contract and refuse anything that breaks it.

Every refusal is a named `DatasetError` that lists the offending ids, columns or files.
Missing notes and empty process cells are allowed by the contract: they are counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model.schema import (
    IMAGE_SUFFIXES,
    IMAGES_DIR,
    LABELS_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    NOTES_FILE,
    NUM_CLASSES,
    PROCESS_LOGS_FILE,
    parameter_names,
)

SHOWN = 10  # offending items named in a message


class DatasetError(ValueError):
    """A data batch breaks the dataset contract."""

    def __init__(self, reason: str, offending: list | None = None):
        self.reason = reason
        self.offending = list(offending or [])
        listed = ", ".join(map(str, self.offending[:SHOWN]))
        more = f" (and {len(self.offending) - SHOWN} more)" if len(self.offending) > SHOWN else ""
        super().__init__(f"{reason}: {listed}{more}" if self.offending else reason)


class MissingFileError(DatasetError):
    """A file or folder the contract requires is absent."""


class MissingColumnError(DatasetError):
    """A table lacks required columns (or has columns the contract does not know)."""


class InvalidValueError(DatasetError):
    """A cell holds a value that cannot be read (e.g. text in a numeric column)."""


class UnknownLabelError(DatasetError):
    """A label is not one of the classes 0-4."""


class DuplicateIdError(DatasetError):
    """A die id appears more than once in one table."""


class IdMismatchError(DatasetError):
    """A die id is present in one modality and not in another."""


class ImageFormatError(DatasetError):
    """An image is unreadable, not an image, or of the wrong size or mode."""


@dataclass
class SplitTables:
    """One split's tables, aligned on the sorted die ids."""

    split_dir: Path
    ids: list[str]
    process: pd.DataFrame  # 48 columns in contract order, float, NaN where a sensor dropped out
    notes: list[str]  # "" when the die has no note
    labels: np.ndarray | None  # int64 (N,), None for an unlabelled production batch
    metadata: pd.DataFrame  # contract metadata columns, indexed by die_id
    image_paths: list[Path]

    @property
    def empty_cells(self) -> int:
        return int(self.process.isna().to_numpy().sum())

    @property
    def missing_notes(self) -> int:
        return sum(1 for n in self.notes if not n)


def read_split(split_dir: str | Path, require_labels: bool = True) -> SplitTables:
    """Read and check one split folder.

    Args:
        split_dir: e.g. ``data/train``.
        require_labels: False for an unlabelled production batch.
    Returns:
        The split's tables, aligned on sorted die ids.
    Raises:
        DatasetError (a subclass naming the problem) when the folder breaks the contract.
    """
    split_dir = Path(split_dir)
    required = [PROCESS_LOGS_FILE, METADATA_FILE, NOTES_FILE, IMAGES_DIR]
    required += [LABELS_FILE] if require_labels else []
    absent = [name for name in required if not (split_dir / name).exists()]
    if absent:
        raise MissingFileError(f"{split_dir} lacks required files", absent)
    process = _read_process(split_dir / PROCESS_LOGS_FILE)
    metadata = _read_table(split_dir / METADATA_FILE, list(METADATA_COLUMNS))
    notes = _read_notes(split_dir / NOTES_FILE)
    images = _index_images(split_dir / IMAGES_DIR)
    modalities = {"process_logs": set(process.index), "metadata": set(metadata.index)}
    modalities["images"] = set(images)
    labels = None
    if (split_dir / LABELS_FILE).exists():
        label_table = _read_labels(split_dir / LABELS_FILE)
        modalities["labels"] = set(label_table.index)
    ids = sorted(modalities["process_logs"])
    _check_same_ids(modalities, notes)
    if "labels" in modalities:
        labels = label_table.loc[ids, "label"].to_numpy(np.int64)
    return SplitTables(
        split_dir=split_dir,
        ids=ids,
        process=process.loc[ids],
        notes=[notes.get(i, "") for i in ids],
        labels=labels,
        metadata=metadata.loc[ids],
        image_paths=[images[i] for i in ids],
    )


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"die_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InvalidValueError(f"{path.name} is not a readable CSV file ({err})") from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MissingColumnError(f"{path.name} lacks columns", missing)
    dupes = table.loc[table["die_id"].duplicated(), "die_id"].tolist()
    if dupes:
        raise DuplicateIdError(f"{path.name} repeats die ids", dupes)
    return table.set_index("die_id")


def _read_process(path: Path) -> pd.DataFrame:
    names = list(parameter_names())
    table = _read_table(path, ["die_id", *names])
    unknown = [c for c in table.columns if c not in names]
    if unknown:
        raise MissingColumnError(
            f"{path.name} has columns that are not process parameters", unknown
        )
    table = table[names]
    numeric = table.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & table.notna()
    if bad.to_numpy().any():
        rows = bad.any(axis=1)
        cells = [f"{die}:{col}" for die, col in bad[rows].stack()[lambda s: s].index]
        raise InvalidValueError(f"{path.name} has non-numeric values", cells)
    infinite = ~np.isfinite(numeric.to_numpy()) & numeric.notna().to_numpy()
    if infinite.any():
        raise InvalidValueError(
            f"{path.name} has infinite values", numeric.index[infinite.any(1)].tolist()
        )
    return numeric.astype(np.float64)


def _read_labels(path: Path) -> pd.DataFrame:
    table = _read_table(path, ["die_id", "label"])
    values = pd.to_numeric(table["label"], errors="coerce")
    bad = values.isna() | (values % 1 != 0) | (values < 0) | (values >= NUM_CLASSES)
    if bad.any():
        offending = [f"{d}={v}" for d, v in table.loc[bad, "label"].items()]
        raise UnknownLabelError(f"{path.name} has labels outside 0-{NUM_CLASSES - 1}", offending)
    return table.assign(label=values.astype(np.int64))


def _read_notes(path: Path) -> dict[str, str]:
    try:
        notes = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidValueError(f"{path.name} is not valid JSON ({err})") from err
    if not isinstance(notes, dict):
        raise InvalidValueError(f"{path.name} must hold an object of die_id to text")
    bad = [k for k, v in notes.items() if v is not None and not isinstance(v, str)]
    if bad:
        raise InvalidValueError(f"{path.name} has notes that are not text", bad)
    return {k: (v or "").strip() for k, v in notes.items()}


def _index_images(folder: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    dupes, foreign = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            foreign.append(path.name)
        elif path.stem in images:
            dupes.append(path.stem)
        else:
            images[path.stem] = path
    if foreign:
        raise ImageFormatError(f"{folder} holds files that are not images", foreign)
    if dupes:
        raise DuplicateIdError(f"{folder} has several images for one die", dupes)
    return images


def _check_same_ids(modalities: dict[str, set[str]], notes: dict[str, str]) -> None:
    everyone = set.union(*modalities.values())
    problems = []
    for name, ids in modalities.items():
        problems += [f"{i} (no {name})" for i in sorted(everyone - ids)]
    problems += [f"{i} (note only)" for i in sorted(set(notes) - everyone)]
    if problems:
        raise IdMismatchError("die ids differ between modalities", problems)
