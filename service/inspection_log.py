"""The inspection log: every inspection, the model decisions behind it, and operator feedback.

`record` never waits on the database: it puts the row in a bounded in-memory buffer and a
writer thread stores batches (one transaction each), retrying with backoff while the
database is unreachable. When the buffer overflows, the oldest records are dropped and
counted in `status()`. Queries and feedback are synchronous: feedback is committed before
`add_feedback` returns, or refused with `LogUnavailableError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import operator
import threading
import time
from collections import deque
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc

from model.schema import CLASS_NAMES, NUM_CLASSES

log = logging.getLogger(__name__)

VERDICTS = ("confirm", "override")
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


class InspectionLogError(Exception):
    """Base of the inspection log's errors."""


class LogUnavailableError(InspectionLogError):
    """The database cannot be reached; nothing was read or stored."""


class UnknownDieError(InspectionLogError, LookupError):
    """No inspection of this die is logged."""

    def __init__(self, die_id: str):
        self.die_id = die_id
        super().__init__(f"no inspection of die {die_id!r} is logged")


class FeedbackError(InspectionLogError, ValueError):
    """Feedback that cannot be stored as given (bad verdict, class or operator)."""


@dataclasses.dataclass
class _Pending:
    seq: int
    row: dict
    decisions: list[dict]


