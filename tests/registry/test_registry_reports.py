"""Report runs in a real MLflow store (SQLite): each report under its name, one run per key."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry import log_reports, open_store


def reports(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    for name in ("process", "notes"):
        (folder / f"{name}.html").write_text(f"<html>{name} drift</html>")
    return {name: folder / f"{name}.html" for name in ("process", "notes")}


def test_reports_are_kept_under_their_names_and_a_retry_logs_nothing_twice(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    files = reports(tmp_path / "check")
    run_id = log_reports(store, "m-monitoring", "monitor-1", files, key="t1", tags={"n": 2})
    assert log_reports(store, "m-monitoring", "monitor-1", files, key="t1") == run_id
    other = log_reports(store, "m-monitoring", "monitor-2", files, key="t2")
    assert other != run_id
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["n"] == "2"
    root = Path(run.info.artifact_uri.removeprefix("file://"))
    assert root.is_relative_to(tmp_path / "artifacts" / "m-monitoring")
    for name, path in files.items():
        assert (root / name / path.name).read_text() == path.read_text()


def test_a_missing_report_logs_no_run(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    files = reports(tmp_path / "check") | {"images": tmp_path / "check" / "images.html"}
    with pytest.raises(FileNotFoundError, match="images.html"):
        log_reports(store, "m-monitoring", "monitor-1", files, key="t1")
    assert store.client.get_experiment_by_name("m-monitoring") is None
