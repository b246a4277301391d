"""The die filter: read from a URL, written back to one, and run against a real SQLite log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa

from service.bench_dashboard import inspection_record, record_all
from service.die_search import DieFilter, FilterError, all_dies, csv_text, find_dies, parse_filter
from service.inspection_log import InspectionLog
from service.log_tables import METADATA, engine_url
from service.wafer_map import lot_summaries

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_a_filter_survives_its_own_query_string():
    params = {"die": "D0", "wafer": "A-L1-W01", "lot": "L1", "fab": "A", "chamber": "A-CH1",
              "class": "scratch", "flagged": "yes", "feedback": "overridden",
              "start": "2026-03-01T08:00", "end": "2026-03-02", "page": "3"}  # fmt: skip
    found = parse_filter(params)
    assert found.start == T0 and found.end == datetime(2026, 3, 2, tzinfo=UTC)
    again = parse_filter({k: v[0] for k, v in parse_qs(found.query_string()).items()})
    assert again == found
    assert "page" not in found.query_string(page=1)
    assert DieFilter().query_string() == "" and not DieFilter(page=4).narrows


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"class": "Scratch"}, "class must be one of"),
        ({"feedback": "yes"}, "feedback must be one of"),
        ({"end": "2026-13-01"}, "not a date or time"),
        ({"start": "2026-03-02", "end": "2026-03-02"}, "ends before it starts"),
        ({"page": "-1"}, "page must be a whole number"),
        ({"lot": "L" * 201}, "lot is longer than 200"),
    ],
)
def test_a_filter_that_cannot_be_used_says_why(params, reason):
    with pytest.raises(FilterError, match=reason):
        parse_filter(params)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def log(request, tmp_path_factory):
    """Twelve dies over two fabs, every third flagged, one confirmed and one overridden, in a
    SQLite file or the session's PostgreSQL database."""
    url = f"sqlite:///{tmp_path_factory.mktemp('search') / 'log.db'}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        engine = sa.create_engine(engine_url(url))
        METADATA.drop_all(engine)
        engine.dispose()
    records = []
    for i in range(12):
        fab = "AB"[i % 2]
        meta = {"lot_id": f"L{i % 3}", "fab": fab, "chamber": f"{fab}-CH1", "die_x": i, "die_y": 0}
        if i == 11:
            meta = {"fab": fab}  # no lot, chamber or position
        record = inspection_record(f"{fab}-W1-D{i:02d}_%", f"{fab}-W1", T0 + timedelta(hours=i),
                                   3 if i % 3 == 0 else 0, i % 3 == 0, meta)  # fmt: skip
        records.append(record)
    record_all(url, records, [("A-W1-D00_%", "confirm", None), ("B-W1-D03_%", "override", 1)])
    with InspectionLog(url) as opened:
        yield opened


def ids(rows) -> list[int]:
    return [int(r["die_id"][6:8]) for r in rows]


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (DieFilter(), list(range(11, -1, -1))),
        (DieFilter(fab="A"), [10, 8, 6, 4, 2, 0]),
        (DieFilter(lot="L1", chamber="B-CH1"), [7, 1]),
        (DieFilter(defect_class="pattern"), [9, 6, 3, 0]),
        (DieFilter(flagged="no", fab="B"), [11, 7, 5, 1]),
        (DieFilter(feedback="confirmed"), [0]),
        (DieFilter(feedback="overridden"), [3]),
        (DieFilter(feedback="none", flagged="yes"), [9, 6]),
        (DieFilter(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=4)), [3, 2]),
        (DieFilter(die="d0"), list(range(9, -1, -1))),
        (DieFilter(die="_%"), list(range(11, -1, -1))),  # wildcards are plain characters
        (DieFilter(die="1_"), [11, 1]),
        (DieFilter(wafer="B-W1", die="0"), [9, 7, 5, 3, 1]),
    ],
)
def test_each_filter_keeps_exactly_its_dies(log, found, expected):
    assert ids(all_dies(log, found)) == expected
    assert ids(all_dies(log, found, oldest_first=True)) == expected[::-1]


def test_pages_split_the_newest_first_list(log):
    pages = [find_dies(log, DieFilter(page=p), page_size=5) for p in (1, 2, 3, 4)]
    assert [ids(p.rows) for p in pages] == [[11, 10, 9, 8, 7], [6, 5, 4, 3, 2], [1, 0], []]
    assert {(p.total, p.pages) for p in pages} == {(12, 3)}


def test_the_csv_has_a_line_per_die_with_its_feedback(log):
    lines = csv_text(all_dies(log, DieFilter(fab="B"))).splitlines()
    assert lines[0].startswith("received_at,die_id,wafer_id,lot_id,fab,chamber,die_x,die_y")
    assert len(lines) == 1 + 6
    overridden = next(line for line in lines if "B-W1-D03" in line)
    assert ",overridden,particle,bench," in overridden
    no_position = next(line for line in lines if "B-W1-D11" in line)
    assert ",B,,,," in no_position  # lot, chamber, x and y are empty, not made up


def test_lots_are_summed_up_latest_first(log):
    lots = [
        (r["lot_id"], r["fab"], r["wafers"], r["dies"], r["flagged"]) for r in lot_summaries(log)
    ]
    assert lots == [("L1", "B", 2, 4, 0), ("L0", "B", 2, 4, 4), ("L2", "B", 2, 3, 0)]
    assert lot_summaries(log)[0]["latest"] == T0 + timedelta(hours=10)
