"""The inspection log on a SQLite file and on PostgreSQL: records, queries, feedback, outages."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from service.inspection_log import (
    FeedbackError,
    InspectionLog,
    LogUnavailableError,
    UnknownDieError,
)
from service.log_tables import METADATA, added_decision_record, engine_url

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
FAST = {"retry_initial": 0.05, "retry_max": 0.2, "connect_timeout": 2}


def make_record(die_id="A-L0042-W07-D113", at=T0, flagged=True, defect_class=2, **changes):
    """An inspection record as the service builds it (champion and candidate in shadow)."""
    decision = {
        "role": "champion",
        "model_version": "3",
        "model_kind": "multimodal",
        "defect_class": defect_class,
        "class_name": "scratch",
        "confidence": 0.9,
        "defect_probability": 0.95 if flagged else 0.1,
        "flagged": flagged,
        "probabilities": {"good": 0.05, "scratch": 0.9},
        "latency_ms": 12.5,
    }
    record = {
        "inspection_id": uuid.uuid4().hex,
        "die_id": die_id,
        "wafer_id": die_id.rsplit("-", 1)[0],
        "received_at": at,
        "image_ref": "ab/" + "ab" * 32 + ".png",
        "image_sha256": "ab" * 32,
        "process_log": {"etch_rate": 101.5, "chamber_pressure": 3.2},
        "missing_parameters": ["humidity"],
        "operator_notes": "faint line near the edge",
        "metadata": {"fab": "A", "shift": "day"},
        "route": "shadow",
        "served_by": "champion",
        "defect_class": defect_class,
        "class_name": "scratch",
        "confidence": 0.9,
        "flagged": flagged,
        "model_version": "3",
        "model_kind": "multimodal",
        "decisions": [decision, decision | {"role": "candidate", "model_version": "4"}],
        "anomalous_parameters": [{"name": "etch_rate", "value": 101.5, "unit": "nm/min", "z": 3.1}],
        "explanation": "a scratch; etch rate high",
        "region_map": list(np.full(4, 0.25, dtype=np.float32)),
        "latency_ms": 14.0,
    }
    return record | changes


def answered_then_shadow(die_id="A-L0042-W07-D113", **changes) -> tuple[dict, dict]:
    """An inspection record as answered (the champion's decision alone) and the record that
    adds the candidate's decision, scored after the answer."""
    full = make_record(die_id, **changes)
    champion, candidate = full["decisions"]
    added = added_decision_record(full["inspection_id"], die_id, full["received_at"], candidate)
    return full | {"decisions": [champion]}, added


def counts(log: InspectionLog, *names: str) -> tuple:
    status = log.status()
    return tuple(status[name] for name in names)


def wait_for(condition, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(params=["sqlite", "postgres"])
def log_url(request, tmp_path) -> str:
    """An empty log database: a SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(engine_url(url))
    METADATA.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def log(log_url):
    with InspectionLog(log_url, **FAST) as started:
        yield started


def test_record_round_trip(log):
    record = make_record(region_map=[np.float32(0.5), float("nan"), 0.25, 0.25])
    log.record(record)
    assert log.flush(10)
    got = log.get(record["die_id"])
    assert got["stored"] is True
    assert got["inspection_id"] == record["inspection_id"]
    assert got["received_at"] == T0 and got["received_at"].tzinfo is not None
    for name in ("process_log", "missing_parameters", "metadata", "anomalous_parameters"):
        assert got[name] == record[name]
    assert got["region_map"] == [0.5, None, 0.25, 0.25]  # NaN is stored as null
    assert [d["role"] for d in got["decisions"]] == ["champion", "candidate"]
    assert got["decisions"][1]["model_version"] == "4"
    assert counts(log, "buffered", "written", "dropped", "rejected") == (0, 1, 0, 0)
    assert log.status()["database_ok"] is True


def test_recent_is_newest_first_and_filters(log):
    records = [
        make_record("A-L0001-W01-D001", at=T0, flagged=True),
        make_record("A-L0001-W01-D002", at=T0 + timedelta(minutes=1), flagged=False),
        make_record("A-L0001-W01-D003", at=T0 + timedelta(minutes=2), flagged=True),
    ]
    for r in records:
        log.record(r)
    assert log.flush(10)
    assert [r["die_id"] for r in log.recent()] == ["A-L0001-W01-D003", "A-L0001-W01-D001"]
    everything = log.recent(limit=2, flagged_only=False)
    assert [r["die_id"] for r in everything] == ["A-L0001-W01-D003", "A-L0001-W01-D002"]
    later = log.recent(flagged_only=False, since=T0 + timedelta(seconds=30))
    assert len(later) == 2 and all(len(r["decisions"]) == 2 for r in later)


def test_get_returns_latest_inspection_and_none_for_unknown(log):
    first = make_record(at=T0, defect_class=1)
    second = make_record(at=T0 + timedelta(hours=1), defect_class=3)
    log.record(first)
    log.record(second)
    assert log.flush(10)
    assert log.get(first["die_id"])["inspection_id"] == second["inspection_id"]
    assert log.get_inspection(first["inspection_id"])["defect_class"] == 1
    assert log.get("B-L0000-W01-D000") is None


def test_decisions_rows_for_shadow_comparison(log):
    record = make_record()
    log.record(record)
    assert log.flush(10)
    rows = log.decisions(since=T0)
    assert {(d["role"], d["model_version"]) for d in rows} == {
        ("champion", "3"),
        ("candidate", "4"),
    }
    assert all(d["die_id"] == record["die_id"] and d["received_at"] == T0 for d in rows)
    assert log.decisions(since=T0 + timedelta(days=1)) == []


def test_a_decision_added_after_the_answer_joins_its_inspection(log_url):
    log = InspectionLog(log_url, **FAST)  # not started: both stay buffered at first
    inspection, added = answered_then_shadow()
    log.record(inspection)
    assert [d["role"] for d in log.get(inspection["die_id"])["decisions"]] == ["champion"]
    log.record(added)
    for got in (log.get(inspection["die_id"]), log.recent()[0]):
        assert [d["role"] for d in got["decisions"]] == ["champion", "candidate"]
    assert {d["role"] for d in log.decisions()} == {"champion", "candidate"}
    log.start()
    assert log.flush(10)
    got = log.get_inspection(inspection["inspection_id"])
    assert got["stored"] and [d["role"] for d in got["decisions"]] == ["champion", "candidate"]
    assert got["decisions"][1]["model_version"] == "4"
    assert got["served_by"] == "champion" and got["model_version"] == "3"
    rows = log.decisions(since=T0)
    assert sorted((d["role"], d["model_version"]) for d in rows) == [
        ("candidate", "4"),
        ("champion", "3"),
    ]
    assert counts(log, "written", "rejected", "buffered") == (2, 0, 0)
    assert log.close()


def test_an_added_decision_without_its_inspection_is_refused_alone(log_url):
    log = InspectionLog(log_url, **FAST)
    _, orphan = answered_then_shadow("A-L0001-W01-D001")  # its inspection was never logged
    inspection, added = answered_then_shadow("A-L0001-W01-D002")
    for record in (orphan, inspection, added):
        log.record(record)
    log.start()
    assert log.flush(10)
    assert counts(log, "written", "rejected", "buffered") == (2, 1, 0)
    got = log.get(inspection["die_id"])
    assert got["stored"] and [d["role"] for d in got["decisions"]] == ["champion", "candidate"]
    assert {d["inspection_id"] for d in log.decisions()} == {inspection["inspection_id"]}
    assert log.close()


def test_window_returns_one_time_range_oldest_first(log):
    hours = [0, 1, 2, 3]
    for h in hours:
        log.record(make_record(f"A-L0001-W01-D00{h}", at=T0 + timedelta(hours=h), latency_ms=h))
    assert log.flush(10)
    rows = log.window(T0 + timedelta(hours=1), T0 + timedelta(hours=3))  # [start, end)
    assert [r["die_id"] for r in rows] == ["A-L0001-W01-D001", "A-L0001-W01-D002"]
    assert rows[0]["process_log"] == {"etch_rate": 101.5, "chamber_pressure": 3.2}
    assert rows[0]["received_at"] == T0 + timedelta(hours=1) and "decisions" not in rows[0]
    slim = log.window(T0, T0 + timedelta(days=1), fields=("latency_ms", "flagged"))
    assert set(slim[0]) == {"inspection_id", "received_at", "latency_ms", "flagged"}
    assert [r["latency_ms"] for r in slim] == [0.0, 1.0, 2.0, 3.0]
    sample = log.window(T0, T0 + timedelta(days=1), fields=("die_id",), limit=2)
    assert len(sample) == 2 and sample[0]["received_at"] < sample[1]["received_at"]
    with pytest.raises(ValueError, match="no field password"):
        log.window(T0, T0 + timedelta(hours=1), fields=("password",))


def test_window_includes_buffered_records(log_url):
    log = InspectionLog(log_url, **FAST)  # not started: the record stays buffered
    record = make_record()
    log.record(record)
    rows = log.window(T0, T0 + timedelta(minutes=1), fields=("operator_notes",))
    assert rows == [
        {
            "inspection_id": record["inspection_id"],
            "received_at": T0,
            "operator_notes": "faint line near the edge",
        }
    ]
    assert log.window(T0 + timedelta(minutes=1), T0 + timedelta(hours=1)) == []
    log.close(timeout=0.5)


def test_buffered_record_is_visible_and_takes_feedback(log_url):
    log = InspectionLog(log_url, **FAST)  # not started: the record stays buffered
    record = make_record()
    log.record(record)
    got = log.get(record["die_id"])
    assert got["stored"] is False and got["inspection_id"] == record["inspection_id"]
    assert log.recent()[0]["inspection_id"] == record["inspection_id"]
    log.start()
    row, created = log.add_feedback(record["die_id"], "confirm", "kim")
    assert created and row["label"] == record["defect_class"]
    assert log.close()


def test_feedback_is_idempotent_and_latest_wins(log):
    record = make_record(defect_class=2)
    log.record(record)
    first, created = log.add_feedback(record["die_id"], "confirm", "kim", comment="ok")
    assert created and first["label"] == 2 and first["true_class"] is None
    again, created = log.add_feedback(record["die_id"], "confirm", "kim", comment="ok")
    assert not created and again["feedback_id"] == first["feedback_id"]
    override, created = log.add_feedback(record["die_id"], "override", "lee", true_class=4)
    assert created and override["label"] == 4 and override["predicted_class"] == 2
    assert [f["label"] for f in log.feedback()] == [4]
    assert [f["verdict"] for f in log.feedback(latest_only=False)] == ["confirm", "override"]


def test_concurrent_duplicate_feedback_stores_one_row(log):
    record = make_record()
    log.record(record)
    assert log.flush(10)
    barrier, results = threading.Barrier(6), []

    def post():
        barrier.wait()
        results.append(log.add_feedback(record["die_id"], "override", "kim", true_class=1))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created for _, created in results) == [False] * 5 + [True]
    assert len({row["feedback_id"] for row, _ in results}) == 1
    assert len(log.feedback(latest_only=False)) == 1


def test_feedback_refusals(log):
    record = make_record(defect_class=2)
    log.record(record)
    die = record["die_id"]
    with pytest.raises(UnknownDieError, match="B-L0000"):
        log.add_feedback("B-L0000-W01-D000", "confirm", "kim")
    with pytest.raises(FeedbackError, match="verdict"):
        log.add_feedback(die, "agree", "kim")
    with pytest.raises(FeedbackError, match="true class"):
        log.add_feedback(die, "override", "kim")
    with pytest.raises(FeedbackError, match="not one of"):
        log.add_feedback(die, "override", "kim", true_class=7)
    with pytest.raises(FeedbackError, match="override"):
        log.add_feedback(die, "confirm", "kim", true_class=3)
    with pytest.raises(FeedbackError, match="operator"):
        log.add_feedback(die, "confirm", " ")
    assert log.feedback() == []


def test_record_refuses_incomplete_records(log):
    record = make_record()
    del record["defect_class"], record["wafer_id"]
    with pytest.raises(ValueError, match="lacks wafer_id, defect_class"):
        log.record(record)
    with pytest.raises(ValueError, match="class 9"):
        log.record(make_record(defect_class=9))
    assert log.status()["buffered"] == 0


def test_refused_record_is_set_aside_and_the_rest_written(log_url):
    log = InspectionLog(log_url, **FAST)
    first, other = make_record(), make_record("A-L0001-W01-D009")
    for r in (first, first, other):  # the second copy repeats an inspection id
        log.record(r)
    log.start()
    assert log.flush(10)
    assert counts(log, "written", "rejected", "buffered") == (2, 1, 0)
    assert "refused" in log.status()["last_error"]
    assert log.get(other["die_id"])["stored"]
    assert log.close()


def test_sqlite_outage_keeps_records_until_the_database_returns(tmp_path):
    folder = tmp_path / "db"
    folder.write_text("a file where the database folder belongs")
    log = InspectionLog(f"sqlite:///{folder / 'log.db'}", **FAST).start()
    records = [make_record(f"A-L0001-W01-D{i:03d}") for i in range(3)]
    for r in records:
        log.record(r)  # returns at once although nothing can be written
    assert wait_for(lambda: log.status()["failures"] >= 2)
    status = log.status()
    assert status["database_ok"] is False and status["buffered"] == 3
    assert status["last_error"].startswith("OperationalError")
    assert log.get(records[0]["die_id"])["stored"] is False
    with pytest.raises(LogUnavailableError):
        log.add_feedback(records[0]["die_id"], "confirm", "kim", wait=0.2)
    with pytest.raises(LogUnavailableError):
        log.recent()
    folder.unlink()
    folder.mkdir()
    assert log.flush(10)
    assert counts(log, "written", "database_ok") == (3, True)
    assert len(log.recent(flagged_only=False)) == 3
    assert log.close()


def test_full_buffer_drops_the_oldest_and_counts_them(tmp_path):
    folder = tmp_path / "db"
    folder.write_text("not a folder")
    log = InspectionLog(f"sqlite:///{folder / 'log.db'}", capacity=3, **FAST)
    records = [make_record(f"A-L0001-W01-D{i:03d}") for i in range(5)]
    for r in records:
        log.record(r)
    assert counts(log, "dropped", "buffered") == (2, 3)
    folder.unlink()
    folder.mkdir()
    log.start()
    assert log.flush(10)
    stored = {r["die_id"] for r in log.recent(flagged_only=False)}
    assert stored == {r["die_id"] for r in records[2:]}
    assert log.close()
    assert counts(log, "written", "dropped") == (3, 2)


def test_postgres_outage_until_the_database_exists(postgres_admin):
    import psycopg

    name = f"dieguard_late_{uuid.uuid4().hex[:8]}"
    url = postgres_admin.rsplit("/", 1)[0] + f"/{name}"
    log = InspectionLog(url, **FAST).start()
    record = make_record()
    log.record(record)
    assert wait_for(lambda: log.status()["failures"] >= 1)
    assert log.status()["database_ok"] is False and name in log.status()["last_error"]
    with psycopg.connect(postgres_admin, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            assert log.flush(10)
            assert log.get(record["die_id"])["stored"]
            assert log.close()
        finally:
            log.close(timeout=0)
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_unreachable_server_loses_nothing_silently():
    log = InspectionLog("postgresql://postgres@127.0.0.1:1/x", **FAST).start()
    log.record(make_record())
    assert wait_for(lambda: log.status()["failures"] >= 1)
    with pytest.raises(LogUnavailableError):
        log.get("B-L0000-W01-D000")
    assert log.close(timeout=0.1) is False
    assert counts(log, "buffered", "dropped", "written") == (0, 1, 0)


def test_close_writes_what_is_buffered(log_url):
    log = InspectionLog(log_url, **FAST).start()
    for i in range(4):
        log.record(make_record(f"A-L0001-W01-D{i:03d}", flagged=False))
    assert log.close()
    reopened = InspectionLog(log_url, **FAST)
    assert len(reopened.recent(flagged_only=False)) == 4
    reopened.close()
