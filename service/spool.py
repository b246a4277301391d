"""The write-ahead spool: every inspection on local disk, fsynced, before the station's 200.

Records are appended as JSON lines to numbered segment files (`000001.jsonl`, ...); a new
segment opens every `segment_records` records. Appends commit in groups: `append` returns
once an fsync that began after its record was written has ended, and one fsync covers every
record written while the previous one ran, so concurrent appends share the disk's flushes
instead of queueing for one each. A segment is deleted once it is closed and
every record in it is in the database. A process that starts over a folder a crashed one
left reads the records back (`recover`) for the inspection log to write again; a torn last
line (a write cut by the crash, never acknowledged) is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import date, datetime
from pathlib import Path

log = logging.getLogger(__name__)


class Spool:
    """Append-only segments of JSON records under one folder."""

    def __init__(self, folder: str | Path, segment_records: int = 2000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.segment_records = segment_records
        self._lock = threading.Lock()  # the open segment and the counts
        self._commit = threading.Condition()  # the group commit's state below
        self._written = self._durable = self._failed = 0  # record sequence numbers
        self._syncing = False
        self._unsettled: dict[int, int] = {}  # segment -> records not yet in the database
        self._current, self._file, self._count = 0, None, 0

    def recover(self) -> list[tuple[int, dict]]:
        """(segment, record) of every record the segments on disk hold, oldest first."""
        found = []
        with self._lock:
            for path in sorted(self.folder.glob("*.jsonl")):
                segment = int(path.stem)
                records = _read_segment(path)
                self._current = max(self._current, segment)
                self._unsettled[segment] = len(records)
                found += [(segment, record) for record in records]
                if not records:
                    self._delete(segment)
        return found

    def append(self, record: dict) -> int:
        """Write one record and return once it is fsynced; returns its segment (for `settled`).

        Raises:
            OSError: the record is not on disk (disk full, no permission).
        """
        line = json.dumps(record, default=_plain, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None or self._count >= self.segment_records:
                self._rotate()
            self._write_whole(line.encode())
            self._written += 1
            sequence, segment = self._written, self._current
            self._count += 1
            self._unsettled[segment] += 1
        self._wait_durable(sequence)
        return segment

    def _write_whole(self, data: bytes) -> None:
        """Append one line whole or not at all: a write cut short (disk full) is cut off
        again, so the next record does not continue a torn line and get lost with it."""
        end, view = self._file.tell(), memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) :]
        except OSError:
            self._file.truncate(end)
            raise

    def _wait_durable(self, sequence: int) -> None:
        """Block until record `sequence` is fsynced: join the running fsync's successor, or
        run it when none runs (the group commit's leader)."""
        with self._commit:
            while True:
                if sequence <= self._failed:  # a later fsync's success would not cover it
                    raise OSError(f"the spool's fsync failed for record {sequence}")
                if self._durable >= sequence:
                    return
                if not self._syncing:
                    self._syncing = True  # this thread runs the next group's fsync
                    break
                self._commit.wait()
        through, error = sequence, None
        try:
            through = self._sync_written()
        except OSError as err:
            error = err
        with self._commit:
            self._syncing = False
            if error is None:
                self._durable = max(self._durable, through)
            else:
                self._failed = max(self._failed, through)
            self._commit.notify_all()
        if error is not None:
            raise error

    def _sync_written(self) -> int:
        """fsync the open segment outside the lock (appends go on meanwhile); the sequence
        number of the last record it covers. A closed segment was fsynced by `_rotate`."""
        with self._lock:
            through = self._written
            if self._file is None:
                return through
            handle = os.dup(self._file.fileno())  # stays valid if the segment is closed
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
        return through

    def settled(self, segments: list[int]) -> None:
        """Records of these segments are in the database (one entry per record)."""
        with self._lock:
            for segment in segments:
                if segment in self._unsettled:
                    self._unsettled[segment] -= 1
                    if self._unsettled[segment] <= 0 and segment != self._live():
                        self._delete(segment)

    def unsettled(self) -> int:
        """Records on disk that are not yet in the database."""
        with self._lock:
            return sum(self._unsettled.values())

    def close(self) -> None:
        """Close the open segment (records not yet in the database stay on disk)."""
        with self._lock:
            if self._file is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
                if self._unsettled.get(self._current, 0) <= 0:
                    self._delete(self._current)

    def _live(self) -> int | None:
        return self._current if self._file is not None else None

    def _rotate(self) -> None:
        if self._file is not None:  # its last records may await a group's fsync: do it now
            os.fsync(self._file.fileno())
            self._file.close()
            if self._unsettled.get(self._current, 0) <= 0:
                self._delete(self._current)
        self._current += 1
        path = self.folder / f"{self._current:06d}.jsonl"
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (held open across appends)
        self._count, self._unsettled[self._current] = 0, 0
        sync_folder(self.folder)

    def _delete(self, segment: int) -> None:
        (self.folder / f"{segment:06d}.jsonl").unlink(missing_ok=True)
        self._unsettled.pop(segment, None)


def _read_segment(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            log.warning("%s line %d is torn (a write cut short); skipped", path, number)
    return records


def _plain(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot be spooled")


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a file created in it survives a crash."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
