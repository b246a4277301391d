"""Trends over time: the dashboard's figures per hour or day over a chosen range.

From the inspection log's written rows, per bucket: the flag rate (flagged / inspected, with
its exact Clopper-Pearson band) and latency p50/p99 (nearest rank). From the monitor's history: the
escape rate and FPR on operator-labelled dies with their bands, and each drift family's
verdict; a bucket shows the monitor's latest check in it (each check covers the monitor's
own window). From the registry: promotions, rollout steps and rollbacks, for the time axis.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import numpy as np
import sqlalchemy as sa
from scipy.stats import beta

from registry import open_store
from registry.events import events
from service.die_search import FilterError, read_time
from service.log_tables import INSPECTIONS, as_utc

logger = logging.getLogger("dieguard.service")

BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_SPAN = timedelta(days=7)
HOURLY_UP_TO = timedelta(days=3)  # longer ranges default to days
MAX_BUCKETS = 2000
EVENT_KINDS = ("promotion", "rollout", "rollback")
RATES = {"escape": ("escape_rate", "defective_labelled"), "fpr": ("fpr", "good_labelled")}
DRIFT_PREFIX = "drift_"


@dataclass(frozen=True)
class TrendRange:
    """[start, end) cut into buckets of one hour or one day."""

    start: datetime
    end: datetime
    bucket: str

    @property
    def step(self) -> timedelta:
        return BUCKETS[self.bucket]

    def times(self) -> list[datetime]:
        """The start of every bucket."""
        count = math.ceil((self.end - self.start) / self.step)
        return [self.start + i * self.step for i in range(count)]

    def index(self, at: datetime) -> int:
        """The bucket `at` falls in (out of range: below 0 or past the last)."""
        return math.floor((at - self.start) / self.step)

    def query_string(self) -> str:
        times = {k: getattr(self, k).strftime("%Y-%m-%dT%H:%M") for k in ("start", "end")}
        return urlencode(times | {"bucket": self.bucket})


def parse_range(params, now: datetime | None = None) -> TrendRange:
    """The range in a page's query parameters: `start`, `end` (dates or times, UTC) and
    `bucket` (hour or day); by default the last 7 days, in hours up to 3 days, else days.

    Raises:
        FilterError: an unreadable time, an unknown bucket, an empty range, or more than
            2,000 buckets.
    """
    bucket = str(params.get("bucket", "")).strip()
    if bucket and bucket not in BUCKETS:
        raise FilterError(f"bucket must be one of {', '.join(BUCKETS)}, not {bucket[:20]!r}")
    now = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    end = read_time(params, "end") or now + timedelta(hours=1)
    start = read_time(params, "start") or end - DEFAULT_SPAN
    if end <= start:
        raise FilterError("the time range ends before it starts")
    bucket = bucket or ("hour" if end - start <= HOURLY_UP_TO else "day")
    start = _floor(start, bucket)
    if (end - start) / BUCKETS[bucket] > MAX_BUCKETS:
        raise FilterError(f"the range holds more than {MAX_BUCKETS} {bucket}s; choose fewer")
    return TrendRange(start, end, bucket)


def _floor(at: datetime, bucket: str) -> datetime:
    at = at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if bucket == "day" else at


@dataclass
class Trends:
    """The figures of every bucket of a range (None or nan where a bucket has none)."""

    span: TrendRange
    times: list[datetime]
    flag: list[dict]  # k, n, rate, lo, hi per bucket
    latency_p50: list[float]
    latency_p99: list[float]
    escape: list[dict | None]
    fpr: list[dict | None]
    drift: dict[str, list[bool | None]]  # family -> flagged per bucket
    events: list[dict] = field(default_factory=list)  # time, kind, text
    notes: list[str] = field(default_factory=list)  # what could not be read, and why


def collect_trends(log, history, registry, span: TrendRange) -> Trends:
    """The trends of `span` from the inspection log, the monitor's history and the registry.

    Args:
        log: the InspectionLog.
        history: the monitor's History (unreadable: its figures are left empty, with a note).
        registry: (tracking URI, model name) whose version events mark the time axis.
    Raises:
        LogUnavailableError: the inspection log cannot be reached.
    """
    flag, p50, p99 = _log_figures(log.read_stored(lambda conn: _inspections(conn, span)), span)
    trends = Trends(span, span.times(), flag, p50, p99, [], [], {})
    try:
        trends.escape, trends.fpr = (_rate_series(history, span, *RATES[k]) for k in RATES)
        trends.drift = _drift_series(history, span)
    except sa.exc.SQLAlchemyError as err:
        trends.notes.append(f"The monitor's history cannot be read ({type(err).__name__}).")
        empty = [None] * len(trends.times)
        trends.escape, trends.fpr = empty, list(empty)
    try:
        trends.events = version_events(*registry, span)
    except Exception as err:  # the registry marks the axis; the figures stand without it
        logger.warning("registry events unreadable: %s", err)
        trends.notes.append(f"The registry's events cannot be read ({type(err).__name__}).")
    return trends


def _inspections(conn, span: TrendRange) -> list[tuple]:
    """(received_at, flagged, latency_ms) of the inspections written in the range."""
    at = INSPECTIONS.c.received_at
    columns = (at, INSPECTIONS.c.flagged, INSPECTIONS.c.latency_ms)
    query = sa.select(*columns).where(at >= span.start, at < span.end)
    return [tuple(row) for row in conn.execute(query)]


def _log_figures(rows: list[tuple], span: TrendRange):
    """Flag rate with its band, latency p50 and p99 per bucket."""
    count = len(span.times())
    flagged: list[list[bool]] = [[] for _ in range(count)]
    latency: list[list[float]] = [[] for _ in range(count)]
    for at, is_flagged, latency_ms in rows:
        i = span.index(as_utc(at))
        if 0 <= i < count:
            flagged[i].append(bool(is_flagged))
            if latency_ms is not None:
                latency[i].append(latency_ms)
    flag = rates([sum(f) for f in flagged], [len(f) for f in flagged])
    p50 = [_nearest_rank(values, 50) for values in latency]
    p99 = [_nearest_rank(values, 99) for values in latency]
    return flag, p50, p99


def _nearest_rank(values: list[float], percent: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(values, percent, method="inverted_cdf"))


def _latest_per_bucket(checks: list[dict], span: TrendRange) -> dict[int, dict]:
    """The latest check in each bucket (checks come oldest first)."""
    return {span.index(c["checked_at"]): c for c in checks if c["checked_at"] < span.end}


def _rate_series(history, span: TrendRange, metric: str, counted: str) -> list[dict | None]:
    """A rate's latest check per bucket as k, n, rate, lo, hi (None: no judged check)."""
    labelled = {c["checked_at"]: c["value"] for c in history.series(counted, span.start)}
    judged = {}
    for i, check in _latest_per_bucket(history.series(metric, span.start), span).items():
        n = labelled.get(check["checked_at"])
        if check["value"] is not None and not check["skipped"] and n:
            judged[i] = (round(check["value"] * n), int(n))
    out: list[dict | None] = [None] * len(span.times())
    if judged:
        k, n = zip(*judged.values(), strict=True)
        for i, figure in zip(judged, rates(k, n), strict=True):
            out[i] = figure
    return out


