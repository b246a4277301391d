"""Rolling performance figures of the served decisions, and their alerts.

Pure functions over inspection records (as `InspectionLog.window` returns them) and operator
feedback (as `InspectionLog.feedback` returns it) for the window [now - window, now). Among
the inspections an operator labelled: escape rate = defective dies (label != 0) the serving
model passed / defective dies; FPR = good dies (label 0) it flagged / good dies; both with
exact Clopper-Pearson bounds. Latency percentiles are nearest-rank (the smallest latency at
or above that share of the inspections).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np

from model.metrics import clopper_pearson
from model.schema import GOOD
from monitoring.config import MonitorConfig
from monitoring.history import Check

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Alert:
    """One threshold crossed: what, by how much, and what to do about it."""

    name: str
    value: float
    threshold: float
    message: str


@dataclass
class WindowReport:
    """The figures of one window and the alerts they raise."""

    start: datetime
    end: datetime
    inspections: int
    labelled: int
    escape: dict  # k, n, rate, lo, hi
    fpr: dict
    latency_ms: dict  # n, p50, p95, p99 (None without latencies)
    missing_notes: dict  # k, n, rate
    models: dict[str, dict]  # per served model version: served, flagged, labelled, escape, fpr
    thresholds: dict[str, float] = field(default_factory=dict)  # per checked figure
    alerts: list[Alert] = field(default_factory=list)

    @property
    def checked_at(self) -> datetime:
        return self.end

    def checks(self) -> list[Check]:
        """The window's figures as history entries (flagged when they alert)."""
        fired = {a.name for a in self.alerts}
        figures = {
            "escape_rate": (self.escape["rate"], self.escape["n"]),
            "fpr": (self.fpr["rate"], self.fpr["n"]),
            "latency_p99_ms": (self.latency_ms["p99"], self.latency_ms["n"]),
            "missing_note_rate": (self.missing_notes["rate"], self.missing_notes["n"]),
        }
        checks = [
            Check(name, value, self.thresholds[name], name in fired, "" if n else "no data")
            for name, (value, n) in figures.items()
        ]
        # the labelled dies behind the two rates, against their minimums (never flagged)
        counts = {"defective_labelled": self.escape["n"], "good_labelled": self.fpr["n"]}
        return checks + [
            Check(name, n, self.thresholds.get(name), False) for name, n in counts.items()
        ]

    def as_dict(self) -> dict:
        """JSON-ready (ISO times)."""
        out = asdict(self)
        return out | {"start": self.start.isoformat(), "end": self.end.isoformat()}


def window_report(
    inspections: list[dict], feedback: list[dict], now: datetime, config: MonitorConfig
) -> WindowReport:
    """The rolling figures of the window ending at `now`.

    Args:
        inspections: records with inspection_id, received_at, flagged, latency_ms,
            operator_notes, model_version (others outside the window are ignored).
        feedback: operator labels with inspection_id, label, created_at.
        now: the window's end (tz-aware).
        config: window length, thresholds and label minimums.
    Returns:
        The figures, per served model version too, and the alerts.
    """
    start = now - timedelta(hours=config.window_hours)
    rows = [r for r in inspections if start <= r["received_at"] < now]
    labels = _labels(rows, feedback)
    escape = _rate(
        [not r["flagged"] for r in rows if labels.get(r["inspection_id"], GOOD) != GOOD],
        config.confidence,
    )
    fpr = _rate(
        [bool(r["flagged"]) for r in rows if labels.get(r["inspection_id"]) == GOOD],
        config.confidence,
    )
    notes = [not (r.get("operator_notes") or "").strip() for r in rows]
    missing = {"k": sum(notes), "n": len(notes), "rate": _share(sum(notes), len(notes))}
    report = WindowReport(
        start=start,
        end=now,
        inspections=len(rows),
        labelled=len(labels),
        escape=escape,
        fpr=fpr,
        latency_ms=latency_percentiles([r.get("latency_ms") for r in rows]),
        missing_notes=missing,
        models=_per_model(rows, labels, config.confidence),
        thresholds={
            "escape_rate": config.max_escape,
            "fpr": config.max_fpr,
            "latency_p99_ms": config.max_p99_ms,
            "missing_note_rate": config.min_missing_note_rate,
            "defective_labelled": config.min_defective_labels,
            "good_labelled": config.min_good_labels,
        },
    )
    report.alerts = alerts(report, config)
    return report


