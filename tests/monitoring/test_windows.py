"""Rolling window figures against hand-computed values, and the alerts at their thresholds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from model.metrics import clopper_pearson
from monitoring.config import MonitorConfig
from monitoring.windows import latency_percentiles, window_report

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LOW_MINIMUMS = MonitorConfig(min_defective_labels=1, min_good_labels=1, min_inspections=1)


def inspection(i: int, flagged=False, latency=10.0, note="", version="3", hours_ago=1.0):
    return {
        "inspection_id": f"i{i:04d}",
        "received_at": NOW - timedelta(hours=hours_ago),
        "flagged": flagged,
        "latency_ms": latency,
        "operator_notes": note,
        "model_version": version,
    }


def label(record: dict, value: int, minutes_after=5) -> dict:
    at = record["received_at"] + timedelta(minutes=minutes_after)
    return {"inspection_id": record["inspection_id"], "label": value, "created_at": at}


def labelled_population(defective: int, escapes: int, good: int, false_positives: int):
    """Inspections with labels: `escapes` of the defective dies passed, `false_positives`
    of the good dies flagged."""
    rows, feedback = [], []
    for i in range(defective):
        rows.append(inspection(i, flagged=i >= escapes, note="n"))
        feedback.append(label(rows[-1], 2))
    for j in range(good):
        rows.append(inspection(1000 + j, flagged=j < false_positives, note="n"))
        feedback.append(label(rows[-1], 0))
    return rows, feedback


def test_escape_rate_and_fpr_with_their_intervals():
    rows, feedback = labelled_population(defective=10, escapes=2, good=20, false_positives=5)
    rows.append(inspection(5000, flagged=True))  # unlabelled: counts nowhere
    report = window_report(rows, feedback, NOW, LOW_MINIMUMS)
    assert (report.inspections, report.labelled) == (31, 30)
    assert (report.escape["k"], report.escape["n"], report.escape["rate"]) == (2, 10, 0.2)
    assert (report.fpr["k"], report.fpr["n"], report.fpr["rate"]) == (5, 20, 0.25)
    assert (report.escape["lo"], report.escape["hi"]) == clopper_pearson(2, 10, 0.95)
    assert (report.fpr["lo"], report.fpr["hi"]) == clopper_pearson(5, 20, 0.95)
    assert {a.name for a in report.alerts} >= {"escape_rate", "fpr"}


def test_label_minimums_silence_the_rate_alerts():
    rows, feedback = labelled_population(defective=99, escapes=10, good=99, false_positives=50)
    report = window_report(rows, feedback, NOW, MonitorConfig())
    assert report.escape["rate"] > 0.015 and report.fpr["rate"] > 0.2
    assert not {a.name for a in report.alerts} & {"escape_rate", "fpr"}


@pytest.mark.parametrize(("escapes", "fires"), [(3, False), (4, True)])
def test_escape_alert_above_1_5_percent(escapes, fires):
    rows, feedback = labelled_population(defective=200, escapes=escapes, good=0, false_positives=0)
    report = window_report(rows, feedback, NOW, MonitorConfig())
    assert report.escape["rate"] == escapes / 200  # 1.5% exactly does not alert
    assert ("escape_rate" in {a.name for a in report.alerts}) is fires


@pytest.mark.parametrize(("false_positives", "fires"), [(20, False), (21, True)])
def test_fpr_alert_above_20_percent(false_positives, fires):
    rows, feedback = labelled_population(100, 0, good=100, false_positives=false_positives)
    report = window_report(rows, feedback, NOW, MonitorConfig())
    assert ("fpr" in {a.name for a in report.alerts}) is fires


def test_the_latest_label_counts_and_other_windows_do_not():
    inside = inspection(1, flagged=False)
    old = inspection(2, flagged=False, hours_ago=25)  # before the 24 h window
    at_now = inspection(3, flagged=False, hours_ago=0)  # the window is [now - 24 h, now)
    feedback = [label(inside, 0), label(inside, 3, minutes_after=9), label(old, 2)]
    report = window_report([inside, old, at_now], feedback, NOW, LOW_MINIMUMS)
    assert report.inspections == 1 and report.labelled == 1
    assert (report.escape["k"], report.escape["n"]) == (1, 1)  # relabelled defective, passed
    assert report.fpr["n"] == 0


def test_nearest_rank_latency_percentiles():
    assert latency_percentiles([float(v) for v in range(100, 0, -1)]) == {
        "n": 100,
        "p50": 50.0,
        "p95": 95.0,
        "p99": 99.0,
    }
    assert latency_percentiles([float(v) for v in range(1, 201)])["p99"] == 198.0
    assert latency_percentiles([None, 7.0])["p99"] == 7.0
    assert latency_percentiles([None]) == {"n": 0, "p50": None, "p95": None, "p99": None}


@pytest.mark.parametrize(("slowest", "fires"), [(300.0, False), (301.0, True)])
def test_latency_alert_when_p99_is_above_300_ms(slowest, fires):
    rows = [inspection(i, latency=20.0) for i in range(98)]
    rows += [inspection(98, latency=slowest), inspection(99, latency=slowest)]
    report = window_report(rows, [], NOW, MonitorConfig())
    assert report.latency_ms["p99"] == slowest and report.latency_ms["p50"] == 20.0
    assert ("latency_p99_ms" in {a.name for a in report.alerts}) is fires


@pytest.mark.parametrize(("without_notes", "fires"), [(49, True), (50, False)])
def test_missing_note_alert_when_the_rate_drops_below_half(without_notes, fires):
    rows = [inspection(i, note="" if i < without_notes else "ok") for i in range(100)]
    rows[0]["operator_notes"] = "   "  # blank counts as missing
    report = window_report(rows, [], NOW, MonitorConfig())
    assert report.missing_notes == {"k": without_notes, "n": 100, "rate": without_notes / 100}
    assert ("missing_note_rate" in {a.name for a in report.alerts}) is fires


def test_latency_and_notes_need_the_minimum_of_inspections():
    rows = [inspection(i, latency=900.0, note="busy") for i in range(99)]
    assert window_report(rows, [], NOW, MonitorConfig()).alerts == []
    fired = window_report(rows, [], NOW, replace(MonitorConfig(), min_inspections=99)).alerts
    assert {a.name for a in fired} == {"latency_p99_ms", "missing_note_rate"}


def test_per_model_counts():
    rows = [inspection(i, flagged=i % 2 == 0, version="3") for i in range(6)]
    rows += [inspection(10 + i, flagged=True, version="4") for i in range(3)]
    feedback = [label(rows[0], 0), label(rows[1], 1), label(rows[6], 0)]
    models = window_report(rows, feedback, NOW, LOW_MINIMUMS).models
    assert {v: (m["served"], m["flagged"], m["labelled"]) for v, m in models.items()} == {
        "3": (6, 3, 2),
        "4": (3, 3, 1),
    }
    assert (models["3"]["escape"]["k"], models["3"]["escape"]["n"]) == (1, 1)
    assert (models["4"]["fpr"]["k"], models["4"]["fpr"]["n"]) == (1, 1)


def test_checks_for_the_history():
    rows, feedback = labelled_population(defective=10, escapes=2, good=0, false_positives=0)
    checks = {c.metric: c for c in window_report(rows, feedback, NOW, LOW_MINIMUMS).checks()}
    assert checks["escape_rate"].flagged and checks["escape_rate"].threshold == 0.015
    assert checks["fpr"].skipped == "no data" and not checks["fpr"].flagged
    assert checks["missing_note_rate"].value == 0.0
