"""Monitoring tasks: read the windows, measure, publish, remember, and ask for a retrain.

Sustained drift is announced as the Prefect event `dieguard.drift.sustained`; the
`weekly-retrain` deployment's trigger (prefect.yaml) starts the retrain, and that
deployment's concurrency limit keeps it to one run at a time, whoever starts it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from monitoring.config import MonitorConfig
from monitoring.drift import DriftResult, measure_drift
from monitoring.history import History
from monitoring.windows import WindowReport, window_report
from service.inspection_log import InspectionLog

SUSTAINED_EVENT = "dieguard.drift.sustained"
CHECK_TIME = "%Y-%m-%dT%H:%MZ"  # a check's MLflow run name: monitor-<check time>
WINDOW_FIELDS = ("flagged", "latency_ms", "operator_notes", "model_version")
DRIFT_FIELDS = ("die_id", "process_log", "operator_notes", "image_ref", "model_version")


def _unreachable(task, task_run, state) -> bool:
    """Retry when the registry could not be read, not when it has no such champion."""
    from mlflow.exceptions import MlflowException

    err = state.result(raise_on_failure=False)
    missing = isinstance(err, MlflowException) and err.error_code == "RESOURCE_DOES_NOT_EXIST"
    return not (missing or isinstance(err, LookupError))


@task(
    cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=_unreachable
)
def champion_reference(tracking_uri: str | None, model_name: str, cache_dir: str) -> str:
    """The champion's training split as a local folder: the folder its training run read,
    or the snapshot of its ``s3://`` data set, fetched into `cache_dir` when not there yet.

    Raises:
        LookupError: the champion's training run recorded no training split.
    """
    from model.remote import is_remote, resolve_data_dir
    from registry import open_store, training_split

    source = training_split(open_store(tracking_uri).client, model_name)["source"]
    if not is_remote(source):
        return source
    data_set, _, split = source.rstrip("/").rpartition("/")
    return str(Path(resolve_data_dir(data_set, cache_dir)) / split)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def measure_window(log_url: str, now: datetime, config: MonitorConfig) -> WindowReport:
    """The rolling performance figures and alerts of the window ending at `now`."""
    start = now - timedelta(hours=config.window_hours)
    log = InspectionLog(log_url)
    try:
        rows = log.window(start, now, fields=WINDOW_FIELDS)
        feedback = log.feedback(latest_only=True, since=start)
    finally:
        log.close()
    return window_report(rows, feedback, now, config)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def measure_window_drift(
    log_url: str,
    now: datetime,
    config: MonitorConfig,
    reference_dir: str,
    image_root: str | None,
    report_dir: Path,
    similar_uri: str | None = None,
    model_version: str | None = None,
) -> DriftResult:
    """The drift of the last drift window against the reference, with its HTML reports."""
    start = now - timedelta(hours=config.drift_window_hours)
    log = InspectionLog(log_url)
    try:
        rows = log.window(start, now, fields=DRIFT_FIELDS, limit=config.max_current_dies)
    finally:
        log.close()
    return measure_drift(
        rows, reference_dir, image_root, report_dir, now, config, similar_uri, model_version
    )


def monitoring_experiment(model_name: str) -> str:
    """The MLflow experiment that keeps the monitor's reports of a registered model."""
    return f"{model_name}-monitoring"


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def log_check_reports(
    tracking_uri: str | None, model_name: str, reports: dict[str, str], now: datetime
) -> str:
    """Keep one check's Evidently reports in the MLflow artifact store (S3 in production):
    one run of `<model>-monitoring` per check, each family's report under `<family>/`.

    Returns:
        The run's id.
    """
    from registry import log_reports, open_store

    return log_reports(
        open_store(tracking_uri),
        monitoring_experiment(model_name),
        f"monitor-{now:{CHECK_TIME}}",
        reports,
        key=now.isoformat(),
        tags={"dieguard.checked_at": now.isoformat(), "dieguard.families": sorted(reports)},
    )


@task(cache_policy=NO_CACHE)
def record_checks(history_url: str, results: list, now: datetime, config: MonitorConfig) -> list:
    """Append the results to the history; the drift metrics sustained at `now`."""
    history = History(history_url)
    try:
        for result in results:
            history.append(result)
        drift = [c.metric for r in results if isinstance(r, DriftResult) for c in r.checks()]
        return [
            m
            for m in drift
            if history.sustained(
                m, now, config.sustained_hours, config.max_gap_hours, config.drift_window_hours
            )
        ]
    finally:
        history.close()