def alerts(report: WindowReport, config: MonitorConfig) -> list[Alert]:
    """The seed's four alerts, each only once its minimum count is reached."""
    out = []
    e, f, lat, m = report.escape, report.fpr, report.latency_ms, report.missing_notes
    if e["n"] >= config.min_defective_labels and e["rate"] > config.max_escape:
        msg = f"escape rate {e['rate']:.2%} ({e['k']}/{e['n']} defective dies passed) > "
        out.append(
            Alert("escape_rate", e["rate"], config.max_escape, msg + _pct(config.max_escape))
        )
    if f["n"] >= config.min_good_labels and f["rate"] > config.max_fpr:
        msg = f"false positive rate {f['rate']:.2%} ({f['k']}/{f['n']} good dies flagged) > "
        out.append(Alert("fpr", f["rate"], config.max_fpr, msg + _pct(config.max_fpr)))
    if lat["n"] >= config.min_inspections and lat["p99"] > config.max_p99_ms:
        msg = f"p99 latency {lat['p99']:.0f} ms > {config.max_p99_ms:.0f} ms"
        out.append(Alert("latency_p99_ms", lat["p99"], config.max_p99_ms, msg))
    if m["n"] >= config.min_inspections and m["rate"] < config.min_missing_note_rate:
        msg = (
            f"only {m['rate']:.0%} of inspections lack a note (< "
            f"{config.min_missing_note_rate:.0%}): investigate whether operators are being "
            "encouraged to enter notes"
        )
        out.append(Alert("missing_note_rate", m["rate"], config.min_missing_note_rate, msg))
    return out


def latency_percentiles(latencies: list[float | None]) -> dict:
    """Nearest-rank p50, p95 and p99 of the known latencies (None without any)."""
    known = np.array([v for v in latencies if v is not None], dtype=np.float64)
    if not len(known):
        return {"n": 0} | {f"p{q}": None for q in PERCENTILES}
    values = np.percentile(known, PERCENTILES, method="inverted_cdf")
    return {"n": len(known)} | {f"p{q}": float(v) for q, v in zip(PERCENTILES, values)}


def _labels(rows: list[dict], feedback: list[dict]) -> dict[str, int]:
    """The latest operator label of each windowed inspection that has one."""
    ids = {r["inspection_id"] for r in rows}
    latest: dict[str, int] = {}
    for fb in sorted(feedback, key=lambda f: (f["created_at"], f.get("feedback_id", 0))):
        if fb["inspection_id"] in ids:
            latest[fb["inspection_id"]] = int(fb["label"])
    return latest


def _per_model(rows: list[dict], labels: dict[str, int], confidence: float) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[str(r["model_version"])].append(r)
    out = {}
    for version, served in sorted(groups.items()):
        mine = [(r, labels[r["inspection_id"]]) for r in served if r["inspection_id"] in labels]
        out[version] = {
            "served": len(served),
            "flagged": sum(bool(r["flagged"]) for r in served),
            "labelled": len(mine),
            "escape": _rate([not r["flagged"] for r, y in mine if y != GOOD], confidence),
            "fpr": _rate([bool(r["flagged"]) for r, y in mine if y == GOOD], confidence),
        }
    return out


def _rate(events: list[bool], confidence: float) -> dict:
    k, n = sum(events), len(events)
    lo, hi = clopper_pearson(k, n, confidence)
    return {"k": k, "n": n, "rate": _share(k, n), "lo": lo, "hi": hi}


def _share(k: int, n: int) -> float:
    return k / n if n else float("nan")


def _pct(value: float) -> str:
    return f"{value:.1%}"
