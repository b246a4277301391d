"""Fairness audit: subgroups, gaps and their flag, recommendations, on constructed dies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.evaluate import evaluation_from_predictions
from model.fairness import (
    fairness_audit,
    group_stats,
    largest_gap,
    recommendations,
    season_of,
    subgroups,
)


def case(labels, pred, has_note, **columns):
    """An Evaluation of len(labels) dies and its metadata (given columns, day shift default)."""
    n = len(labels)
    ids = [f"D{i:04d}" for i in range(n)]
    probs = np.full((n, 5), 0.025)
    probs[np.arange(n), pred] = 0.9
    ev = evaluation_from_predictions(
        "test", ids, np.array(labels), probs, 0.5, np.array(has_note, bool)
    )
    meta = pd.DataFrame({"timestamp": "2026-01-10T08:00:00Z", **columns}, index=ids)
    return ev, meta.rename_axis("die_id")


def test_season_comes_from_the_month():
    stamps = [
        "2026-12-31T23:00:00Z",
        "2026-01-15T00:00:00Z",
        "2026-02-01T00:00:00Z",
        "2026-03-01T00:00:00Z",
        "2026-05-31T00:00:00Z",
        "2026-06-01T00:00:00Z",
        "2026-08-31T00:00:00Z",
        "2026-09-01T00:00:00Z",
        "2026-11-30T00:00:00Z",
        "bad",
    ]
    assert season_of(stamps).tolist() == [
        "winter",
        "winter",
        "winter",
        "spring",
        "spring",
        "summer",
        "summer",
        "autumn",
        "autumn",
        "unknown",
    ]


def test_subgroups_cover_zone_note_presence_and_season_in_die_order():
    ev, meta = case(
        [0, 1, 0],
        [0, 1, 0],
        [True, False, True],
        wafer_zone=["edge", "center", "middle"],
        fab=["A", "B", "A"],
        timestamp=["2026-07-01", "2026-01-01", "2026-10-01"],
    )
    frame = subgroups(ev, meta.iloc[::-1])  # metadata order does not matter
    assert frame["wafer_zone"].tolist() == ["edge", "center", "middle"]
    assert frame["note"].tolist() == ["present", "absent", "present"]
    assert frame["season"].tolist() == ["summer", "winter", "autumn"]
    assert "chamber" not in frame  # a column the metadata lacks is not audited
    audit = fairness_audit(ev, meta.reset_index())  # die_id as a column works too
    assert list(audit["dimensions"]["wafer_zone"]["groups"]) == ["center", "middle", "edge"]
    assert list(audit["dimensions"]["note"]["groups"]) == ["present", "absent"]
    assert list(audit["dimensions"]) == ["fab", "wafer_zone", "note", "season"]


def test_group_counts_and_rates_per_subgroup():
    labels = [0, 0, 0, 1, 1, 2, 0, 4]
    pred = [0, 1, 0, 0, 1, 2, 0, 4]
    shift = ["day"] * 5 + ["night"] * 3
    ev, meta = case(labels, pred, [True] * 8, shift=shift)
    day = fairness_audit(ev, meta)["dimensions"]["shift"]["groups"]["day"]
    assert (day["n"], day["n_defective"], day["n_good"]) == (5, 2, 3)
    assert (day["escape"]["k"], day["escape"]["n"], day["fpr"]["k"], day["fpr"]["n"]) == (
        1,
        2,
        1,
        3,
    )
    night = fairness_audit(ev, meta)["dimensions"]["shift"]["groups"]["night"]
    assert night["escape"]["rate"] == 0.0 and night["fpr"]["n"] == 1


def groups_of(**rates):
    """Groups of 100 defective and 100 good dies with the given escape counts."""
    out = {}
    for name, escapes in rates.items():
        y = np.array([1] * 100 + [0] * 100)
        pred = y.copy()
        pred[:escapes] = 0
        out[name] = group_stats(y, pred)
    return out


def test_a_gap_is_flagged_only_when_the_intervals_do_not_overlap():
    gap = largest_gap(groups_of(A=1, B=20, C=5), "escape")
    assert (gap["high"], gap["low"], gap["significant"]) == ("B", "A", True)
    assert gap["gap"] == pytest.approx(0.19) and not gap["small_groups_included"]
    close = largest_gap(groups_of(A=3, B=6), "escape")
    assert close["high"] == "B" and not close["significant"]
    assert largest_gap(groups_of(A=3), "escape") is None


def test_small_groups_stay_out_of_the_gap_while_two_large_ones_exist():
    groups = groups_of(A=2, B=4)
    groups["tiny"] = group_stats(np.array([1, 1, 0]), np.array([0, 0, 0]))  # 100% escape
    gap = largest_gap(groups, "escape")
    assert gap["groups_compared"] == ["A", "B"] and gap["high"] == "B"
    only_small = {"x": groups["tiny"], "y": group_stats(np.array([1, 0]), np.array([1, 0]))}
    gap = largest_gap(only_small, "escape")
    assert gap["small_groups_included"] and (gap["high"], gap["low"]) == ("x", "y")


def test_recommendations_follow_the_numbers():
    dims = {"fab": {"groups": groups_of(A=1, B=20)}}
    dims["fab"]["groups"]["C"] = group_stats(np.array([1] * 5 + [0] * 50), np.zeros(55, int))
    for d in dims.values():
        d["escape_gap"] = largest_gap(d["groups"], "escape")
        d["fpr_gap"] = largest_gap(d["groups"], "fpr")
    text = recommendations(dims)
    assert any("too few defective dies to judge escape rate in fab C (n=5)" in t for t in text)
    assert not any("too few good dies" in t for t in text)
    assert any(
        t.startswith("escape-rate gap between fab B (20.00%) and A (1.00%) is significant")
        for t in text
    )
    above = [t for t in text if t.startswith("escape rate above the 1% target in fab B (20.00%")]
    assert len(above) == 1 and "C (" not in above[0]  # C: 5/5 escapes, but too few to judge
    assert not any(t.startswith("no significant") for t in text)


def test_without_a_significant_gap_the_audit_says_so():
    labels = np.array([1, 0] * 40)
    ev, meta = case(labels, labels, [True, False] * 40, fab=["A", "A", "B", "B"] * 20)
    audit = fairness_audit(ev, meta)
    assert audit["overall"]["n"] == 80
    assert audit["recommendations"][-1].startswith("no significant escape-rate or FPR gap")
    assert audit["dimensions"]["fab"]["escape_gap"]["significant"] is False
