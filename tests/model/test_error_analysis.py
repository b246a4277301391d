"""Error analysis on constructed predictions: examples, confused pairs, notes, parameter bins."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from model.data import DieSplit
from model.error_analysis import (
    BINS,
    bin_index,
    confused_pairs,
    error_analysis,
    heatmap,
    pick_examples,
    top_deviations,
)
from model.evaluate import evaluation_from_predictions
from model.schema import parameter_names

NAMES = parameter_names()


def probs_for(classes, confidence) -> np.ndarray:
    classes, confidence = np.asarray(classes), np.broadcast_to(confidence, len(classes))
    probs = np.repeat(((1 - confidence) / 4)[:, None], 5, axis=1)
    probs[np.arange(len(classes)), classes] = confidence
    return probs


def make_case(labels, pred, confidence=0.9, notes=None, process=None, region_map=None):
    """An Evaluation and the matching data of len(labels) dies."""
    n = len(labels)
    ids = [f"D{i:03d}" for i in range(n)]
    notes = notes if notes is not None else [""] * n
    process = process if process is not None else np.zeros((n, 48), np.float32)
    images = np.full((n, 16, 16, 3), 120, np.uint8)
    meta = pd.DataFrame(index=pd.Index(ids, name="die_id"))
    part = DieSplit(ids, images, process, notes, np.array(labels), meta, "digest")
    ev = evaluation_from_predictions(
        "test",
        ids,
        np.array(labels),
        probs_for(pred, confidence),
        0.5,
        np.array([bool(t) for t in notes]),
        region_map=region_map,
    )
    return ev, SimpleNamespace(splits={"test": part})


def test_escapes_come_first_then_the_rest_by_confidence():
    labels = [0, 0, 3, 4, 1, 2, 0]
    pred = [1, 2, 0, 0, 2, 2, 0]
    conf = [0.6, 0.95, 0.7, 0.9, 0.8, 0.9, 0.9]
    ev, _ = make_case(labels, pred, conf)
    assert pick_examples(ev, 20) == [3, 2, 1, 4, 0]
    assert pick_examples(ev, 3) == [3, 2, 1]


def test_each_example_names_classes_parameters_and_note():
    process = np.zeros((3, 48), np.float32)
    process[0, [5, 7, 9, 11, 13, 20]] = [4.0, -6.0, 1.0, -2.0, 3.0, 0.5]
    process[0, 30] = np.nan
    ev, data = make_case([4, 0, 0], [0, 0, 0], notes=["etch drift", "", ""], process=process)
    result = error_analysis(ev, data, "test")
    (ex,) = result["examples"]
    assert (ex["die_id"], ex["true"], ex["predicted"], ex["escape"]) == (
        "D000",
        "process_deviation",
        "good",
        True,
    )
    assert ex["note"] == "etch drift" and ex["has_note"]
    assert [t["name"] for t in ex["top_parameters"]] == [NAMES[j] for j in (7, 5, 13, 11, 9)]
    assert ex["top_parameters"][0]["z"] == -6.0
    assert sum(ex["probabilities"].values()) == pytest.approx(1.0)
    assert ex["confidence"] == pytest.approx(0.9)


def test_a_die_without_a_note_says_so_and_nan_parameters_are_skipped():
    z = np.full(48, np.nan, np.float32)
    z[[1, 2]] = [1.0, -3.0]
    assert [t["name"] for t in top_deviations(z)] == [NAMES[2], NAMES[1]]
    ev, data = make_case([1], [0])
    assert error_analysis(ev, data)["examples"][0]["note"] == "no note"


def test_confused_pairs_are_counted_and_sorted():
    labels = [4, 4, 4, 0, 0, 1, 2]
    pred = [0, 0, 3, 4, 0, 2, 2]
    pairs = confused_pairs(np.array(labels), np.array(pred))
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("process_deviation", "good", 2),
        ("good", "process_deviation", 1),
        ("particle", "scratch", 1),
        ("process_deviation", "pattern", 1),
    ]
    assert pairs[0]["share_of_true"] == pytest.approx(2 / 3)


def test_error_rates_with_and_without_a_note():
    labels = [0, 0, 0, 0, 1, 1]
    pred = [0, 0, 1, 1, 0, 1]  # dies 2, 3, 4 wrong; 2 and 4 have no note
    notes = ["a", "b", "", "c", "", "d"]
    ev, data = make_case(labels, pred, notes=notes)
    by_note = error_analysis(ev, data)["notes"]
    assert (by_note["with_note"]["k"], by_note["with_note"]["n"]) == (1, 4)
    assert (by_note["without_note"]["k"], by_note["without_note"]["n"]) == (2, 2)
    assert by_note["difference"] == pytest.approx(1.0 - 0.25)


def test_bins_follow_the_z_edges_and_missing_cells_have_their_own():
    z = np.array([-5, -3, -2.5, -2, 0, 2, 2.5, 3, 7, np.nan])
    assert [BINS[i] for i in bin_index(z)] == [
        "<-3",
        "-3..-2",
        "-3..-2",
        "-2..2",
        "-2..2",
        "2..3",
        "2..3",
        ">3",
        ">3",
        "missing",
    ]


def test_errors_clustering_in_a_parameter_range_stand_out():
    n = 100
    process = np.random.default_rng(0).uniform(-1.5, 1.5, (n, 48)).astype(np.float32)
    process[:12, 4] = 3.5  # 12 dies far out on one parameter, 10 of them wrong
    process[:3, 9] = np.nan  # 3 dies with a dropout: too few to report
    labels = np.zeros(n, int)
    pred = labels.copy()
    pred[:10] = 1
    pred[50:55] = 2
    ev, data = make_case(labels, pred, process=process)
    result = error_analysis(ev, data, min_bin_dies=10)
    top = result["parameter_bins"][0]
    assert (top["parameter"], top["bin"], top["n"], top["k"]) == (NAMES[4], ">3", 12, 10)
    assert top["above_overall"] and top["lift"] == pytest.approx((10 / 12) / 0.15)
    assert all(b["n"] >= 10 for b in result["parameter_bins"])
    assert len(result["parameter_bins"]) <= 5
    missing = [b for b in result["parameter_bins_all"] if b["bin"] == "missing"]
    assert [(b["parameter"], b["n"]) for b in missing] == [(NAMES[9], 3)]


def test_heatmap_upsamples_square_maps_only():
    grid = np.arange(16, dtype=np.float32)
    up = heatmap(grid / grid.sum(), (32, 40))
    assert up.shape == (32, 40) and 0.0 <= up.min() < 0.05 and 0.95 < up.max() <= 1.0
    assert up[0, 0] < up[-1, -1]  # the last region held the most attention
    assert heatmap(np.ones(12), (32, 32)) is None


def test_the_panel_figure_holds_image_and_card_per_example():
    labels, pred = [1, 2, 3, 0, 0], [0, 0, 0, 1, 0]
    region = np.random.default_rng(1).dirichlet(np.ones(16), size=5)
    ev, data = make_case(labels, pred, region_map=region)
    result = error_analysis(ev, data, num_examples=3)
    assert len(result["examples"]) == 3 and result["n_errors"] == 4
    assert isinstance(result["figure"], Figure)
    assert len(result["figure"].axes) == 2 * 3  # an image and a text card per example
    ev, data = make_case([0, 1], [0, 1])
    assert error_analysis(ev, data)["figure"] is None


def test_data_of_other_dies_is_refused():
    ev, data = make_case([0, 1], [0, 0])
    data.splits["test"].ids[0] = "other"
    with pytest.raises(ValueError, match="different dies"):
        error_analysis(ev, data)