class InspectionLog:
    """Inspections, decisions and feedback in one SQL database (SQLite file or PostgreSQL).

    Args:
        url: a SQLAlchemy URL; ``postgresql://`` uses the psycopg 3 driver.
        capacity: records the buffer holds while the database is unreachable.
        batch_size: records written per transaction.
        retry_initial, retry_max: backoff between failed writes, in seconds.
        connect_timeout: seconds to wait for a database connection.
    """

    def __init__(
        self,
        url: str,
        capacity: int = 10_000,
        batch_size: int = 200,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        connect_timeout: float = 5.0,
    ):
        self.url = engine_url(url)
        self.source = self.url.set(password=None).render_as_string(hide_password=False)
        self.capacity, self.batch_size = capacity, batch_size
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self._engine = _create_engine(self.url, connect_timeout)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._cond = threading.Condition()
        self._buffer: deque[_Pending] = deque()
        self._seq = 0
        self._counts = {"written": 0, "dropped": 0, "rejected": 0, "failures": 0}
        self._last_error: str | None = None
        self._database_ok: bool | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._deadline = math.inf
        self._closing = threading.Event()

    # --- recording ---------------------------------------------------------------------

    def record(self, inspection: dict) -> None:
        """Queue one inspection record for writing; returns at once, whatever the database.

        Raises:
            ValueError: the record lacks a required field or holds an unreadable value.
        """
        row, decisions = inspection_rows(inspection)
        with self._cond:
            self._seq += 1
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                self._counts["dropped"] += 1
            self._buffer.append(_Pending(self._seq, row, decisions))
            self._cond.notify_all()

    def start(self) -> InspectionLog:
        """Start the writer thread (a no-op when it runs)."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stopping, self._deadline = False, math.inf
                self._closing.clear()
                self._thread = threading.Thread(
                    target=self._run, name="inspection-log-writer", daemon=True
                )
                self._thread.start()
        return self

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued before this call is written.

        Returns:
            True when they are; False on timeout or when the writer does not run.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._seq
            while self._buffer and self._buffer[0].seq <= target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._running():
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Write what can be written within `timeout`, then stop the writer.

        Returns:
            True when nothing was left unwritten (what is left is counted as dropped).
        """
        if self._buffer and not self._running():
            self.start()
        with self._cond:
            self._stopping, self._deadline = True, time.monotonic() + timeout
            self._cond.notify_all()
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
        with self._cond:
            left = len(self._buffer)
            self._buffer.clear()
            self._counts["dropped"] += left
        if left:
            log.error("inspection log closed with %d records unwritten: %s", left, self._last_error)
        self._engine.dispose()
        return left == 0

    def status(self) -> dict:
        """Buffered, written, dropped and rejected records; write failures; database health."""
        with self._cond:
            return {
                "buffered": len(self._buffer),
                "capacity": self.capacity,
                **self._counts,
                "last_error": self._last_error,
                "database_ok": self._database_ok,
                "running": self._running(),
            }

    def __enter__(self) -> InspectionLog:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        delay = self.retry_initial
        while True:
            with self._cond:
                while not self._buffer and not self._stopping:
                    self._cond.wait()
                if not self._buffer or (self._stopping and time.monotonic() >= self._deadline):
                    return
                batch = list(islice(self._buffer, self.batch_size))
            try:
                self._write(batch)
                delay = self.retry_initial
            except Exception as err:  # an outage: the batch stays buffered
                self._note_outage(err, count=True)
                self._backoff(delay)
                delay = min(delay * 2, self.retry_max)

    def _backoff(self, delay: float) -> None:
        if self._stopping:
            time.sleep(max(0.0, min(delay, self._deadline - time.monotonic())))
        else:
            self._closing.wait(delay)

    def _write(self, batch: list[_Pending]) -> None:
        """Write a batch in one transaction; if the database refuses a record (not an
        outage), write one at a time and set the refused ones aside."""
        self._ensure_schema()
        try:
            self._insert(batch)
        except Exception as err:
            if _is_outage(err):
                raise
            for item in batch:
                try:
                    self._insert([item])
                except Exception as one_err:
                    if _is_outage(one_err):
                        raise
                    log.error("inspection %s refused: %s", item.row["inspection_id"], one_err)
                    self._settle([item], refused=one_err)
                else:
                    self._settle([item])
            return
        self._settle(batch)

    def _insert(self, batch: list[_Pending]) -> None:
        with self._engine.begin() as conn:
            conn.execute(INSPECTIONS.insert(), [p.row for p in batch])
            decisions = [d for p in batch for d in p.decisions]
            if decisions:
                conn.execute(DECISIONS.insert(), decisions)

    def _settle(self, batch: list[_Pending], refused: Exception | None = None) -> None:
        """Take a written (or refused) batch off the buffer's front; a record that was
        dropped while it was being written counts as written, not dropped."""
        with self._cond:
            present = 0
            while self._buffer and self._buffer[0].seq <= batch[-1].seq:
                self._buffer.popleft()
                present += 1
            if refused is None:
                self._counts["written"] += len(batch)
                self._counts["dropped"] -= len(batch) - present
            else:
                self._counts["rejected"] += present
                self._last_error = f"record refused: {_describe(refused)}"
            self._database_ok = True
            self._cond.notify_all()

    def _note_outage(self, err: Exception, count: bool = False) -> None:
        if isinstance(err, exc.ProgrammingError):
            self._schema_ready = False  # e.g. the tables were dropped: create them again
        with self._cond:
            self._counts["failures"] += int(count)
            self._last_error = _describe(err)
            self._database_ok = False
        log.warning("inspection log database unavailable: %s", self._last_error)

    def _ensure_schema(self) -> None:
        with self._schema_lock:
            if not self._schema_ready:
                METADATA.create_all(self._engine)
                self._schema_ready = True

    # --- queries -----------------------------------------------------------------------

    def _query(self, read):
        """Run `read(connection)`; an outage becomes LogUnavailableError."""
        try:
            self._ensure_schema()
            with self._engine.connect() as conn:
                return read(conn)
        except exc.SQLAlchemyError as err:
            if not _is_outage(err):
                raise
            self._note_outage(err)
            reason = f"inspection log database unavailable: {_describe(err)}"
            raise LogUnavailableError(reason) from err

    def _buffered(self, keep) -> list[dict]:
        """Buffered records that `keep` accepts, newest first."""
        with self._cond:
            pending = [p for p in reversed(self._buffer) if keep(p.row)]
        return [_pending_dict(p) for p in pending]

    def recent(
        self, limit: int = 50, flagged_only: bool = True, since: datetime | None = None
    ) -> list[dict]:
        """The latest inspections, newest first, with their decisions (buffered ones too).

        Args:
            limit: at most this many.
            flagged_only: only the flagged dies.
            since: only those received at or after this time.
        """
        since = None if since is None else as_utc(since)

        def keep(row: dict) -> bool:
            return (not flagged_only or row["flagged"]) and (
                since is None or row["received_at"] >= since
            )

        buffered = self._buffered(keep)[:limit]
        query = INSPECTIONS.select().order_by(
            INSPECTIONS.c.received_at.desc(), INSPECTIONS.c.seq.desc()
        )
        if flagged_only:
            query = query.where(INSPECTIONS.c.flagged)
        if since is not None:
            query = query.where(INSPECTIONS.c.received_at >= since)
        stored = self._query(lambda conn: _with_decisions(conn, query.limit(limit)))
        seen = {r["inspection_id"] for r in buffered}
        rows = buffered + [r for r in stored if r["inspection_id"] not in seen]
        return sorted(rows, key=lambda r: r["received_at"], reverse=True)[:limit]

    def get(self, die_id: str) -> dict | None:
        """The latest inspection of a die with its decisions (a buffered one too), or None."""
        return self._latest(INSPECTIONS.c.die_id, "die_id", die_id)

    def get_inspection(self, inspection_id: str) -> dict | None:
        """One inspection by its id, with its decisions, or None."""
        return self._latest(INSPECTIONS.c.inspection_id, "inspection_id", inspection_id)

    def _latest(self, column, key: str, value: str) -> dict | None:
        buffered = self._buffered(lambda row: row[key] == value)
        if buffered:
            return buffered[0]
        query = INSPECTIONS.select().where(column == value)
        query = query.order_by(INSPECTIONS.c.received_at.desc(), INSPECTIONS.c.seq.desc())
        found = self._query(lambda conn: _with_decisions(conn, query.limit(1)))
        return found[0] if found else None

    def decisions(self, since: datetime | None = None) -> list[dict]:
        """Every model decision (buffered ones too), oldest first, for shadow comparison:
        role, model_version, defect_class, flagged, die_id, inspection_id, received_at, ..."""
        since = None if since is None else as_utc(since)
        buffered = self._buffered(lambda row: since is None or row["received_at"] >= since)
        query = DECISIONS.select().order_by(DECISIONS.c.received_at, DECISIONS.c.id)
        if since is not None:
            query = query.where(DECISIONS.c.received_at >= since)
        stored = self._query(lambda conn: [_decision_dict(r) for r in conn.execute(query)])
        seen = {r["inspection_id"] for r in buffered}
        rows = [d for d in stored if d["inspection_id"] not in seen]
        rows += [d for r in reversed(buffered) for d in r["decisions"]]
        return sorted(rows, key=lambda d: d["received_at"])

    # --- feedback ----------------------------------------------------------------------

    def add_feedback(
        self,
        die_id: str,
        verdict: str,
        operator: str,
        true_class: int | None = None,
        comment: str = "",
        wait: float = 5.0,
    ) -> tuple[dict, bool]:
        """Store an operator's verdict on the latest inspection of a die, durably.

        Args:
            verdict: "confirm" (the decided class is right) or "override" (it is `true_class`).
            operator: who gives the verdict.
            true_class: 0-4; required for an override.
            wait: seconds to wait for a still-buffered inspection to be written.
        Returns:
            (the feedback row with the label it implies, True when it was created now);
            the same feedback again returns the stored row and False.
        Raises:
            UnknownDieError, FeedbackError, LogUnavailableError (nothing stored).
        """
        verdict, operator, true_class, comment = _check_feedback(
            verdict, operator, true_class, comment
        )
        inspection = self.get(die_id)
        if inspection is None:
            raise UnknownDieError(die_id)
        if not inspection["stored"] and not self.flush(wait):
            raise LogUnavailableError(
                f"the inspection of die {die_id} is not written yet: {self._last_error}"
            )
        predicted = int(inspection["defect_class"])
        if verdict == "confirm" and true_class not in (None, predicted):
            raise FeedbackError(
                f"a confirm keeps the decided class {predicted}; use override for {true_class}"
            )
        fields = (inspection["inspection_id"], verdict, true_class, operator, comment)
        row = {
            "feedback_key": hashlib.sha256(json.dumps(fields).encode()).hexdigest(),
            "die_id": die_id,
            "inspection_id": inspection["inspection_id"],
            "verdict": verdict,
            "true_class": None if verdict == "confirm" else true_class,
            "predicted_class": predicted,
            "label": predicted if verdict == "confirm" else true_class,
            "operator": operator,
            "comment": comment,
            "created_at": datetime.now(UTC),
        }
        return self._store_feedback(row)

    def _store_feedback(self, row: dict) -> tuple[dict, bool]:
        try:
            self._ensure_schema()
            with self._engine.begin() as conn:  # the insert first: no read lock to upgrade
                new_id = conn.execute(FEEDBACK.insert().values(**row)).inserted_primary_key[0]
            return _feedback_dict({**row, "id": new_id}), True
        except exc.IntegrityError:
            key = FEEDBACK.c.feedback_key == row["feedback_key"]
            found = self._query(lambda conn: conn.execute(FEEDBACK.select().where(key)).first())
            if found is None:
                raise
            return _feedback_dict(found._mapping), False
        except exc.SQLAlchemyError as err:
            if not _is_outage(err):
                raise
            self._note_outage(err)
            raise LogUnavailableError(f"feedback not stored: {_describe(err)}") from err

    def feedback(self, latest_only: bool = True, since: datetime | None = None) -> list[dict]:
        """Stored feedback, oldest first, each with the label it implies.

        Args:
            latest_only: only the latest feedback of each die.
            since: only feedback given at or after this time.
        """
        query = FEEDBACK.select().order_by(FEEDBACK.c.id)
        if latest_only:
            latest = sa.select(sa.func.max(FEEDBACK.c.id)).group_by(FEEDBACK.c.die_id)
            query = query.where(FEEDBACK.c.id.in_(latest))
        if since is not None:
            query = query.where(FEEDBACK.c.created_at >= as_utc(since))
        return self._query(lambda conn: [_feedback_dict(r._mapping) for r in conn.execute(query)])


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
            "defect_class": _class_index(record["defect_class"]),
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


