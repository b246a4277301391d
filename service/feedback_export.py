"""Export the dies operators confirmed or overrode as one labelled split of the dataset contract.

The folder holds what `model.contract.read_split` reads (images/, process_logs.csv,
operator_notes.json, labels.csv, metadata.csv) and a manifest, feedback_export.json, that
marks it as an export: a later export may replace it, nothing else is overwritten. The label
of a confirmed die is the class the service decided; of an overridden die, the operator's.
The folder is written beside the target and checked with `read_split` before it replaces it.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from model.contract import read_split
from model.schema import (
    CLASS_NAMES,
    IMAGES_DIR,
    LABELS_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    NOTES_FILE,
    PROCESS_LOGS_FILE,
    parameter_names,
)
from service.image_store import Images
from service.inspection_log import InspectionLog
from service.log_tables import as_utc

MANIFEST_FILE = "feedback_export.json"
MANIFEST_KIND = "dieguard-feedback-export"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DIE_ID = re.compile(r"^(?P<fab>[A-Za-z0-9]+)-(?P<lot_id>[A-Za-z0-9]+)-[A-Za-z0-9]+-[A-Za-z0-9]+$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExportError(Exception):
    """The feedback cannot be exported as asked."""


class NothingToExportError(ExportError):
    """No confirmed or overridden die (with a stored image) to export."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    out_dir: Path
    count: int
    per_class: dict[str, int]
    skipped: dict[str, str] = field(default_factory=dict)  # die_id -> why it was left out
    manifest: dict = field(default_factory=dict)


def export_feedback(
    log: InspectionLog,
    image_store: Images,
    out_dir: str | Path,
    since: datetime | None = None,
) -> ExportSummary:
    """Write the latest feedback of each die as a labelled split folder.

    Args:
        log: the inspection log holding the feedback and the inspections.
        image_store: where the inspected images are stored.
        out_dir: the split folder; it must be absent, empty, or an earlier export.
        since: only feedback given at or after this time.
    Returns:
        The summary: dies written, per-class counts, dies left out and why.
    Raises:
        FileExistsError: out_dir holds something that is not an earlier export.
        NothingToExportError: no feedback (since `since`) with a stored image.
        LogUnavailableError: the log's database cannot be reached.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir)
    dies, skipped = _collect(log, image_store, since)
    if not dies:
        why = f"; left out: {skipped}" if skipped else ""
        when = f" since {as_utc(since).isoformat()}" if since is not None else ""
        raise NothingToExportError(f"no confirmed or overridden die to export{when}{why}")
    per_class = Counter(CLASS_NAMES[d["label"]] for d in dies)
    manifest = {
        "kind": MANIFEST_KIND,
        "count": len(dies),
        "per_class": {name: per_class[name] for name in CLASS_NAMES},
        "verdicts": dict(Counter(d["verdict"] for d in dies)),
        "skipped": len(skipped),
        "since": None if since is None else as_utc(since).isoformat(),
        "exported_at": datetime.now(UTC).strftime(TIMESTAMP_FORMAT),
        "source": log.source,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}-{uuid.uuid4().hex[:8]}")
    try:
        staging.mkdir()
        _write_split(staging, dies, image_store)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        read_split(staging)
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportSummary(out_dir, len(dies), manifest["per_class"], skipped, manifest)


def _check_target(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if any(out_dir.iterdir()) and not _is_export(out_dir):
        raise FileExistsError(f"{out_dir} is not empty and not an earlier feedback export")


def _is_export(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") == MANIFEST_KIND


def _collect(log: InspectionLog, store: Images, since) -> tuple[list[dict], dict[str, str]]:
    """The exportable dies (feedback joined with its inspection) and the ones left out."""
    dies, skipped = [], {}
    for fb in log.feedback(latest_only=True, since=since):
        die_id = fb["die_id"]
        inspection = log.get_inspection(fb["inspection_id"])
        if inspection is None:
            skipped[die_id] = "its inspection is not in the log"
        elif not SAFE_NAME.match(die_id):
            skipped[die_id] = "the die id cannot be a file name"
        elif not inspection["image_ref"] or not store.exists(inspection["image_ref"]):
            skipped[die_id] = "its image is not in the image store"
        else:
            dies.append(inspection | {"label": fb["label"], "verdict": fb["verdict"]})
    return dies, skipped


def _write_split(folder: Path, dies: list[dict], store: Images) -> None:
    (folder / IMAGES_DIR).mkdir()
    for die in dies:
        suffix = Path(die["image_ref"]).suffix
        (folder / IMAGES_DIR / f"{die['die_id']}{suffix}").write_bytes(store.get(die["image_ref"]))
    names = parameter_names()
    process = pd.DataFrame(
        [[die["die_id"], *(die["process_log"].get(n) for n in names)] for die in dies],
        columns=["die_id", *names],
    )
    process.to_csv(folder / PROCESS_LOGS_FILE, index=False)
    labels = pd.DataFrame([(d["die_id"], d["label"]) for d in dies], columns=["die_id", "label"])
    labels.to_csv(folder / LABELS_FILE, index=False)
    metadata = pd.DataFrame([metadata_row(d) for d in dies], columns=list(METADATA_COLUMNS))
    metadata = metadata.astype({"die_x": "Int64", "die_y": "Int64"})
    metadata.to_csv(folder / METADATA_FILE, index=False)
    notes = {d["die_id"]: d["operator_notes"] for d in dies if d.get("operator_notes")}
    (folder / NOTES_FILE).write_text(json.dumps(notes, indent=0, sort_keys=True))


def metadata_row(inspection: dict) -> dict:
    """The contract metadata of an inspected die: the station's metadata where given; else
    fab and lot_id from the die id, wafer_id from the request, timestamp = received_at.
    Columns nothing tells (chamber, shift, die_x, die_y, wafer_zone) stay empty."""
    given = {k: v for k, v in (inspection.get("metadata") or {}).items() if v not in (None, "")}
    parsed = DIE_ID.match(inspection["die_id"])
    row = {column: given.get(column) for column in METADATA_COLUMNS}
    row["die_id"] = inspection["die_id"]
    row["wafer_id"] = inspection.get("wafer_id") or given.get("wafer_id")
    for column in ("fab", "lot_id"):
        if row[column] is None and parsed:
            row[column] = parsed[column]
    row["timestamp"] = _timestamp(given.get("timestamp"), inspection["received_at"])
    return row


def _timestamp(given, received_at) -> str:
    try:
        moment = as_utc(given) if given is not None else as_utc(received_at)
    except (TypeError, ValueError):
        moment = as_utc(received_at)
    return moment.strftime(TIMESTAMP_FORMAT)


def _replace(staging: Path, out_dir: Path) -> None:
    """Put the staged folder in place of out_dir (absent, empty or an earlier export)."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}-old-{uuid.uuid4().hex[:8]}")
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
