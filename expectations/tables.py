"""Read one split's files into the plain tables the suites check, without judging them.

Unlike `model.contract.read_split`, nothing here refuses data: bad values stay in the
tables so that the expectations can name them. Only a file that cannot be read at all
raises `TableReadError`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from expectations.build_suites import MODALITIES
from model.schema import LABELS_FILE, METADATA_FILE, NOTES_FILE, PROCESS_LOGS_FILE


class TableReadError(ValueError):
    """A split file is missing or cannot be parsed at all."""


def read_csv(path: Path) -> pd.DataFrame:
    """A contract CSV with die ids kept as text; other columns as pandas infers them."""
    if not path.is_file():
        raise TableReadError(f"missing file {path.name}")
    try:
        return pd.read_csv(path, dtype={"die_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise TableReadError(f"{path.name} is not a readable CSV file ({err})") from err


def process_logs(split_dir: Path) -> pd.DataFrame:
    return read_csv(split_dir / PROCESS_LOGS_FILE)


def labels(split_dir: Path) -> pd.DataFrame:
    return read_csv(split_dir / LABELS_FILE)


def metadata(split_dir: Path) -> pd.DataFrame:
    return read_csv(split_dir / METADATA_FILE)


def notes(split_dir: Path) -> pd.DataFrame:
    """One row per JSON entry (repeated keys kept); "" or null text becomes a missing note."""
    path = split_dir / NOTES_FILE
    if not path.is_file():
        raise TableReadError(f"missing file {path.name}")
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=list)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TableReadError(f"{path.name} is not valid JSON ({err})") from err
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        raise TableReadError(f"{path.name} must hold one object of die_id to text")
    rows = [(die, None if text in ("", None) else text) for die, text in pairs]
    return pd.DataFrame(rows, columns=["die_id", "note"], dtype=object)


def die_ids(tables: dict[str, pd.DataFrame | None], note_ids: list[str]) -> pd.DataFrame:
    """Which modality holds each die id seen anywhere in the split.

    Args:
        tables: modality name (see MODALITIES) to its table, None when it could not be read.
        note_ids: ids that have an operator note (a note for an unknown die is flagged).
    Returns:
        die_id plus one bool column per modality; None where that modality is unreadable.
    """
    known = {
        m: set(t["die_id"].dropna()) if t is not None and "die_id" in t else None
        for m, t in ((m, tables.get(m)) for m in MODALITIES)
    }
    everyone = set().union(*(ids for ids in known.values() if ids is not None), note_ids)
    ids = sorted(everyone)
    out = pd.DataFrame({"die_id": pd.Series(ids, dtype=object)})
    for m, present in known.items():
        out[m] = [i in present for i in ids] if present is not None else [None] * len(ids)
    return out
