"""Trend ranges, exact bands and the chart's parts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest

from model.metrics import clopper_pearson
from monitoring.history import History
from service.bench_dashboard import inspection_record, record_all
from service.die_search import FilterError
from service.inspection_log import InspectionLog
from service.trend_chart import trend_svg
from service.trends import Trends, collect_trends, parse_range, rates

NOW = datetime(2026, 3, 10, 14, 25, tzinfo=UTC)


@pytest.mark.parametrize(("k", "n"), [(0, 7), (3, 36), (12, 12), (1, 2000), (40, 90)])
def test_the_bands_are_exact_clopper_pearson(k, n):
    (figure,) = rates([k], [n])
    lo, hi = clopper_pearson(k, n)
    assert figure["rate"] == k / n
    assert figure["lo"] == pytest.approx(lo, abs=1e-9) and figure["hi"] == pytest.approx(
        hi, abs=1e-9
    )


def test_an_empty_bucket_has_no_rate():
    (figure,) = rates([0], [0])
    assert figure["n"] == 0 and all(math.isnan(figure[k]) for k in ("rate", "lo", "hi"))


def test_the_default_range_is_the_last_week_by_day_and_three_days_go_by_hour():
    week = parse_range({}, now=NOW)
    assert week.bucket == "day" and week.end == datetime(2026, 3, 10, 15, tzinfo=UTC)
    assert week.start == datetime(2026, 3, 3, tzinfo=UTC) and len(week.times()) == 8
    short = parse_range({"start": "2026-03-08T10:30", "end": "2026-03-10T00:00"}, now=NOW)
    assert short.bucket == "hour" and short.start == datetime(2026, 3, 8, 10, tzinfo=UTC)
    assert len(short.times()) == 38 and short.index(datetime(2026, 3, 8, 11, 59, tzinfo=UTC)) == 1
    shared = {k: v[0] for k, v in parse_qs(short.query_string()).items()}
    assert parse_range(shared) == short


def test_a_range_of_more_than_2000_buckets_is_refused():
    with pytest.raises(FilterError, match="more than 2000 hours"):
        parse_range({"start": "2025-12-01", "bucket": "hour"}, now=NOW)
    assert parse_range({"start": "2025-12-01", "bucket": "day"}, now=NOW).bucket == "day"


def test_the_chart_draws_gaps_bands_events_and_drift():
    span = parse_range({"start": "2026-03-10T00:00", "end": "2026-03-10T04:00"}, now=NOW)
    flag = rates([1, 0, 2, 0], [10, 0, 10, 5])  # the second hour saw no die
    trends = Trends(span, span.times(), flag, [5.0, math.nan, 6.0, 5.5], [9.0, math.nan, 12.0, 9.5],
                    [None] * 4, [None] * 4, {"process": [False, None, True, True]})  # fmt: skip
    trends.events = [{"time": span.start + timedelta(hours=2), "kind": "promotion",
                      "text": "v2 promoted to champion"}]  # fmt: skip
    svg = str(trend_svg(trends))
    assert svg.count('<polygon class="band"') == 2  # the flag rate, cut at the empty hour
    assert svg.count("<polyline") == 2 + 2 * 2  # flag rate, p50 and p99 in two runs each
    assert svg.count('class="drifted"') == 2 and svg.count('class="clean"') == 1
    assert svg.count('class="event"') == 1 and "v2 promoted to champion" in svg


def test_without_the_monitor_history_or_registry_the_log_figures_stand_with_notes(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    at = datetime(2026, 3, 10, 1, 30, tzinfo=UTC)
    records = [inspection_record(f"D{i}", "W1", at, 0, i == 0, {}, 4.0 + i) for i in range(4)]
    record_all(url, records, [])
    span = parse_range({"start": "2026-03-10T00:00", "end": "2026-03-10T03:00"}, now=NOW)
    history = History(url, create=False)  # the monitor never ran: no tables
    with InspectionLog(url) as log:
        trends = collect_trends(log, history, ("bogus-scheme://nowhere", "m"), span)
    history.close()
    assert [f["n"] for f in trends.flag] == [0, 4, 0] and trends.flag[1]["rate"] == 0.25
    assert trends.latency_p50[1] == 5.0 and trends.latency_p99[1] == 7.0  # nearest rank
    assert trends.escape == [None] * 3 and trends.drift == {} and trends.events == []
    assert trends.notes == [
        "The monitor's history cannot be read (OperationalError).",
        "The registry's events cannot be read (UnsupportedModelRegistryStoreURIException).",
    ]