def _decision_row(decision, inspection: dict) -> dict:
    if dataclasses.is_dataclass(decision):
        decision = dataclasses.asdict(decision)
    missing = [name for name in DECISION_REQUIRED if name not in decision]
    if missing:
        raise ValueError(f"a decision lacks {', '.join(missing)}")
    defect_class = _class_index(decision["defect_class"])
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


def _class_index(value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"a class index is an integer, not {value!r}")
    index = operator.index(value)
    if not 0 <= index < NUM_CLASSES:
        raise ValueError(f"class {index} is not one of 0-{NUM_CLASSES - 1}")
    return index


def _check_feedback(verdict, who, true_class, comment) -> tuple[str, str, int | None, str]:
    if verdict not in VERDICTS:
        raise FeedbackError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    if not isinstance(who, str) or not who.strip():
        raise FeedbackError("feedback needs the operator's name")
    if comment is not None and not isinstance(comment, str):
        raise FeedbackError(f"a comment is text, not {type(comment).__name__}")
    if true_class is not None:
        try:
            true_class = _class_index(true_class)
        except (TypeError, ValueError) as err:
            raise FeedbackError(f"true_class: {err}") from err
    elif verdict == "override":
        raise FeedbackError("an override needs the true class (0-4)")
    return verdict, who.strip(), true_class, (comment or "").strip()


