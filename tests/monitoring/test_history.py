"""The check history on a SQLite file, and the more-than-six-consecutive-hours trigger rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitoring.drift import DriftResult, FamilyDrift
from monitoring.history import History

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
METRIC = "drift_process"


@pytest.fixture
def history(tmp_path):
    opened = History(f"sqlite:///{tmp_path / 'log.db'}")
    yield opened
    opened.close()


def check(at: datetime, drifted: bool, score=0.2, skipped="", window=HOUR) -> DriftResult:
    """A drift check of the process family (window: the hour, or `window`, before `at`)."""
    family = FamilyDrift("process", None if skipped else score, 0.1, drifted, skipped=skipped)
    return DriftResult(at - window, at, 120, {"process": family})


def run_hours(history: History, flags: list[bool], start=T0, step=HOUR) -> datetime:
    """Append one check per step; returns the time of the last."""
    at = start
    for i, flag in enumerate(flags):
        at = start + i * step
        history.append(check(at, flag))
    return at


def test_append_and_series(history):
    history.append(check(T0, True, score=0.25))
    history.append(check(T0 + HOUR, False, score=float("nan")))
    history.append(check(T0 + 2 * HOUR, True, skipped="12 dies in the window"))
    series = history.series(METRIC)
    assert [s["checked_at"] for s in series] == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert series[0] | {} == {
        "metric": METRIC,
        "checked_at": T0,
        "window_start": T0 - HOUR,
        "value": 0.25,
        "threshold": 0.1,
        "flagged": True,
        "skipped": "",
    }
    assert series[1]["value"] is None  # NaN is stored as null
    assert series[2]["flagged"] is False and series[2]["skipped"]  # skipped is never flagged
    assert [s["checked_at"] for s in history.series(METRIC, since=T0 + HOUR)] == [
        T0 + HOUR,
        T0 + 2 * HOUR,
    ]
    assert history.metrics() == [METRIC]


def test_six_flagged_hours_do_not_trigger_seven_do(history):
    last = run_hours(history, [True] * 6)
    assert not history.sustained(METRIC, last)
    history.append(check(last + HOUR, True))
    assert history.sustained(METRIC, last + HOUR)
    assert not history.sustained("drift_notes", last + HOUR)


def test_a_gap_breaks_the_run(history):
    last = run_hours(history, [True] * 3)
    last = run_hours(history, [True] * 4, start=last + 2 * HOUR)  # a 2 h silence
    assert not history.sustained(METRIC, last)
    last = run_hours(history, [True] * 3, start=last + HOUR)
    assert history.sustained(METRIC, last)  # seven flagged checks after the gap


def test_a_clean_hour_resets_the_run(history):
    last = run_hours(history, [True] * 3 + [False] + [True] * 6)
    assert not history.sustained(METRIC, last)
    history.append(check(last + HOUR, True))
    assert history.sustained(METRIC, last + HOUR)


def test_a_skipped_hour_resets_the_run(history):
    last = run_hours(history, [True] * 6)
    history.append(check(last + HOUR, True, skipped="3 dies in the window"))
    assert not history.sustained(METRIC, last + HOUR)


def test_a_stale_run_is_not_sustained(history):
    last = run_hours(history, [True] * 7)
    assert history.sustained(METRIC, last + HOUR)
    assert not history.sustained(METRIC, last + 2 * HOUR)  # no check for 2 h


def test_frequent_checks_must_still_cover_more_than_six_hours(history):
    step = timedelta(minutes=10)
    last = run_hours(history, [True] * 7, step=step)
    assert not history.sustained(METRIC, last)  # 7 checks cover 2 h only
    last = run_hours(history, [True] * 24, start=last + step, step=step)
    assert not history.sustained(METRIC, last)  # 31 checks: 1 h + 30 x 10 min = 6 h exactly
    history.append(check(last + step, True))
    assert history.sustained(METRIC, last + step)


def test_a_compressed_clock_counts_checks_in_windows(history):
    """A simulation's hour is 3 s and its checks, slower than that, come 13 s apart: two
    of them span the scaled 6 hours, yet a run still needs seven, one per window."""
    hour = timedelta(seconds=3)
    scaled = {"hours": 6 * 3 / 3600, "max_gap_hours": 1.0, "window_hours": 3 / 3600}
    at = [T0 + i * timedelta(seconds=13) for i in range(7)]
    for t in at:
        history.append(check(t, True, window=hour))
        assert history.sustained(METRIC, t, **scaled) == (t == at[-1])


def test_schedule_jitter_does_not_matter(history):
    jitter = [0, 40, -20, 55, 3, -1, 30]
    for i, s in enumerate(jitter):
        history.append(check(T0 + i * HOUR + timedelta(seconds=s), True))
    assert history.sustained(METRIC, T0 + 6 * HOUR + timedelta(seconds=31))


def test_only_checks_after_the_last_retrain_count(history):
    last = run_hours(history, [True] * 7)
    assert history.sustained(METRIC, last)
    history.record_trigger(last, [METRIC], "process drift", "/reports/x", "run-1")
    assert history.last_trigger()["flow_run_id"] == "run-1"
    last = run_hours(history, [True] * 6, start=last + HOUR)
    assert not history.sustained(METRIC, last)
    history.append(check(last + HOUR, True))
    assert history.sustained(METRIC, last + HOUR)
    assert history.last_trigger(before=T0) is None


def test_latest_holds_each_metrics_newest_check(history, tmp_path):
    assert History(f"sqlite:///{tmp_path / 'none.db'}", create=False).latest() == {}
    assert history.latest() == {}
    run_hours(history, [True, False])
    history.append(check(T0 + 2 * HOUR, True, skipped="12 dies in the window"))
    latest = history.latest()
    assert list(latest) == [METRIC]
    assert latest[METRIC]["checked_at"] == T0 + 2 * HOUR and latest[METRIC]["skipped"]
