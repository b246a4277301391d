"""Quarantine a data folder that failed validation, without moving or deleting any of it.

A quarantined folder holds a `QUARANTINED.json` marker (why, when, the failures, the content
digest) and a copy of that record lies under the quarantine root. Later runs refuse the
folder until a person reviews it and deletes the marker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from expectations.report import DataValidationError, ValidationReport

MARKER = "QUARANTINED.json"


class QuarantinedError(DataValidationError):
    """The data folder is quarantined; the message says why and how to release it.

    A DataValidationError (the data is refused, retrying will not help) without a report:
    `status` holds the marker's content instead.
    """

    def __init__(self, message: str, status: dict):
        self.report = None
        self.status = status
        RuntimeError.__init__(self, message)


def marker_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / MARKER


def quarantine(
    data_dir: str | Path,
    report: ValidationReport,
    quarantine_root: str | Path,
    reason: str | None = None,
) -> Path:
    """Mark `data_dir` quarantined and record it under `quarantine_root`.

    Nothing in `data_dir` is moved, changed or deleted; only the marker file is added.

    Args:
        data_dir: the dataset folder (train/val/test below it).
        report: the failed validation of that folder.
        quarantine_root: where the record of every quarantine is kept.
        reason: one line; default: the number of failures and the first one.
    Returns:
        The record file under `quarantine_root` (the marker lies at `marker_path(data_dir)`).
    """
    data_dir = Path(data_dir).resolve()
    if Path(report.data_dir).resolve() != data_dir:
        raise ValueError(f"the report is about {report.data_dir}, not {data_dir}")
    if report.success and reason is None:
        raise ValueError("the report passed; give a reason to quarantine the data anyway")
    now = dt.datetime.now(dt.UTC)
    first = report.failures[0] if report.failures else "no failure listed"
    reason = reason or f"{len(report.failures)} validation failure(s), first: {first}"
    root = Path(quarantine_root).resolve()
    record = root / f"{now:%Y%m%dT%H%M%SZ}-{data_dir.name}-{report.digest[:12]}.json"
    marker = marker_path(data_dir)
    entry = {
        "data_dir": str(data_dir),
        "reason": reason,
        "quarantined_at": now.isoformat(timespec="seconds"),
        "digest": report.digest,
        "split_digests": report.digests,
        "failures": report.failures,
        "docs_index": str(report.docs_index),
        "record": str(record),
        "release": f"review the failures, then delete {marker}",
    }
    _write_json(record, entry | {"report": report.to_dict()})
    _write_json(marker, entry)
    return record


def quarantine_status(data_dir: str | Path) -> dict | None:
    """The marker's content when `data_dir` is quarantined, else None."""
    marker = marker_path(data_dir)
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"reason": f"unreadable marker {marker}", "release": f"delete {marker}"}


def is_quarantined(data_dir: str | Path) -> bool:
    return marker_path(data_dir).is_file()


def ensure_not_quarantined(data_dir: str | Path) -> None:
    """Raise QuarantinedError, saying how to release the folder, when it is quarantined."""
    status = quarantine_status(data_dir)
    if status is None:
        return
    raise QuarantinedError(
        f"{data_dir} is quarantined since {status.get('quarantined_at', '?')}: "
        f"{status.get('reason', '?')}. Failures and Data Docs: {status.get('record', '?')}, "
        f"{status.get('docs_index', '?')}. To release it, fix or review the data, then delete "
        f"{marker_path(data_dir)}.",
        status,
    )


def _write_json(path: Path, content: dict) -> None:
    """Write atomically: a reader never sees half a marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str) + "\n")
    tmp.replace(path)
