"""The write-ahead spool: records on disk before they are acknowledged, replayed after a
crash, written to the log once, and gone from disk once they are in the database; a decision added
after the answer is a record of its own, and losing it never touches the inspection."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from service.inspection_log import InspectionLog
from service.spool import Spool
from tests.service.test_inspection_log import FAST, answered_then_shadow, make_record

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def test_records_survive_a_crash_and_a_torn_line_is_skipped(tmp_path):
    spool = Spool(tmp_path, segment_records=2)
    segments = [spool.append({"n": i, "v": np.float32(0.5)}) for i in range(3)]
    assert segments == [1, 1, 2] and spool.unsettled() == 3
    with open(tmp_path / "000002.jsonl", "ab") as segment:
        segment.write(b'{"n": 3, "v"')  # the crash cut this write short
    recovered = Spool(tmp_path).recover()  # a new process over the same folder
    assert [(s, r["n"]) for s, r in recovered] == [(1, 0), (1, 1), (2, 2)]
    assert recovered[0][1]["v"] == 0.5


def test_a_write_cut_short_by_a_full_disk_does_not_tear_the_next_record(tmp_path):
    spool = Spool(tmp_path)
    spool.append({"n": 0})
    segment = spool._file

    class DiskFull:
        def write(self, data):
            segment.write(bytes(data[:5]))
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(segment, name)

    spool._file = DiskFull()
    with pytest.raises(OSError, match="No space"):
        spool.append({"n": 1})
    spool._file = segment  # space again
    spool.append({"n": 2})
    assert [r["n"] for _, r in Spool(tmp_path).recover()] == [0, 2]


def test_concurrent_appends_share_fsyncs_and_return_only_once_theirs_is_done(tmp_path, monkeypatch):
    """Group commit: one fsync covers what was written while the previous one ran, and no
    append returns before an fsync that began after its record was written has ended."""
    real_fsync, synced, fsyncs, lock = os.fsync, set(), [], threading.Lock()

    def slow_fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            return real_fsync(fd)
        on_disk = {json.loads(line)["n"] for line in path.read_bytes().splitlines()}
        time.sleep(0.02)  # a disk flush
        real_fsync(fd)
        with lock:
            synced.update(on_disk)
            fsyncs.append(len(on_disk))

    monkeypatch.setattr(os, "fsync", slow_fsync)
    spool = Spool(tmp_path, segment_records=7)

    def append(n: int) -> bool:
        spool.append({"n": n})
        with lock:
            return n in synced

    with ThreadPoolExecutor(8) as pool:
        durable = list(pool.map(append, range(80)))
    assert all(durable)
    assert len(fsyncs) < 40  # 80 records, far fewer flushes
    recovered = Spool(tmp_path).recover()
    assert sorted(r["n"] for _, r in recovered) == list(range(80))


def test_a_segment_is_deleted_once_its_records_are_settled(tmp_path):
    spool = Spool(tmp_path, segment_records=2)
    first = [spool.append({"n": i}) for i in range(2)]
    spool.append({"n": 2})  # opens segment 2; segment 1 is closed
    spool.settled(first[:1])
    assert (tmp_path / "000001.jsonl").exists()
    spool.settled(first[1:])
    assert not (tmp_path / "000001.jsonl").exists() and spool.unsettled() == 1
    spool.close()
    assert [p.name for p in tmp_path.iterdir()] == ["000002.jsonl"]


def test_what_the_database_never_got_is_written_after_a_restart(tmp_path):
    records = [make_record(f"A-L0001-W01-D{i:03d}") for i in range(5)]
    down = InspectionLog(UNREACHABLE, spool=Spool(tmp_path / "spool"), **FAST).start()
    for record in records:
        down.record(record)
    down.close(timeout=0.2)  # the database never answered: the records stay on disk
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = InspectionLog(url, spool=Spool(tmp_path / "spool"), **FAST)
    assert log.replay() == 5
    with log:
        assert log.flush(10)
        stored = {log.get(r["die_id"])["inspection_id"] for r in records}
        assert log.status()["spooled"] == 0 and log.status()["recovered"] == 5
    assert stored == {r["inspection_id"] for r in records}
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_a_replayed_record_already_in_the_database_is_not_written_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    records = [make_record(f"A-L0001-W01-D{i:03d}") for i in range(4)]
    with InspectionLog(url, **FAST) as log:  # two were written before the crash...
        for record in records[:2]:
            log.record(record)
        assert log.flush(10)
    spool = Spool(tmp_path / "spool")
    for record in records:  # ...and all four were still in the spool
        spool.append(record)
    spool.close()
    log = InspectionLog(url, spool=Spool(tmp_path / "spool"), **FAST)
    assert log.replay() == 4
    with log:
        assert log.flush(10)
        status = log.status()
        rows = log.window(records[0]["received_at"], records[0]["received_at"].replace(year=2100))
    assert len(rows) == 4 and status["rejected"] == 0 and status["spooled"] == 0
    assert status["recovered"] == 2


def test_a_crash_before_or_during_the_added_decision_loses_no_acknowledged_inspection(tmp_path):
    """Three answered inspections; the candidate's decision was added to the first two, one of
    them was already in the database, and the crash cut the third's decision short."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    pairs = [answered_then_shadow(f"A-L0001-W01-D{i:03d}") for i in range(3)]
    with InspectionLog(url, **FAST) as log:  # the first inspection and its decision were written
        log.record(pairs[0][0])
        log.record(pairs[0][1])
        assert log.flush(10)
    spool = Spool(tmp_path / "spool")
    for inspection, added in pairs[:2]:
        spool.append(inspection)
        spool.append(added)
    spool.append(pairs[2][0])
    spool.close()
    line = json.dumps(pairs[2][1], default=str).encode()
    with open(sorted((tmp_path / "spool").glob("*.jsonl"))[-1], "ab") as segment:
        segment.write(line[: len(line) // 2])  # the crash came in the middle of this write
    log = InspectionLog(url, spool=Spool(tmp_path / "spool"), **FAST)
    assert log.replay() == 5
    with log:
        assert log.flush(10)
        got = [log.get_inspection(inspection["inspection_id"]) for inspection, _ in pairs]
        status = log.status()
    assert [[d["role"] for d in g["decisions"]] for g in got] == [
        ["champion", "candidate"],
        ["champion", "candidate"],
        ["champion"],  # its added decision was lost, the inspection is as answered
    ]
    for g, (inspection, _) in zip(got, pairs):
        for name in ("served_by", "defect_class", "confidence", "flagged", "model_version"):
            assert g[name] == inspection[name]
    assert status["rejected"] == 0 and status["spooled"] == 0 and status["recovered"] == 2
