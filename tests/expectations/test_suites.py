"""The stored suite JSON is what the builders make from the contract, so neither can drift."""

from __future__ import annotations

import csv
from pathlib import Path

import great_expectations as gx
import pytest

from expectations import tables
from expectations.build_suites import BUILDERS, PLAUSIBLE_SIGMAS, render
from expectations.catalog import SUITE_NAMES, load_suite, suite_path
from expectations.gx_run import SuiteRunner
from model.schema import FABS, NUM_CLASSES, SHIFTS, WAFER_ZONES

TABLE = Path("model/process_parameters.csv")


def test_every_suite_has_a_builder_and_a_file():
    assert set(SUITE_NAMES) == set(BUILDERS)
    assert {p.stem for p in suite_path(SUITE_NAMES[0]).parent.glob("*.json")} == set(SUITE_NAMES)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_stored_json_matches_its_builder(name):
    hint = "regenerate with `python -m expectations.build_suites` and review the diff"
    assert suite_path(name).read_text() == render(BUILDERS[name]()), hint


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_suite_loads_into_great_expectations(name):
    suite = gx.ExpectationSuite(**load_suite(name))
    assert suite.name == name and len(suite.expectations) == len(load_suite(name)["expectations"])


def _ranges(suite: dict) -> dict[str, dict]:
    return {
        e["kwargs"]["column"]: e
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_between"
    }


def test_process_ranges_follow_the_parameter_table():
    """Read the table independently of model.schema: one range per row, nominal inside it."""
    with TABLE.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    ranges = _ranges(load_suite("process_logs"))
    assert list(ranges) == [r["name"] for r in rows] and len(rows) == 48
    for row in rows:
        nominal, sigma = float(row["nominal"]), float(row["sigma"])
        e = ranges[row["name"]]
        low, high = e["kwargs"]["min_value"], e["kwargs"]["max_value"]
        assert e["meta"]["unit"] == row["unit"]
        assert (e["meta"]["nominal"], e["meta"]["sigma"]) == (nominal, sigma)
        assert high == pytest.approx(min(nominal + PLAUSIBLE_SIGMAS * sigma, _cap(row)))
        expected_low = nominal - PLAUSIBLE_SIGMAS * sigma
        assert low == pytest.approx(max(expected_low, 0.0) if nominal > 0 else expected_low)


def _cap(row: dict) -> float:
    return 100.0 if row["unit"] == "pct" else float("inf")


def test_process_columns_are_exactly_die_id_and_the_table():
    with TABLE.open(newline="") as handle:
        names = [r["name"] for r in csv.DictReader(handle)]
    first = load_suite("process_logs")["expectations"][0]
    assert first["type"] == "expect_table_columns_to_match_set"
    assert first["kwargs"] == {"column_set": ["die_id", *names], "exact_match": True}


def test_value_sets_come_from_the_schema():
    sets = {
        (suite, e["kwargs"]["column"]): e["kwargs"]["value_set"]
        for suite in ("labels", "metadata")
        for e in load_suite(suite)["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set"
    }
    assert sets[("labels", "label")] == list(range(NUM_CLASSES))
    assert sets[("metadata", "fab")] == list(FABS)
    assert sets[("metadata", "shift")] == list(SHIFTS)
    assert sets[("metadata", "wafer_zone")] == list(WAFER_ZONES)


def test_a_split_without_any_note_passes_the_notes_suite(tmp_path):
    (tmp_path / "operator_notes.json").write_text("{}")
    runner = SuiteRunner(tmp_path / "docs", "no-notes")
    summary = runner.validate("val", "notes", tables.notes(tmp_path), "die_id")
    assert summary["success"], summary
