"""The hourly monitor: rolling escape rate, FPR, latency and notes; drift; the retrain trigger.

Run it once with `python -m flows.monitor`; every hour, as the `drift-monitor` deployment in
prefect.yaml. When a drift family has been flagged for more than 6 consecutive hours
(monitoring.history), it emits `dieguard.drift.sustained`: the `weekly-retrain`
deployment's trigger starts the retrain, and its concurrency limit of one run keeps a
retrain already in progress the only one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger

from monitoring.config import MonitorConfig
from monitoring.drift import REPORT_FOLDER, prune_reports
from service.log_tables import as_utc
from tasks.monitor import (
    announce_sustained_drift,
    champion_reference,
    log_check_reports,
    measure_window,
    measure_window_drift,
    publish_checks,
    record_checks,
)
from tasks.reports import publish_logged_reports

RETRAIN_DEPLOYMENT = "weekly-retrain/weekly-retrain"


@flow(name="drift-monitor", log_prints=True)
def monitor(
    log_url: str = "sqlite:///runs/service/inspections.db",
    image_store: str | None = "runs/service/images",
    reference_dir: str | None = None,
    model_name: str = "dieguard",
    tracking_uri: str | None = None,
    cache_dir: str = ".cache/dieguard",
    similar_uri: str | None = None,
    model_version: str | None = None,
    report_dir: str = "runs/monitor",
    now: datetime | None = None,
    thresholds: dict[str, float] | None = None,
    history_url: str | None = None,
    retrain_deployment: str = RETRAIN_DEPLOYMENT,
) -> dict:
    """Check the last 24 h of served decisions and the last hour's drift; retrain on
    sustained drift.

    Args:
        log_url: the inspection log's database.
        image_store: the service's image store, a folder or s3://bucket/prefix (None: no
            image drift).
        reference_dir: a split folder to judge drift against (dataset contract); None:
            the champion's training split, from its lineage in the registry, so the
            reference follows every promotion.
        model_name, tracking_uri: the registry of that champion (None: mlruns/mlflow.db),
            whose artifact store keeps the reports (experiment `<model_name>-monitoring`).
        cache_dir: where a champion trained on ``s3://`` data has its snapshot fetched.
        similar_uri, model_version: the similar-defect store and the version whose
            embeddings to compare (default version: the one that served most of the hour).
        report_dir: the Evidently HTML reports go to `<report_dir>/<check time>/`, then
            to one MLflow run per check, whose copies the Prefect artifacts link.
        now: the check's time (default: the clock).
        thresholds: MonitorConfig fields to change, e.g. {"max_escape": 0.01}.
        history_url: the history's database (default: the inspection log's).
        retrain_deployment: the deployment asked for a retrain, `<flow>/<deployment>`, named
            in the sustained-drift event ("": no event, the sustained drift is only reported).
    Returns:
        alerts, drifted families, sustained metrics, the retrain request (the event, or
        None), report paths and their logged URIs ("logged_reports"), the window's and the
        drift's figures, and the reference folder judged against.
    """
    log = get_run_logger()
    now = datetime.now(UTC) if now is None else as_utc(now)
    cfg = MonitorConfig.from_overrides(thresholds)
    folder = Path(report_dir) / f"{now:{REPORT_FOLDER}}"
    if reference_dir is None:
        reference_dir = champion_reference(tracking_uri, model_name, cache_dir)
        log.info("drift reference: the champion's training split %s", reference_dir)
    window = measure_window(log_url, now, cfg)
    drift = measure_window_drift(
        log_url, now, cfg, reference_dir, image_store, folder, similar_uri, model_version
    )
    publish_checks(window, drift)
    if cfg.report_retention_days > 0:
        old = prune_reports(report_dir, now - timedelta(days=cfg.report_retention_days))
        if old:
            log.info("deleted the reports of %d checks older than %g days", len(old),
                     cfg.report_retention_days)  # fmt: skip
    reports = {f.name: f.report for f in drift.families.values() if f.report}
    for alert in window.alerts:
        log.warning("ALERT %s", alert.message)
    sustained = record_checks(history_url or log_url, [window, drift], now, cfg)
    retrain = None
    if sustained and retrain_deployment:
        reason = (
            f"{', '.join(sustained)} above threshold in more than {cfg.sustained_hours:g} "
            f"consecutive hourly checks (last at {now:%Y-%m-%d %H:%M} UTC)"
        )
        retrain = announce_sustained_drift(
            model_name, retrain_deployment, sustained, reason, str(folder.resolve()),
            history_url or log_url, now, cfg.sustained_hours,
        )  # fmt: skip
    links = {}
    if reports:  # kept in MLflow after the trigger: a store outage fails the run, not the event
        run_id = log_check_reports(tracking_uri, model_name, reports, now)
        keys = {name: f"drift-{name}" for name in reports}
        links = publish_logged_reports(tracking_uri, run_id, reports, keys)
    return {
        "alerts": [a.name for a in window.alerts],
        "drifted": drift.drifted,
        "sustained": sustained,
        "retrain": retrain,
        "reports": reports,
        "logged_reports": links,
        "window": window.as_dict(),
        "drift": drift.as_dict(),
        "reference_dir": str(reference_dir),
    }


if __name__ == "__main__":
    monitor()
