"""The inspection log: every inspection, the model decisions behind it, and operator feedback.

`record` never waits on the database: it puts the row in a bounded in-memory buffer and a
writer thread stores batches (one transaction each), retrying with backoff while the
database is unreachable. When the buffer overflows, the oldest records are dropped and
counted in `status()`. With a write-ahead spool (service.spool), `record` first writes the
record to local disk and fsyncs it, so a record survives a crash of the process; `replay`
queues the records a crashed process left, and a spooled record leaves the spool once it is
in the database (a record already there is not written twice). A decision added to an
inspection after its answer (service.log_tables.added_decision_record) is a record of its
own on the same path, so losing it never touches the inspection. Queries and feedback are
synchronous: feedback is committed before `add_feedback` returns, or refused with
`LogUnavailableError`. The tables, engines and row conversions are in `service.log_tables`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections import deque
from datetime import UTC, datetime
from itertools import islice

import sqlalchemy as sa
from sqlalchemy import exc

from service.log_tables import (
    DECISIONS,
    FEEDBACK,
    INSPECTIONS,
    METADATA,
    as_utc,
    class_index,
    decision_dict,
    describe_error,
    engine_url,
    feedback_dict,
    is_outage,
    make_engine,
    record_rows,
    with_decisions,
)
from service.spool import Spool

log = logging.getLogger(__name__)

VERDICTS = ("confirm", "override")


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
    row: dict | None  # None: a decision added to an inspection recorded before
    decisions: list[dict]
    segment: int | None = None  # the spool segment holding it
    replayed: bool = False  # read back from the spool: may be in the database already

    @property
    def key(self) -> str | tuple[str, str]:
        """What names it in the database: its inspection id, or (inspection id, role) of an
        added decision."""
        if self.row is not None:
            return self.row["inspection_id"]
        return self.decisions[0]["inspection_id"], self.decisions[0]["role"]


class InspectionLog:
    """Inspections, decisions and feedback in one SQL database (SQLite file or PostgreSQL).

    Args:
        url: a SQLAlchemy URL; ``postgresql://`` uses the psycopg 3 driver.
        capacity: records the buffer holds while the database is unreachable.
        batch_size: records written per transaction.
        retry_initial, retry_max: backoff between failed writes, in seconds.
        connect_timeout: seconds to wait for a database connection.
        spool: a write-ahead spool: `record` returns once the record is on disk.
    """

    def __init__(
        self,
        url: str,
        capacity: int = 10_000,
        batch_size: int = 200,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        connect_timeout: float = 5.0,
        spool: Spool | None = None,
    ):
        self.spool = spool
        self.url = engine_url(url)
        self.source = self.url.set(password=None).render_as_string(hide_password=False)
        self.capacity, self.batch_size = capacity, batch_size
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self._engine = make_engine(self.url, connect_timeout)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._cond = threading.Condition()
        self._buffer: deque[_Pending] = deque()
        self._seq = 0
        self._counts = {"written": 0, "dropped": 0, "rejected": 0, "failures": 0, "recovered": 0}
        self._last_error: str | None = None
        self._database_ok: bool | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._deadline = math.inf
        self._closing = threading.Event()

    # --- recording ---------------------------------------------------------------------

    def record(self, record: dict) -> None:
        """Queue one record (an inspection, or a decision added to one) for writing; returns
        at once, whatever the database (once it is on disk, with a spool).

        Raises:
            ValueError: the record lacks a required field or holds an unreadable value.
            OSError: the spool could not write it (nothing was queued).
        """
        row, decisions = record_rows(record)
        segment = None if self.spool is None else self.spool.append(record)
        self._queue(_Pending(0, row, decisions, segment))

    def replay(self) -> int:
        """Queue the records a previous process left in the spool; how many."""
        if self.spool is None:
            return 0
        found = self.spool.recover()
        for segment, record in found:
            row, decisions = record_rows(record)
            self._queue(_Pending(0, row, decisions, segment, replayed=True))
        if found:
            log.warning("replaying %d spooled records into the log", len(found))
        return len(found)

    def _queue(self, pending: _Pending) -> None:
        with self._cond:
            self._seq += 1
            pending.seq = self._seq
            if len(self._buffer) >= self.capacity:  # a spooled record stays in the spool
                self._buffer.popleft()
                self._counts["dropped"] += 1
            self._buffer.append(pending)
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
            where = "kept in the spool" if self.spool else "unwritten"
            log.error("inspection log closed with %d records %s: %s", left, where, self._last_error)
        if self.spool is not None:
            self.spool.close()
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
                "spooled": None if self.spool is None else self.spool.unsettled(),
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
        stored = self._stored_replays(batch)
        fresh = [p for p in batch if p.key not in stored]
        try:
            self._insert(fresh)
        except Exception as err:
            if is_outage(err):
                raise
            for item in batch:
                try:
                    if item.key not in stored:
                        self._insert([item])
                except Exception as one_err:
                    if is_outage(one_err):
                        raise
                    log.error("log record %s refused: %s", item.key, one_err)
                    self._settle([item], refused=one_err)
                else:
                    self._settle([item])
            return
        if recovered := sum(p.replayed and p.row is not None for p in fresh):
            with self._cond:
                self._counts["recovered"] += recovered
            log.warning("%d inspections only the spool held are now in the log", recovered)
        self._settle(batch)

    def _stored_replays(self, batch: list[_Pending]) -> set:
        """The keys of the batch's replayed records that are in the database already."""
        inspections = [p.key for p in batch if p.replayed and p.row is not None]
        added = {p.key for p in batch if p.replayed and p.row is None}
        found = set()
        if not inspections and not added:
            return found
        column, decided = INSPECTIONS.c.inspection_id, DECISIONS.c
        with self._engine.connect() as conn:
            if inspections:
                found |= set(conn.scalars(sa.select(column).where(column.in_(inspections))))
            if added:
                of = decided.inspection_id.in_({inspection for inspection, _ in added})
                pairs = conn.execute(sa.select(decided.inspection_id, decided.role).where(of))
                found |= {tuple(pair) for pair in pairs} & added
        return found

    def _insert(self, batch: list[_Pending]) -> None:
        rows = [p.row for p in batch if p.row is not None]
        decisions = [d for p in batch for d in p.decisions]
        if not rows and not decisions:
            return
        with self._engine.begin() as conn:  # inspections first: their added decisions need them
            if rows:
                conn.execute(INSPECTIONS.insert(), rows)
            if decisions:
                conn.execute(DECISIONS.insert(), decisions)

    def _settle(self, batch: list[_Pending], refused: Exception | None = None) -> None:
        """Take a written (or refused) batch off the buffer's front; a record that was
        dropped while it was being written counts as written, not dropped."""
        with self._cond:
            present, segments = 0, []
            while self._buffer and self._buffer[0].seq <= batch[-1].seq:
                segments.append(self._buffer.popleft().segment)
                present += 1
            if refused is None:
                self._counts["written"] += len(batch)
                self._counts["dropped"] -= len(batch) - present
            else:
                self._counts["rejected"] += present
                self._last_error = f"record refused: {describe_error(refused)}"
            self._database_ok = True
            self._cond.notify_all()
        if self.spool is not None:
            self.spool.settled([s for s in segments if s is not None])

    def _note_outage(self, err: Exception, count: bool = False) -> None:
        if isinstance(err, exc.ProgrammingError):
            self._schema_ready = False  # e.g. the tables were dropped: create them again
        with self._cond:
            self._counts["failures"] += int(count)
            self._last_error = describe_error(err)
            self._database_ok = False
        log.warning("inspection log database unavailable: %s", self._last_error)

    def _ensure_schema(self) -> None:
        with self._schema_lock:
            if not self._schema_ready:
                try:
                    METADATA.create_all(self._engine)
                except exc.IntegrityError:  # another replica created the tables meanwhile
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
            if not is_outage(err):
                raise
            self._note_outage(err)
            reason = f"inspection log database unavailable: {describe_error(err)}"
            raise LogUnavailableError(reason) from err

    def read_stored(self, read):
        """`read(connection)` over the written tables (buffered records are not seen yet),
        for the dashboard's filtered views.

        Raises:
            LogUnavailableError: the database cannot be reached.
        """
        return self._query(read)

    def _buffered(self, keep) -> list[dict]:
        """Buffered inspections that `keep` accepts, newest first."""
        with self._cond:
            pending = [p for p in reversed(self._buffer) if p.row is not None and keep(p.row)]
        return [_pending_dict(p) for p in pending]

    def _with_added(self, rows: list[dict]) -> list[dict]:
        """The inspections with the buffered decisions added to them (not yet written)."""
        with self._cond:
            added = [p.decisions[0] for p in self._buffer if p.row is None]
        by_id: dict[str, list[dict]] = {}
        for decision in added:
            by_id.setdefault(decision["inspection_id"], []).append(decision)
        for row in rows:
            roles = {d["role"] for d in row["decisions"]}
            more = by_id.get(row["inspection_id"], [])
            row["decisions"] += [dict(d) for d in more if d["role"] not in roles]
        return rows

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
        stored = self._query(lambda conn: with_decisions(conn, query.limit(limit)))
        seen = {r["inspection_id"] for r in buffered}
        rows = buffered + [r for r in stored if r["inspection_id"] not in seen]
        rows = sorted(rows, key=lambda r: r["received_at"], reverse=True)[:limit]
        return self._with_added(rows)

    def window(
        self,
        start: datetime,
        end: datetime,
        fields: tuple[str, ...] | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """The inspections received in [start, end), oldest first, without their decisions
        (buffered ones too), for monitoring.

        Args:
            fields: the inspection columns to return (default: all); inspection_id and
                received_at always come.
            limit: at most this many, drawn at random when the window holds more.
        Raises:
            ValueError: an unknown field.
        """
        start, end = as_utc(start), as_utc(end)
        names = [c.name for c in INSPECTIONS.c if c.name != "seq"]
        wanted = names if fields is None else ["inspection_id", "received_at", *fields]
        if unknown := sorted(set(wanted) - set(names)):
            raise ValueError(f"inspections have no field {', '.join(unknown)}")
        wanted = list(dict.fromkeys(wanted))
        at = INSPECTIONS.c.received_at
        query = sa.select(*(INSPECTIONS.c[n] for n in wanted)).where(at >= start, at < end)
        if limit is not None:
            query = query.order_by(sa.func.random()).limit(limit)
        stored = self._query(lambda conn: [dict(r._mapping) for r in conn.execute(query)])
        rows = {r["inspection_id"]: r | {"received_at": as_utc(r["received_at"])} for r in stored}
        for r in self._buffered(lambda row: start <= row["received_at"] < end):
            rows.setdefault(r["inspection_id"], {n: r[n] for n in wanted})
        found = list(rows.values())
        if limit is not None and len(found) > limit:
            found = sorted(
                found, key=lambda r: hashlib.sha256(r["inspection_id"].encode()).digest()
            )
            found = found[:limit]
        return sorted(found, key=lambda r: r["received_at"])

    def get(self, die_id: str) -> dict | None:
        """The latest inspection of a die with its decisions (a buffered one too), or None."""
        return self._latest(INSPECTIONS.c.die_id, "die_id", die_id)

    def get_inspection(self, inspection_id: str) -> dict | None:
        """One inspection by its id, with its decisions, or None."""
        return self._latest(INSPECTIONS.c.inspection_id, "inspection_id", inspection_id)

    def _latest(self, column, key: str, value: str) -> dict | None:
        found = self._buffered(lambda row: row[key] == value)[:1]
        if not found:
            query = INSPECTIONS.select().where(column == value)
            query = query.order_by(INSPECTIONS.c.received_at.desc(), INSPECTIONS.c.seq.desc())
            found = self._query(lambda conn: with_decisions(conn, query.limit(1)))
        return self._with_added(found)[0] if found else None

    def decisions(self, since: datetime | None = None) -> list[dict]:
        """Every model decision (buffered ones too), oldest first, for shadow comparison:
        role, model_version, defect_class, flagged, die_id, inspection_id, received_at, ..."""
        since = None if since is None else as_utc(since)
        with self._cond:
            pending = list(self._buffer)
        query = DECISIONS.select().order_by(DECISIONS.c.received_at, DECISIONS.c.id)
        if since is not None:
            query = query.where(DECISIONS.c.received_at >= since)
        stored = self._query(lambda conn: [decision_dict(r) for r in conn.execute(query)])
        keys = {p.key for p in pending}  # buffered, perhaps written already: taken from the buffer
        rows = [
            d for d in stored
            if d["inspection_id"] not in keys and (d["inspection_id"], d["role"]) not in keys
        ]  # fmt: skip
        buffered = [dict(d) for p in pending for d in p.decisions]
        rows += [d for d in buffered if since is None or d["received_at"] >= since]
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
            return feedback_dict({**row, "id": new_id}), True
        except exc.IntegrityError:
            key = FEEDBACK.c.feedback_key == row["feedback_key"]
            found = self._query(lambda conn: conn.execute(FEEDBACK.select().where(key)).first())
            if found is None:
                raise
            return feedback_dict(found._mapping), False
        except exc.SQLAlchemyError as err:
            if not is_outage(err):
                raise
            self._note_outage(err)
            raise LogUnavailableError(f"feedback not stored: {describe_error(err)}") from err

    def feedback(
        self, latest_only: bool = True, since: datetime | None = None, die_id: str | None = None
    ) -> list[dict]:
        """Stored feedback, oldest first, each with the label it implies.

        Args:
            latest_only: only the latest feedback of each die.
            since: only feedback given at or after this time.
            die_id: only feedback on this die.
        """
        query = FEEDBACK.select().order_by(FEEDBACK.c.id)
        if latest_only:
            latest = sa.select(sa.func.max(FEEDBACK.c.id)).group_by(FEEDBACK.c.die_id)
            query = query.where(FEEDBACK.c.id.in_(latest))
        if since is not None:
            query = query.where(FEEDBACK.c.created_at >= as_utc(since))
        if die_id is not None:
            query = query.where(FEEDBACK.c.die_id == die_id)
        return self._query(lambda conn: [feedback_dict(r._mapping) for r in conn.execute(query)])


def _check_feedback(verdict, who, true_class, comment) -> tuple[str, str, int | None, str]:
    if verdict not in VERDICTS:
        raise FeedbackError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    if not isinstance(who, str) or not who.strip():
        raise FeedbackError("feedback needs the operator's name")
    if comment is not None and not isinstance(comment, str):
        raise FeedbackError(f"a comment is text, not {type(comment).__name__}")
    if true_class is not None:
        try:
            true_class = class_index(true_class)
        except (TypeError, ValueError) as err:
            raise FeedbackError(f"true_class: {err}") from err
    elif verdict == "override":
        raise FeedbackError("an override needs the true class (0-4)")
    return verdict, who.strip(), true_class, (comment or "").strip()


def _pending_dict(pending: _Pending) -> dict:
    return pending.row | {"decisions": [dict(d) for d in pending.decisions], "stored": False}
