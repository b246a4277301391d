"""The inspection log's database: its tables, engines, and the rows it reads and writes.

`inspection_rows` turns an inspection record into the rows of `INSPECTIONS` and `DECISIONS`;
`record_rows` reads the other kind of record too: one model's decision added to an
inspection logged before it (a model that scored the die after the answer). The `*_dict`
functions turn stored rows back into plain dicts with UTC times. Engines write JSON columns
as plain JSON (numpy values as numbers, NaN as null) and turn on WAL and foreign keys on
SQLite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import operator
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc

from model.schema import CLASS_NAMES, NUM_CLASSES

METADATA = sa.MetaData()

INSPECTIONS = sa.Table(
    "inspections",
    METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("inspection_id", sa.String, nullable=False, unique=True),
    sa.Column("die_id", sa.String, nullable=False, index=True),
    sa.Column("wafer_id", sa.String, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("image_ref", sa.String, nullable=False),
    sa.Column("image_sha256", sa.String),
    sa.Column("process_log", sa.JSON, nullable=False),
    sa.Column("missing_parameters", sa.JSON, nullable=False),
    sa.Column("operator_notes", sa.Text, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("route", sa.String, nullable=False),
    sa.Column("served_by", sa.String, nullable=False),
    sa.Column("defect_class", sa.Integer, nullable=False),
    sa.Column("class_name", sa.String, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("flagged", sa.Boolean, nullable=False),
    sa.Column("model_version", sa.String, nullable=False),
    sa.Column("model_kind", sa.String, nullable=False),
    sa.Column("anomalous_parameters", sa.JSON, nullable=False),
    sa.Column("explanation", sa.Text, nullable=False),
    sa.Column("region_map", sa.JSON, nullable=False),
    sa.Column("latency_ms", sa.Float),
)

DECISIONS = sa.Table(
    "decisions",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "inspection_id",
        sa.String,
        sa.ForeignKey("inspections.inspection_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("die_id", sa.String, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("role", sa.String, nullable=False),
    sa.Column("model_version", sa.String, nullable=False),
    sa.Column("model_kind", sa.String, nullable=False),
    sa.Column("defect_class", sa.Integer, nullable=False),
    sa.Column("class_name", sa.String, nullable=False),
    sa.Column("confidence", sa.Float),
    sa.Column("defect_probability", sa.Float),
    sa.Column("flagged", sa.Boolean, nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("latency_ms", sa.Float),
)

FEEDBACK = sa.Table(
    "feedback",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("feedback_key", sa.String(64), nullable=False, unique=True),
    sa.Column("die_id", sa.String, nullable=False, index=True),
    sa.Column(
        "inspection_id", sa.String, sa.ForeignKey("inspections.inspection_id"), nullable=False
    ),
    sa.Column("verdict", sa.String, nullable=False),
    sa.Column("true_class", sa.Integer),
    sa.Column("predicted_class", sa.Integer, nullable=False),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("operator", sa.String, nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

REQUIRED = (
    "inspection_id", "die_id", "wafer_id", "received_at", "image_ref", "process_log", "route",
    "served_by", "defect_class", "class_name", "confidence", "flagged", "model_version",
    "model_kind", "decisions",
)  # fmt: skip
OPTIONAL = {
    "image_sha256": None,
    "missing_parameters": [],
    "operator_notes": "",
    "metadata": {},
    "anomalous_parameters": [],
    "explanation": "",
    "region_map": [],
    "latency_ms": None,
}
DECISION_REQUIRED = ("role", "model_version", "model_kind", "defect_class", "flagged")
ADDED_DECISION = "decision"  # the `kind` of a record adding a decision to a logged inspection
ADDED_REQUIRED = ("inspection_id", "die_id", "received_at", "decision")


# --- records and rows -------------------------------------------------------------------


def inspection_rows(record: dict) -> tuple[dict, list[dict]]:
    """The inspections row and decisions rows of an inspection record.

    Raises:
        ValueError: a required field is absent or unreadable.
    """
    missing = [name for name in REQUIRED if name not in record]
    if missing:
        raise ValueError(f"inspection record lacks {', '.join(missing)}")
    row = {name: record.get(name, default) for name, default in OPTIONAL.items()}
    try:
        row |= {
            name: str(record[name])
            for name in ("inspection_id", "die_id", "wafer_id", "image_ref", "route")
            + ("served_by", "class_name", "model_version", "model_kind")
        }
        row |= {
            "received_at": as_utc(record["received_at"]),
            "process_log": dict(record["process_log"]),
            "defect_class": class_index(record["defect_class"]),
            "confidence": float(record["confidence"]),
            "flagged": bool(record["flagged"]),
            "operator_notes": row["operator_notes"] or "",
            "metadata": dict(row["metadata"] or {}),
            "latency_ms": None if row["latency_ms"] is None else float(row["latency_ms"]),
        }
        decisions = [_decision_row(d, row) for d in record["decisions"]]
    except (TypeError, ValueError) as err:
        raise ValueError(f"inspection record of die {record['die_id']}: {err}") from err
    return row, decisions


def added_decision_record(inspection_id: str, die_id: str, received_at, decision) -> dict:
    """The record of one model's decision added to an inspection logged before it."""
    if dataclasses.is_dataclass(decision):
        decision = dataclasses.asdict(decision)
    return {
        "kind": ADDED_DECISION,
        "inspection_id": inspection_id,
        "die_id": die_id,
        "received_at": received_at,
        "decision": decision,
    }


