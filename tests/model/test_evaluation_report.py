"""The evaluation report: sections and figures in the page, the numbers in the JSON, determinism."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from model.data import DieSplit
from model.error_analysis import error_analysis
from model.evaluate import evaluation_from_predictions
from model.evaluation_report import SECTIONS, jsonable, write_report
from model.fairness import fairness_audit


def build(with_baseline: bool = True, all_right: bool = False, seed: int = 0):
    """Evaluation, error analysis and fairness audit of 60 constructed dies."""
    rng = np.random.default_rng(seed)
    n = 60
    ids = [f"D{i:03d}" for i in range(n)]
    labels = rng.integers(0, 5, n)
    probs = rng.dirichlet(np.ones(5), n)
    if all_right:
        probs = np.full((n, 5), 0.01)
        probs[np.arange(n), labels] = 0.96
    notes = [("slight discoloration" if i % 3 else "") for i in range(n)]
    has_note = np.array([bool(t) for t in notes])
    base = {"baseline_probs": rng.dirichlet(np.ones(5), n), "baseline_threshold": 0.6}
    ev = evaluation_from_predictions(
        "test",
        ids,
        labels,
        probs,
        0.5,
        has_note,
        rng.dirichlet(np.ones(5), n),
        region_map=rng.dirichlet(np.ones(16), n),
        **(base if with_baseline else {}),
    )
    meta = pd.DataFrame(
        {
            "fab": rng.choice(["A", "B", "C"], n),
            "chamber": rng.choice(["A-CH1", "B-CH2"], n),
            "shift": rng.choice(["day", "night"], n),
            "wafer_zone": rng.choice(["edge", "center"], n),
            "timestamp": rng.choice(["2026-01-05T10:00:00Z", "2026-07-05T10:00:00Z"], n),
        },
        index=pd.Index(ids, name="die_id"),
    )
    process = rng.normal(0, 1.5, (n, 48)).astype(np.float32)
    images = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    part = DieSplit(ids, images, process, notes, labels, meta, "digest")
    data = SimpleNamespace(splits={"test": part})
    return ev, error_analysis(ev, data, num_examples=4), fairness_audit(ev, meta)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One report of the constructed dies: (folder, Evaluation)."""
    folder = tmp_path_factory.mktemp("report")
    ev, errors, fairness = build()
    paths = write_report(ev, errors, fairness, folder, "Test <report>")
    assert paths == (folder / "evaluation.html", folder / "evaluation.json")
    return folder, ev


def test_the_page_has_every_section_and_embedded_figures(written):
    folder, _ = written
    page = (folder / "evaluation.html").read_text()
    for title in SECTIONS.values():
        assert f">{title}</h2>" in page
    assert page.count("data:image/png;base64,") == 5  # confusion, notes, fairness, baseline, errors
    assert "Test &lt;report&gt;" in page and "<script" not in page
    assert "a sub-1% escape rate cannot be shown" in page
    assert sorted(p.name for p in (folder / "figures").iterdir()) == [
        "baseline.png",
        "confusion.png",
        "errors.png",
        "fairness.png",
        "notes.png",
    ]


def test_the_json_holds_every_part_and_no_nan(written):
    folder, ev = written
    text = (folder / "evaluation.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    payload = json.loads(text)
    assert list(payload) == ["title", "evaluation", "error_analysis", "fairness"]
    evaluation = payload["evaluation"]
    assert {"model", "baseline", "paired", "notes", "warnings", "class_counts"} <= set(evaluation)
    assert evaluation["model"]["confusion"] == ev.metrics["model"]["confusion"]
    assert "figure" not in payload["error_analysis"]
    assert len(payload["error_analysis"]["examples"]) == 4
    dims = payload["fairness"]["dimensions"]
    assert list(dims) == ["fab", "chamber", "shift", "wafer_zone", "note", "season"]


def test_the_same_inputs_write_the_same_files(written, tmp_path):
    folder, _ = written
    write_report(*build(), tmp_path, "Test <report>")
    for name in ("evaluation.json", "evaluation.html"):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes()


def test_without_baseline_or_errors_the_page_says_so(tmp_path):
    ev, errors, fairness = build(with_baseline=False, all_right=True)
    assert errors["figure"] is None and errors["n_errors"] == 0
    html_path, json_path = write_report(ev, errors, fairness, tmp_path, "t")
    page = html_path.read_text()
    assert "No vision-only baseline was given." in page
    assert page.count("data:image/png;base64,") == 3
    assert json.loads(json_path.read_text())["evaluation"]["baseline"] is None


def test_jsonable_converts_numpy_and_non_finite_values():
    value = {1: np.float32(0.5), "a": (np.int64(3), float("nan")), "b": np.array([1.0, np.inf])}
    assert jsonable(value) == {"1": 0.5, "a": [3, None], "b": [1.0, None]}
    assert json.dumps(jsonable({"x": np.bool_(True)})) == '{"x": true}'
    with pytest.raises(ValueError):
        json.dumps({"x": float("nan")}, allow_nan=False)
