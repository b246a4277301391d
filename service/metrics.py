"""Prometheus metrics of one service instance (its own registry, so instances do not mix).

Besides its own counters, the service exports the hourly monitor's latest figures (escape
rate, FPR, labelled dies, drift per family) as gauges, read from the monitor's history at each
scrape; a figure the history does not hold (no check yet, or skipped) is left out.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)

# gauge name, help, history metric (monitoring.windows: the rolling 24 h window)
MONITOR_GAUGES = (
    ("dieguard_escape_rate_24h", "Defective dies passed / defective dies labelled, last 24 h.",
     "escape_rate"),
    ("dieguard_fpr_24h", "Good dies flagged / good dies labelled, last 24 h.", "fpr"),
    ("dieguard_defective_labelled_24h", "Defective dies labelled by operators, last 24 h.",
     "defective_labelled"),
    ("dieguard_good_labelled_24h", "Good dies labelled by operators, last 24 h.",
     "good_labelled"),
)  # fmt: skip


class ServiceMetrics:
    """The service's counters, histograms and gauges (names start with `dieguard_`)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.request_latency = Histogram(
            "dieguard_inspect_latency_seconds",
            "End-to-end time of answered inspections, from request to response.",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.model_latency = Histogram(
            "dieguard_model_batch_seconds",
            "Time of one model call on a batch.",
            ["role"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            "dieguard_batch_size", "Dies per model call.", ["role"], registry=r,
            buckets=(1, 2, 3, 4, 5, 6, 7, 8, 16, 32),
        )  # fmt: skip
        self.decisions = Counter(
            "dieguard_decisions_total",
            "Model decisions by class, model version and role (champion or candidate).",
            ["class_name", "model_version", "role", "served"],
            registry=r,
        )
        self.shadow_lost = Counter(
            "dieguard_shadow_decisions_lost_total",
            "Decisions of a model that did not decide the die, scored after the answer, that "
            "never reached the log (the inspection itself is unaffected).",
            ["role"],
            registry=r,
        )
        self.missing_notes = Counter(
            "dieguard_missing_notes_total", "Inspections without an operator note.", registry=r
        )
        self.missing_parameters = Counter(
            "dieguard_missing_parameters_total",
            "Process parameters absent from inspected dies.",
            registry=r,
        )
        self.inspections = Counter(
            "dieguard_inspections_total", "Inspections answered.", registry=r
        )
        self.rejected = Counter(
            "dieguard_rejected_requests_total",
            "Requests refused, by HTTP status.",
            ["status"],
            registry=r,
        )
        self.loaded = Gauge(
            "dieguard_model_loaded", "1 for each loaded model version.", ["role", "model_version"],
            registry=r,
        )  # fmt: skip
        self.log_buffered = Gauge(
            "dieguard_log_buffered", "Inspection records waiting to be written.", registry=r
        )
        self.log_dropped = Gauge(
            "dieguard_log_dropped", "Inspection records dropped from a full buffer.", registry=r
        )
        self.monitor = MonitorFigures()
        r.register(self.monitor)

    def observe_decision(self, class_name: str, version: str, role: str, served: bool) -> None:
        self.decisions.labels(class_name, version, role, "yes" if served else "no").inc()

    def model_changed(self, role: str, old: str | None, new: str | None) -> None:
        if old is not None:
            self.loaded.remove(role, old)
        if new is not None:
            self.loaded.labels(role, new).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MonitorFigures:
    """A collector of the monitor's latest check: gauges only for the figures it holds."""

    def __init__(self) -> None:
        self.latest: dict[str, dict] = {}

    def update(self, latest: dict[str, dict]) -> None:
        """Take the history's latest checks (`History.latest()`; {}: none)."""
        self.latest = dict(latest)

    def describe(self):
        return []  # the families depend on the history: collected at each scrape

    def collect(self):
        for name, text, metric in MONITOR_GAUGES:
            check = self.latest.get(metric)
            if check is not None and check["value"] is not None and not check["skipped"]:
                yield GaugeMetricFamily(name, text, value=check["value"])
        drift = {
            m.removeprefix("drift_"): c
            for m, c in self.latest.items()
            if m.startswith("drift_") and not c["skipped"]
        }
        flagged = GaugeMetricFamily(
            "dieguard_drift_flagged", "1 when the family drifted in the latest hourly check.",
            labels=["family"],
        )  # fmt: skip
        score = GaugeMetricFamily(
            "dieguard_drift_score", "The family's drift score in the latest hourly check.",
            labels=["family"],
        )  # fmt: skip
        for family, check in sorted(drift.items()):
            flagged.add_metric([family], 1.0 if check["flagged"] else 0.0)
            if check["value"] is not None:
                score.add_metric([family], check["value"])
        if drift:
            yield flagged
            yield score
        if self.latest:
            newest = max(c["checked_at"] for c in self.latest.values())
            yield GaugeMetricFamily(
                "dieguard_monitor_last_check_timestamp_seconds",
                "When the monitor's latest check ended (Unix time).",
                value=newest.timestamp(),
            )
