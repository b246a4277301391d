"""Report runs: a set of report files kept in the artifact store as one MLflow run (the drift
monitor's Evidently reports of one check), so that they outlive the disk that wrote them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from registry.runs import finished_run
from registry.store import Store, experiment_id
from registry.values import to_text

KEY_TAG = "dieguard.report_key"  # identifies the reports' run (a retry reuses it)


def log_reports(
    store: Store,
    experiment: str,
    run_name: str,
    reports: Mapping[str, str | Path],
    key: str,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Log report files as one finished MLflow run, each under `<name>/`.

    A finished run of the experiment with the same `key` is returned instead, so a retried
    task logs nothing twice.

    Args:
        experiment: the experiment's name (created under the store's artifact root when new).
        reports: name -> the report file.
        key: what identifies these reports, e.g. the check's time.
        tags: extra run tags (values stringified).
    Returns:
        The run's id; a report is at `<artifact_uri>/<name>/<file name>`.
    Raises:
        FileNotFoundError: a report file is absent (nothing is logged).
    """
    missing = [str(p) for p in reports.values() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no such report: {', '.join(missing)}")
    client = store.client
    exp_id = experiment_id(store, experiment)
    earlier = finished_run(client, exp_id, KEY_TAG, key)
    if earlier is not None:
        return earlier
    run_tags = {KEY_TAG: key, **{k: to_text(v) for k, v in (tags or {}).items()}}
    run_id = client.create_run(exp_id, run_name=run_name, tags=run_tags).info.run_id
    try:
        for name, path in reports.items():
            client.log_artifact(run_id, str(path), name)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
