"""The dataset contract: classes, the 48 process parameters, split and file names.

The project's own copy of the contract; nothing here reads files outside the package
except `process_parameters.csv`, which ships beside this module.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CLASS_NAMES = ("good", "particle", "scratch", "pattern", "process_deviation")
NUM_CLASSES = len(CLASS_NAMES)
GOOD = 0

SPLITS = ("train", "val", "test")
IMAGE_SIZE = 256
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

IMAGES_DIR = "images"
PROCESS_LOGS_FILE = "process_logs.csv"
NOTES_FILE = "operator_notes.json"
LABELS_FILE = "labels.csv"
METADATA_FILE = "metadata.csv"

METADATA_COLUMNS = (
    "die_id",
    "wafer_id",
    "lot_id",
    "fab",
    "chamber",
    "shift",
    "die_x",
    "die_y",
    "wafer_zone",
    "timestamp",
)
FABS = ("A", "B", "C")
SHIFTS = ("day", "night")
WAFER_ZONES = ("center", "middle", "edge")


@dataclass(frozen=True)
class ProcessParameter:
    """One logged process parameter with its nominal value and natural spread."""

    name: str
    unit: str
    process_step: str
    nominal: float
    sigma: float


@lru_cache(maxsize=1)
def process_parameters() -> tuple[ProcessParameter, ...]:
    """The 48 process parameters, in contract order."""
    path = Path(__file__).with_name("process_parameters.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return tuple(
        ProcessParameter(
            name=r["name"],
            unit=r["unit"],
            process_step=r["process_step"],
            nominal=float(r["nominal"]),
            sigma=float(r["sigma"]),
        )
        for r in rows
    )


def parameter_names() -> tuple[str, ...]:
    """Names of the 48 process parameters, in contract order."""
    return tuple(p.name for p in process_parameters())


def process_steps() -> dict[str, list[int]]:
    """Parameter column indices grouped by process step."""
    steps: dict[str, list[int]] = {}
    for i, p in enumerate(process_parameters()):
        steps.setdefault(p.process_step, []).append(i)
    return steps
