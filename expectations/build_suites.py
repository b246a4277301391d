"""Build the expectation suites from the dataset contract and write them as reviewed JSON.

The JSON files in `expectations/suites/` are the reviewed artefact; this module is how they
are made, so the ranges and value sets cannot drift from `model/schema.py` and
`model/process_parameters.csv`. After changing either, regenerate and review the diff:

    python -m expectations.build_suites
"""

from __future__ import annotations

import json
from pathlib import Path

from expectations.catalog import SUITES_DIR
from model.cache import ALLOWED_FORMATS
from model.schema import (
    FABS,
    IMAGE_SIZE,
    METADATA_COLUMNS,
    NUM_CLASSES,
    SHIFTS,
    WAFER_ZONES,
    ProcessParameter,
    process_parameters,
)

PLAUSIBLE_SIGMAS = 15.0  # physical envelope: nominal +- this many sigma (defects reach ~12)
MAX_EMPTY_SHARE = 0.05  # sensor dropouts allowed per process column (synthetic: 0.2%)
MAX_OUT_OF_RANGE_SHARE = 0.01  # implausible readings (glitches) tolerated per column
NOTE_MAX_CHARS = 500  # operator notes are one-liners (synthetic: under 100 characters)
IMAGE_MEAN_RANGE = (20.0, 235.0)  # mean intensity 0-255: neither black nor blown out
IMAGE_MIN_STD = 2.0  # below this an image is (nearly) constant
NUMERIC_TYPES = ["float64", "float32", "int64", "int32"]
INTEGER_TYPES = ["int64", "int32"]
ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|\+00:?00)$"
MODALITIES = ("process_logs", "labels", "metadata", "images")  # columns of the die_ids table


def _expect(kind: str, meta: dict | None = None, **kwargs) -> dict:
    """One expectation in the JSON form that `gx.ExpectationSuite` accepts."""
    return {"type": f"expect_{kind}", "kwargs": kwargs, "meta": meta or {}}


def _id_column() -> list[dict]:
    return [
        _expect("column_values_to_not_be_null", column="die_id"),
        _expect("column_values_to_be_unique", column="die_id"),
    ]


def _table(columns: list[str], min_rows: int = 1) -> list[dict]:
    return [
        _expect("table_columns_to_match_set", column_set=columns, exact_match=True),
        _expect("table_row_count_to_be_between", min_value=min_rows, max_value=None),
    ]


def plausible_range(p: ProcessParameter) -> tuple[float, float]:
    """The physically plausible interval of one parameter.

    nominal +- PLAUSIBLE_SIGMAS sigma; a quantity with a positive nominal is a magnitude
    (pressure, flow, time, count, temperature of a heated step) and cannot go below 0, and a
    percentage cannot exceed 100. Signed quantities (offsets, nominal 0) keep both sides.
    """
    low, high = p.nominal - PLAUSIBLE_SIGMAS * p.sigma, p.nominal + PLAUSIBLE_SIGMAS * p.sigma
    if p.nominal > 0:
        low = max(low, 0.0)
    if p.unit == "pct":
        high = min(high, 100.0)
    return round(low, 6), round(high, 6)


def process_logs_suite() -> dict:
    """All 48 parameters present, numeric, few empty cells, inside their plausible range."""
    params = process_parameters()
    expectations = _table(["die_id", *(p.name for p in params)]) + _id_column()
    for p in params:
        low, high = plausible_range(p)
        meta = {"unit": p.unit, "process_step": p.process_step}
        meta |= {"nominal": p.nominal, "sigma": p.sigma}
        expectations += [
            _expect("column_values_to_be_in_type_list", column=p.name, type_list=NUMERIC_TYPES),
            _expect("column_values_to_not_be_null", column=p.name, mostly=1.0 - MAX_EMPTY_SHARE),
            _expect(
                "column_values_to_be_between",
                meta,
                column=p.name,
                min_value=low,
                max_value=high,
                mostly=1.0 - MAX_OUT_OF_RANGE_SHARE,
            ),
        ]
    return _suite("process_logs", expectations, f"ranges: nominal +- {PLAUSIBLE_SIGMAS} sigma")


