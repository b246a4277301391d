"""Finding dies in the inspection log: a filter read from a page's URL, and its queries.

A `DieFilter` holds what an engineer narrows the log by (wafer, lot, fab, chamber, decided
class, flagged, feedback state, time range, part of a die id) and writes itself back as a
query string, so a filtered view can be shared as a link. The queries read the written
tables: each inspection with the latest feedback on it (none, confirmed or overridden).
Lot, fab, chamber and die position come from the station metadata.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from urllib.parse import urlencode

import sqlalchemy as sa

from model.schema import CLASS_NAMES
from service.log_tables import FEEDBACK, INSPECTIONS, as_utc

PAGE_SIZE = 50
FEEDBACK_STATES = ("none", "confirmed", "overridden")
FEEDBACK_NAMES = {"confirm": "confirmed", "override": "overridden"}  # verdict -> state
FLAGGED_CHOICES = ("yes", "no")
METADATA_FIELDS = {"lot": "lot_id", "fab": "fab", "chamber": "chamber"}
TEXT_LIMIT = 200
COLUMNS = (
    "inspection_id", "die_id", "wafer_id", "received_at", "defect_class", "class_name",
    "confidence", "flagged", "model_version", "model_kind", "served_by", "route", "metadata",
)  # fmt: skip
CSV_SITE = ("lot_id", "fab", "chamber")  # from the station metadata
CSV_DECISION = (
    "die_x", "die_y", "class_name", "confidence", "flagged", "model_version", "served_by",
    "feedback", "feedback_label", "feedback_operator", "inspection_id",
)  # fmt: skip
CSV_FIELDS = ("received_at", "die_id", "wafer_id", *CSV_SITE, *CSV_DECISION)


class FilterError(ValueError):
    """A filter value that cannot be used, with the reason."""


@dataclass(frozen=True)
class DieFilter:
    """What to narrow the log by; empty fields do not narrow it."""

    die: str = ""  # part of a die id
    wafer: str = ""
    lot: str = ""
    fab: str = ""
    chamber: str = ""
    defect_class: str = ""  # a class name
    flagged: str = ""  # yes | no
    feedback: str = ""  # none | confirmed | overridden
    start: datetime | None = None  # received at or after (UTC)
    end: datetime | None = None  # received before (UTC)
    page: int = 1

    def query_string(self, **changes) -> str:
        """The filter as URL query parameters (page 1 left out), with `changes` applied."""
        values = asdict(replace(self, **changes))
        values["class"] = values.pop("defect_class")
        for key in ("start", "end"):
            values[key] = values[key].strftime("%Y-%m-%dT%H:%M") if values[key] else ""
        values["page"] = "" if values["page"] == 1 else values["page"]
        return urlencode({k: v for k, v in values.items() if v != ""})

    @property
    def narrows(self) -> bool:
        """Whether any field narrows the log."""
        return replace(self, page=1) != DieFilter()


@dataclass(frozen=True)
class DiePage:
    """One page of the dies a filter finds, newest first."""

    rows: list[dict]
    total: int
    page: int
    pages: int


def parse_filter(params) -> DieFilter:
    """The filter in a page's query parameters.

    Raises:
        FilterError: an unknown class, flagged or feedback choice, an unreadable time or
            page, a range that ends before it starts, or a value over 200 characters.
    """
    text = {k: str(params.get(k, "")).strip() for k in (*METADATA_FIELDS, "die", "wafer")}
    if too_long := [k for k, v in text.items() if len(v) > TEXT_LIMIT]:
        raise FilterError(f"{too_long[0]} is longer than {TEXT_LIMIT} characters")
    found = DieFilter(
        **text,
        defect_class=_choice(params, "class", CLASS_NAMES),
        flagged=_choice(params, "flagged", FLAGGED_CHOICES),
        feedback=_choice(params, "feedback", FEEDBACK_STATES),
        start=read_time(params, "start"),
        end=read_time(params, "end"),
        page=_page_number(params),
    )
    if found.start and found.end and found.end <= found.start:
        raise FilterError("the time range ends before it starts")
    return found


def _choice(params, key: str, choices: tuple[str, ...]) -> str:
    value = str(params.get(key, "")).strip()
    if value and value not in choices:
        raise FilterError(f"{key} must be one of {', '.join(choices)}, not {value[:40]!r}")
    return value


def read_time(params, key: str) -> datetime | None:
    """The date or time (ISO 8601, UTC unless it names a zone) under `key`; None if empty.

    Raises:
        FilterError: the value is not a date or time.
    """
    value = str(params.get(key, "")).strip()
    if not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError as err:
        raise FilterError(f"{key} {value[:40]!r} is not a date or time (YYYY-MM-DD HH:MM)") from err


def _page_number(params) -> int:
    value = str(params.get("page", "1")).strip() or "1"
    if not value.isdigit() or not 1 <= int(value) <= 1_000_000:
        raise FilterError(f"page must be a whole number from 1, not {value[:20]!r}")
    return int(value)


def find_dies(log, found: DieFilter, page_size: int = PAGE_SIZE) -> DiePage:
    """One page of the dies `found` selects, newest first, with the total they number.

    Args:
        log: the InspectionLog to read.
    Raises:
        LogUnavailableError: the database cannot be reached.
    """
    query = _selection(found)
    counted = sa.select(sa.func.count()).select_from(query.subquery())
    offset = (found.page - 1) * page_size
    newest = query.order_by(INSPECTIONS.c.received_at.desc(), INSPECTIONS.c.seq.desc())

    def read(conn) -> tuple[int, list[dict]]:
        total = conn.execute(counted).scalar_one()
        rows = conn.execute(newest.limit(page_size).offset(offset))
        return total, [_row_dict(r) for r in rows.mappings()]

    total, rows = log.read_stored(read)
    return DiePage(rows, total, found.page, max(1, math.ceil(total / page_size)))


def all_dies(log, found: DieFilter, oldest_first: bool = False) -> list[dict]:
    """Every die `found` selects (newest first, or oldest first), without paging.

    Raises:
        LogUnavailableError: the database cannot be reached.
    """
    at = INSPECTIONS.c.received_at
    order = (at, INSPECTIONS.c.seq) if oldest_first else (at.desc(), INSPECTIONS.c.seq.desc())
    query = _selection(found).order_by(*order)
    return log.read_stored(lambda conn: [_row_dict(r) for r in conn.execute(query).mappings()])


def csv_text(rows: list[dict]) -> str:
    """The rows as CSV with a header line: time, die, wafer, lot, fab, chamber, position,
    decision and the latest feedback."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        first = (row["received_at"].isoformat(), row["die_id"], row["wafer_id"])
        site = (row["metadata"].get(k, "") for k in CSV_SITE)
        writer.writerow([*first, *site, *(row[k] for k in CSV_DECISION)])
    return out.getvalue()


