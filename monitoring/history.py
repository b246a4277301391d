"""The monitor's history: every hourly check per metric, the retrains it started, and the rule
that starts one.

The series live in SQL tables of the inspection log's database (a SQLite file, PostgreSQL in
production), beside the records they were computed from: every worker that runs the flow
sees the same history, appends are transactions, and a lost worker loses nothing.

The trigger rule (the seed: "any drift metric exceeding threshold for >6 consecutive hours"):
a metric is *sustained* at `now` when its latest checks form an unbroken run of flagged checks
that (1) has more than `hours / window_hours` checks (7 hourly checks for 6 h), (2) covers
more than `hours` hours from the start of the first check's window to the last check, and
(3) has no gap longer than
`max_gap_hours` between two checks, nor between the last check and `now`. A clean check, a
skipped one (too few dies to judge) or a longer silence ends the run. Only checks after the
last retrain this monitor started (or found in progress and joined) count, so one episode of
drift starts one retrain; drift that outlasts it starts another after 7 more flagged hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from service.log_tables import as_utc, engine_url, make_engine

METADATA = sa.MetaData()

CHECKS = sa.Table(
    "monitor_checks",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("metric", sa.String, nullable=False, index=True),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("flagged", sa.Boolean, nullable=False),
    sa.Column("skipped", sa.Text, nullable=False),
)

TRIGGERS = sa.Table(
    "monitor_retrains",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("report", sa.Text, nullable=False),
    sa.Column("flow_run_id", sa.String),
    sa.Column("started", sa.Boolean, nullable=False),  # False: a run in progress was joined
)


@dataclass(frozen=True)
class Check:
    """One metric's verdict in one check; `skipped` says why it could not be judged."""

    metric: str
    value: float | None
    threshold: float | None
    flagged: bool
    skipped: str = ""


class History:
    """The checks and triggered retrains in one SQL database.

    Args:
        url: a SQLAlchemy URL, usually the inspection log's.
        create: make the tables when absent (False for readers such as the service, which
            must not create the monitor's tables).
    """

    def __init__(self, url: str, connect_timeout: float = 5.0, create: bool = True):
        self._engine = make_engine(engine_url(url), connect_timeout)
        if create:
            METADATA.create_all(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def append(self, result) -> int:
        """Store a check result (`checked_at`, `start` and `checks()`, e.g. a DriftResult).

        Returns:
            The number of metric rows written.
        """
        at, start = as_utc(result.checked_at), as_utc(result.start)
        rows = [
            {
                "metric": c.metric,
                "checked_at": at,
                "window_start": start,
                "value": _number(c.value),
                "threshold": _number(c.threshold),
                "flagged": bool(c.flagged) and not c.skipped,
                "skipped": c.skipped,
            }
            for c in result.checks()
        ]
        if rows:
            with self._engine.begin() as conn:
                conn.execute(CHECKS.insert(), rows)
        return len(rows)

    def series(self, metric: str, since: datetime | None = None, until=None) -> list[dict]:
        """A metric's checks, oldest first: checked_at, window_start, value, threshold,
        flagged, skipped (checked_at in [since, until])."""
        query = CHECKS.select().where(CHECKS.c.metric == metric)
        if since is not None:
            query = query.where(CHECKS.c.checked_at >= as_utc(since))
        if until is not None:
            query = query.where(CHECKS.c.checked_at <= as_utc(until))
        query = query.order_by(CHECKS.c.checked_at, CHECKS.c.id)
        with self._engine.connect() as conn:
            return [_check_dict(r._mapping) for r in conn.execute(query)]

    def latest(self) -> dict[str, dict]:
        """Every metric's latest check, by metric, in one query ({} while the table is absent).

        Returns:
            metric -> checked_at, window_start, value, threshold, flagged, skipped.
        """
        newest = (
            sa.select(CHECKS.c.metric, sa.func.max(CHECKS.c.id).label("id"))
            .group_by(CHECKS.c.metric)
            .subquery()
        )
        query = CHECKS.select().join(newest, CHECKS.c.id == newest.c.id)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
        except sa.exc.DBAPIError:
            if not sa.inspect(self._engine).has_table(CHECKS.name):
                return {}
            raise
        return {r.metric: _check_dict(r._mapping) for r in rows}

    def metrics(self) -> list[str]:
        """Every metric with at least one check."""
        with self._engine.connect() as conn:
            found = conn.execute(sa.select(CHECKS.c.metric).distinct())
            return sorted(r.metric for r in found)

    def sustained(self, metric: str, now: datetime, hours: float = 6.0,
                  max_gap_hours: float = 1.5, window_hours: float = 1.0) -> bool:  # fmt: skip
        """Whether the metric's drift is sustained at `now` (the module's rule), counting
        only checks after the last retrain this monitor started or joined."""
        last = self.last_trigger(before=now)
        since = None if last is None else last["triggered_at"] + timedelta(microseconds=1)
        run = flagged_run(self.series(metric, since, now), as_utc(now), max_gap_hours)
        return is_sustained(run, hours, window_hours)

    def record_trigger(
        self,
        at: datetime,
        metrics: list[str],
        reason: str,
        report: str,
        flow_run_id=None,
        started: bool = True,
    ) -> None:
        """Remember the retrain of a drift episode: what drifted, why, the report, and the
        run (one this monitor started, or one in progress that it joined)."""
        run = None if flow_run_id is None else str(flow_run_id)
        row = {"triggered_at": as_utc(at), "metrics": list(metrics), "reason": reason}
        row |= {"report": str(report), "flow_run_id": run, "started": bool(started)}
        with self._engine.begin() as conn:
            conn.execute(TRIGGERS.insert(), [row])

    def last_trigger(self, before: datetime | None = None) -> dict | None:
        """The latest retrain started at or before `before`, or None."""
        query = TRIGGERS.select().order_by(TRIGGERS.c.triggered_at.desc(), TRIGGERS.c.id.desc())
        if before is not None:
            query = query.where(TRIGGERS.c.triggered_at <= as_utc(before))
        with self._engine.connect() as conn:
            found = conn.execute(query.limit(1)).first()
        if found is None:
            return None
        row = dict(found._mapping)
        return row | {"triggered_at": as_utc(row["triggered_at"])}


def flagged_run(checks: list[dict], now: datetime, max_gap_hours: float) -> list[dict]:
    """The unbroken run of flagged checks ending with the latest one (oldest first).

    Args:
        checks: one metric's checks, oldest first (checked_at, flagged), none after `now`.
        now: when the rule is asked.
        max_gap_hours: the longest silence the run may contain.
    """
    gap = timedelta(hours=max_gap_hours)
    run: list[dict] = []
    later = now
    for check in reversed(checks):
        if not check["flagged"] or later - check["checked_at"] > gap:
            break
        run.append(check)
        later = check["checked_at"]
    return run[::-1]


def is_sustained(run: list[dict], hours: float, window_hours: float = 1.0) -> bool:
    """More than `hours / window_hours` checks (one per window) covering more than `hours`
    hours. Both in the same unit, so a compressed clock that scales both keeps the rule."""
    if len(run) < math.floor(hours / window_hours + 1e-9) + 1:
        return False
    covered = run[-1]["checked_at"] - run[0]["window_start"]
    return covered > timedelta(hours=hours)


def _check_dict(mapping) -> dict:
    row = {k: v for k, v in mapping.items() if k != "id"}
    return row | {k: as_utc(row[k]) for k in ("checked_at", "window_start")}


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
