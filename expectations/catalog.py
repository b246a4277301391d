"""The stored expectation suites: their names and how to load one."""

from __future__ import annotations

import json
from pathlib import Path

SUITES_DIR = Path(__file__).with_name("suites")
SUITE_NAMES = ("process_logs", "labels", "notes", "metadata", "image_stats", "die_ids")


def suite_path(name: str) -> Path:
    """The JSON file of one suite."""
    if name not in SUITE_NAMES:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(SUITE_NAMES)}")
    return SUITES_DIR / f"{name}.json"


def load_suite(name: str) -> dict:
    """One suite as a dict (name, meta, expectations) ready for `gx.ExpectationSuite(**d)`."""
    return json.loads(suite_path(name).read_text())