def _selection(found: DieFilter):
    """The inspections `found` selects, each with its latest feedback's verdict."""
    latest = (
        sa.select(FEEDBACK.c.inspection_id, sa.func.max(FEEDBACK.c.id).label("feedback_id"))
        .group_by(FEEDBACK.c.inspection_id)
        .subquery()
    )
    given = FEEDBACK.alias("given")
    joined = INSPECTIONS.outerjoin(
        latest, latest.c.inspection_id == INSPECTIONS.c.inspection_id
    ).outerjoin(given, given.c.id == latest.c.feedback_id)
    columns = [INSPECTIONS.c[name] for name in COLUMNS]
    feedback = [given.c.verdict, given.c.label, given.c.operator.label("feedback_operator")]
    query = sa.select(*columns, *feedback).select_from(joined)
    return query.where(*_conditions(found, latest.c.feedback_id, given.c.verdict))


def _conditions(found: DieFilter, feedback_id, verdict) -> list:
    table = INSPECTIONS.c
    where = []
    if found.die:
        where.append(sa.func.lower(table.die_id).contains(found.die.lower(), autoescape=True))
    if found.wafer:
        where.append(table.wafer_id == found.wafer)
    for key, field in METADATA_FIELDS.items():
        if value := getattr(found, key):
            where.append(table["metadata"][field].as_string() == value)
    if found.defect_class:
        where.append(table.defect_class == CLASS_NAMES.index(found.defect_class))
    if found.flagged:
        where.append(table.flagged.is_(found.flagged == "yes"))
    if found.feedback == "none":
        where.append(feedback_id.is_(None))
    elif found.feedback:
        verdicts = {state: v for v, state in FEEDBACK_NAMES.items()}
        where.append(verdict == verdicts[found.feedback])
    if found.start:
        where.append(table.received_at >= found.start)
    if found.end:
        where.append(table.received_at < found.end)
    return where


def _row_dict(mapping) -> dict:
    row = dict(mapping)
    verdict, label = row.pop("verdict"), row.pop("label")
    metadata = row["metadata"] = row["metadata"] or {}
    row["received_at"] = as_utc(row["received_at"])
    row["die_x"] = _position(metadata.get("die_x"))
    row["die_y"] = _position(metadata.get("die_y"))
    row["feedback"] = FEEDBACK_NAMES.get(verdict, "none")
    row["feedback_label"] = "" if label is None else CLASS_NAMES[label]
    return row


def _position(value) -> int | None:
    """A die coordinate from the metadata (an integer), or None when absent or unreadable."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)