def rates(k, n, confidence: float = 0.95) -> list[dict]:
    """Proportions k/n with their exact two-sided Clopper-Pearson bands (the beta
    distribution's quantiles, all at once): k, n, rate, lo, hi (nan where n is 0)."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    tail = (1 - confidence) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(tail, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - tail, k + 1, n - k), 1.0)
        share = k / n
    empty = n == 0
    lo, hi, share = (np.where(empty, np.nan, v) for v in (lo, hi, share))
    return [
        {"k": int(a), "n": int(b), "rate": float(r), "lo": float(low), "hi": float(high)}
        for a, b, r, low, high in zip(k, n, share, lo, hi, strict=True)
    ]


def _drift_series(history, span: TrendRange) -> dict[str, list[bool | None]]:
    """Each drift family's latest verdict per bucket (None: none, or skipped)."""
    out = {}
    for metric in history.metrics():
        if not metric.startswith(DRIFT_PREFIX):
            continue
        verdicts: list[bool | None] = [None] * len(span.times())
        for i, check in _latest_per_bucket(history.series(metric, span.start), span).items():
            verdicts[i] = None if check["skipped"] else bool(check["flagged"])
        out[metric.removeprefix(DRIFT_PREFIX)] = verdicts
    return out


@functools.lru_cache(maxsize=4)
def _client(tracking_uri: str | None):
    return open_store(tracking_uri).client


def version_events(tracking_uri: str | None, model_name: str, span: TrendRange) -> list[dict]:
    """Promotions, rollout steps and rollbacks of the model's versions within the range,
    oldest first: time, kind and a line saying what happened."""
    client = _client(tracking_uri)
    found = []
    for version in client.search_model_versions(f"name = '{model_name}'"):
        for event in events(version.tags):
            if event["kind"] not in EVENT_KINDS:
                continue
            detail = event.get("detail") or {}
            at = _event_time(detail.get("time") or event["time"])
            if at is not None and span.start <= at < span.end:
                text = _event_text(event["kind"], str(version.version), detail)
                found.append({"time": at, "kind": event["kind"], "text": text})
    return sorted(found, key=lambda e: e["time"])


def _event_time(text: str) -> datetime | None:
    try:
        return read_time({"time": text}, "time")
    except FilterError:
        return None


def _event_text(kind: str, version: str, detail: dict) -> str:
    if kind == "promotion":
        return f"v{version} promoted to champion"
    if kind == "rollback":
        reason = detail.get("reason")
        return f"v{version} rolled back" + (f" ({reason})" if reason else "")
    stage = detail.get("stage") or detail.get("mode") or ""
    return f"v{version} rollout: {stage}" + (" ended" if detail.get("mode") == "off" else "")