def record_rows(record: dict) -> tuple[dict | None, list[dict]]:
    """The rows of either kind of record: an inspection's (see `inspection_rows`), or
    (None, [the decisions row]) of an `added_decision_record`.

    Raises:
        ValueError: a required field is absent or unreadable.
    """
    if record.get("kind", "inspection") == "inspection":
        return inspection_rows(record)
    if record["kind"] != ADDED_DECISION:
        raise ValueError(f"unknown kind of log record {record['kind']!r}")
    missing = [name for name in ADDED_REQUIRED if name not in record]
    if missing:
        raise ValueError(f"added decision record lacks {', '.join(missing)}")
    try:
        inspection = {
            "inspection_id": str(record["inspection_id"]),
            "die_id": str(record["die_id"]),
            "received_at": as_utc(record["received_at"]),
        }
        return None, [_decision_row(record["decision"], inspection)]
    except (TypeError, ValueError) as err:
        raise ValueError(f"added decision on die {record['die_id']}: {err}") from err


def _decision_row(decision, inspection: dict) -> dict:
    if dataclasses.is_dataclass(decision):
        decision = dataclasses.asdict(decision)
    missing = [name for name in DECISION_REQUIRED if name not in decision]
    if missing:
        raise ValueError(f"a decision lacks {', '.join(missing)}")
    defect_class = class_index(decision["defect_class"])
    optional = (decision.get(k) for k in ("confidence", "defect_probability", "latency_ms"))
    confidence, defect_probability, latency_ms = (None if v is None else float(v) for v in optional)
    return {
        "inspection_id": inspection["inspection_id"],
        "die_id": inspection["die_id"],
        "received_at": inspection["received_at"],
        "role": str(decision["role"]),
        "model_version": str(decision["model_version"]),
        "model_kind": str(decision["model_kind"]),
        "defect_class": defect_class,
        "class_name": str(decision.get("class_name") or CLASS_NAMES[defect_class]),
        "confidence": confidence,
        "defect_probability": defect_probability,
        "flagged": bool(decision["flagged"]),
        "probabilities": decision.get("probabilities") or {},
        "latency_ms": latency_ms,
    }


def class_index(value) -> int:
    """A defect class index, checked to be one of the classes.

    Raises:
        TypeError, ValueError: `value` is not an integer class index.
    """
    if isinstance(value, bool):
        raise TypeError(f"a class index is an integer, not {value!r}")
    index = operator.index(value)
    if not 0 <= index < NUM_CLASSES:
        raise ValueError(f"class {index} is not one of 0-{NUM_CLASSES - 1}")
    return index


def with_decisions(conn, query) -> list[dict]:
    """The inspections `query` selects, as dicts, each with its decisions (oldest first)."""
    rows = [_inspection_dict(r._mapping) for r in conn.execute(query)]
    if rows:
        ids = [r["inspection_id"] for r in rows]
        by_id: dict[str, list[dict]] = {i: [] for i in ids}
        found = DECISIONS.select().where(DECISIONS.c.inspection_id.in_(ids))
        for d in conn.execute(found.order_by(DECISIONS.c.id)):
            by_id[d.inspection_id].append(decision_dict(d))
        for r in rows:
            r["decisions"] = by_id[r["inspection_id"]]
    return rows


def _inspection_dict(mapping) -> dict:
    row = {k: v for k, v in mapping.items() if k != "seq"}
    return row | {"received_at": as_utc(row["received_at"]), "stored": True}


def decision_dict(row) -> dict:
    """A stored decisions row as a dict with its UTC time."""
    d = {k: v for k, v in row._mapping.items() if k != "id"}
    return d | {"received_at": as_utc(d["received_at"])}


def feedback_dict(mapping) -> dict:
    """A stored feedback row as a dict with its id, UTC time and the name of its label."""
    d = {k: v for k, v in mapping.items() if k not in ("id", "feedback_key")}
    d |= {"feedback_id": mapping["id"], "created_at": as_utc(mapping["created_at"])}
    return d | {"label_name": CLASS_NAMES[d["label"]]}


# --- database plumbing ------------------------------------------------------------------


def engine_url(url: str) -> sa.URL:
    """The SQLAlchemy URL of a database: ``postgresql://`` with the psycopg 3 driver."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: sa.URL, connect_timeout: float) -> sa.Engine:
    """An engine that writes plain JSON; on SQLite it makes the folder and turns on WAL.

    Args:
        url: from `engine_url`.
        connect_timeout: seconds to wait for a connection.
    """

    def dumps(value) -> str:
        return json.dumps(_jsonable(value), allow_nan=False)

    if url.get_backend_name() != "sqlite":
        args = {"connect_timeout": max(1, round(connect_timeout))}
        return sa.create_engine(url, json_serializer=dumps, pool_pre_ping=True, connect_args=args)
    if url.database and url.database != ":memory:":
        with contextlib.suppress(OSError):  # an outage, reported when the writer connects
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, json_serializer=dumps, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def is_outage(err: BaseException) -> bool:
    """True for errors of reaching the database, False for a refused statement."""
    if isinstance(err, exc.DBAPIError) and err.connection_invalidated:
        return True
    outages = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)
    return isinstance(err, (*outages, exc.ProgrammingError))


def describe_error(err: BaseException) -> str:
    """One short line naming a database error: its driver exception and first line."""
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}"[:300]


def _jsonable(value):
    """Plain JSON values: numpy scalars and arrays as numbers and lists, NaN as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    return str(value)


def as_utc(value: datetime | str) -> datetime:
    """A tz-aware UTC datetime (a naive one is taken as UTC; ISO 8601 text is parsed)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"a time is a datetime or ISO 8601 text, not {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