@task(cache_policy=NO_CACHE)
def publish_checks(window: WindowReport, drift: DriftResult) -> str:
    """A markdown artifact: the alerts, the window's figures, the drift per family."""
    markdown = monitor_markdown(window, drift)
    create_markdown_artifact(markdown, key="monitor-checks", description="Hourly monitor")
    return markdown


@task(cache_policy=NO_CACHE)
def announce_sustained_drift(
    model_name: str,
    deployment: str,
    metrics: list[str],
    reason: str,
    report: str,
    history_url: str,
    now: datetime,
    hours: float,
) -> dict:
    """Emit `dieguard.drift.sustained` for the model and remember it as the episode's trigger.

    Returns:
        {"event": the event's id, "metrics": what drifted, "deployment": the one asked for}
    """
    families = [m.removeprefix("drift_") for m in metrics]
    event = emit_event(
        SUSTAINED_EVENT,
        resource={"prefect.resource.id": f"dieguard.drift.{model_name}"},
        payload={"families": families, "hours": hours, "reason": reason, "report": report,
                 "deployment": deployment, "checked_at": now.isoformat()},
    )  # fmt: skip
    history = History(history_url)
    try:
        history.record_trigger(now, metrics, reason, report, None, started=False)
    finally:
        history.close()
    get_run_logger().warning("drift sustained (%s): asked %s for a retrain", ", ".join(families),
                             deployment)  # fmt: skip
    return {"event": str(event.id) if event else None, "metrics": metrics, "deployment": deployment}


def monitor_markdown(window: WindowReport, drift: DriftResult) -> str:
    """The check as markdown: alerts first, then the figures and the drift table."""
    e, f, lat, m = window.escape, window.fpr, window.latency_ms, window.missing_notes
    lines = [f"## Monitor check at {window.end:%Y-%m-%d %H:%M} UTC", ""]
    lines += [f"- **ALERT** {a.message}" for a in window.alerts] or ["No alerts."]
    lines += [
        "",
        f"Last {(window.end - window.start) / timedelta(hours=1):g} h: {window.inspections} "
        f"inspections, {window.labelled} labelled.",
        "",
        "| figure | value | count | 95% interval |",
        "| --- | --- | --- | --- |",
        f"| escape rate | {_pct(e['rate'])} | {e['k']}/{e['n']} | {_interval(e)} |",
        f"| FPR | {_pct(f['rate'])} | {f['k']}/{f['n']} | {_interval(f)} |",
        f"| latency p50/p95/p99 ms | {_ms(lat)} | {lat['n']} | |",
        f"| inspections without notes | {_pct(m['rate'])} | {m['k']}/{m['n']} | |",
        "",
        f"Drift of the last {(drift.end - drift.start) / timedelta(hours=1):g} h ({drift.dies} "
        "dies) against the reference:",
        "",
        "| family | score | threshold | drifted | details |",
        "| --- | --- | --- | --- | --- |",
    ]
    for fam in drift.families.values():
        score = "-" if fam.score is None else f"{fam.score:.3f}"
        verdict = "skipped" if fam.skipped else ("**yes**" if fam.drifted else "no")
        lines.append(f"| {fam.name} | {score} | {fam.threshold:g} | {verdict} | {_detail(fam)} |")
    return "\n".join(lines)


def _detail(fam) -> str:
    d = fam.details
    if fam.skipped:
        return fam.skipped
    parts = []
    if d.get("drifted_columns"):
        parts.append("drifted: " + ", ".join(d["drifted_columns"][:8]))
    if d.get("mean_shift_sigma"):
        parts.append("mean beyond 3 sigma: " + ", ".join(d["mean_shift_sigma"]))
    if "new_words" in d:
        parts.append(f"new words ({d['new_word_share']:.1%}): " + ", ".join(d["new_words"]))
    return "; ".join(parts)


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{value:.2%}"


def _interval(rate: dict) -> str:
    return f"{_pct(rate['lo'])} to {_pct(rate['hi'])}"


def _ms(lat: dict) -> str:
    if not lat["n"]:
        return "-"
    return "/".join(f"{lat[k]:.0f}" for k in ("p50", "p95", "p99"))