def labels_suite() -> dict:
    """One label per die, a known class."""
    expectations = _table(["die_id", "label"]) + _id_column()
    expectations += [
        _expect("column_values_to_not_be_null", column="label"),
        _expect("column_values_to_be_in_set", column="label", value_set=list(range(NUM_CLASSES))),
    ]
    return _suite("labels", expectations, "label is a class index 0-4")


def notes_suite() -> dict:
    """Notes that exist are text of bounded length (a missing note is allowed)."""
    expectations = _table(["die_id", "note"], min_rows=0) + _id_column()  # may have no notes
    expectations += [
        _expect("column_values_to_be_of_type", column="note", type_="str"),
        _expect(
            "column_value_lengths_to_be_between",
            column="note",
            min_value=1,
            max_value=NOTE_MAX_CHARS,
        ),
    ]
    return _suite("notes", expectations, "one row per JSON entry; empty text is no note")


def metadata_suite() -> dict:
    """Known fabs, shifts and zones, integer coordinates, ISO 8601 UTC timestamps."""
    expectations = _table(list(METADATA_COLUMNS)) + _id_column()
    expectations += [
        _expect("column_values_to_not_be_null", column=c) for c in METADATA_COLUMNS[1:]
    ]
    expectations += [
        _expect("column_values_to_be_in_set", column="fab", value_set=list(FABS)),
        _expect("column_values_to_be_in_set", column="shift", value_set=list(SHIFTS)),
        _expect("column_values_to_be_in_set", column="wafer_zone", value_set=list(WAFER_ZONES)),
        _expect("column_values_to_match_regex", column="chamber", regex=_chamber_pattern()),
        _expect("column_values_to_be_in_type_list", column="die_x", type_list=INTEGER_TYPES),
        _expect("column_values_to_be_in_type_list", column="die_y", type_list=INTEGER_TYPES),
        _expect("column_values_to_match_regex", column="timestamp", regex=ISO_UTC),
        _expect("column_values_to_be_dateutil_parseable", column="timestamp"),
    ]
    return _suite("metadata", expectations, "value sets from model/schema.py")


def _chamber_pattern() -> str:
    return f"^(?:{'|'.join(FABS)})-CH[0-9]+$"


def image_stats_suite() -> dict:
    """Every image decodes, is 256x256 RGB, is not constant and is neither black nor white."""
    low, high = IMAGE_MEAN_RANGE
    columns = ["die_id", "file", "format", "height", "width", "channels", "mean", "std", "error"]
    expectations = _table(columns) + _id_column()
    expectations += [
        _expect("column_values_to_be_null", column="error"),
        _expect("column_values_to_be_in_set", column="format", value_set=list(ALLOWED_FORMATS)),
        _expect("column_values_to_be_in_set", column="height", value_set=[IMAGE_SIZE]),
        _expect("column_values_to_be_in_set", column="width", value_set=[IMAGE_SIZE]),
        _expect("column_values_to_be_in_set", column="channels", value_set=[3]),
        _expect("column_values_to_be_between", column="mean", min_value=low, max_value=high),
        _expect("column_values_to_be_between", column="std", min_value=IMAGE_MIN_STD),
    ]
    return _suite("image_stats", expectations, "one row per file in images/; 0-255 scale")


def die_ids_suite() -> dict:
    """Every die is present in every modality (notes excepted)."""
    expectations = _table(["die_id", *MODALITIES]) + _id_column()
    expectations += [
        _expect("column_values_to_be_in_set", column=m, value_set=[True]) for m in MODALITIES
    ]
    return _suite("die_ids", expectations, "one row per id seen anywhere in the split")


def _suite(name: str, expectations: list[dict], basis: str) -> dict:
    meta = {"generated_by": "python -m expectations.build_suites", "basis": basis}
    return {"name": name, "meta": meta, "expectations": expectations}


BUILDERS = {
    "process_logs": process_logs_suite,
    "labels": labels_suite,
    "notes": notes_suite,
    "metadata": metadata_suite,
    "image_stats": image_stats_suite,
    "die_ids": die_ids_suite,
}


def render(suite: dict) -> str:
    """The suite as it is stored: indented, key order kept, newline at the end."""
    return json.dumps(suite, indent=2) + "\n"


def main(out_dir: Path = SUITES_DIR) -> list[Path]:
    """Write every suite to `out_dir`; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in BUILDERS.items():
        path = out_dir / f"{name}.json"
        path.write_text(render(build()))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