def _with_decisions(conn, query) -> list[dict]:
    rows = [_inspection_dict(r._mapping) for r in conn.execute(query)]
    if rows:
        ids = [r["inspection_id"] for r in rows]
        by_id: dict[str, list[dict]] = {i: [] for i in ids}
        found = DECISIONS.select().where(DECISIONS.c.inspection_id.in_(ids))
        for d in conn.execute(found.order_by(DECISIONS.c.id)):
            by_id[d.inspection_id].append(_decision_dict(d))
        for r in rows:
            r["decisions"] = by_id[r["inspection_id"]]
    return rows


def _inspection_dict(mapping) -> dict:
    row = {k: v for k, v in mapping.items() if k != "seq"}
    return row | {"received_at": as_utc(row["received_at"]), "stored": True}


def _pending_dict(pending: _Pending) -> dict:
    return pending.row | {"decisions": [dict(d) for d in pending.decisions], "stored": False}


def _decision_dict(row) -> dict:
    d = {k: v for k, v in row._mapping.items() if k != "id"}
    return d | {"received_at": as_utc(d["received_at"])}


def _feedback_dict(mapping) -> dict:
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


def _create_engine(url: sa.URL, connect_timeout: float) -> sa.Engine:
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


def _is_outage(err: BaseException) -> bool:
    """True for errors of reaching the database, False for a refused statement."""
    if isinstance(err, exc.DBAPIError) and err.connection_invalidated:
        return True
    outages = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)
    return isinstance(err, (*outages, exc.ProgrammingError))


def _describe(err: BaseException) -> str:
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
