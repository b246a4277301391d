"""The drift-monitor flow end to end: real Prefect (a throwaway server and its events), a
real inspection log and image store on disk, real Evidently, real history tables. What the
sustained-drift event starts is test_drift_trigger's part."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
)
from prefect.testing.utilities import prefect_test_harness

from flows.monitor import monitor
from model.contract import read_split
from monitoring.drift import DriftResult, FamilyDrift
from monitoring.history import History
from registry import Split, install_first, open_store, register
from service.image_store import ImageStore
from service.inspection_log import InspectionLog
from tasks.monitor import SUSTAINED_EVENT
from tests.monitoring.test_drift import window_records
from tests.registry.fake_run import KIND, build_run, log_fake_run

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEPLOYMENT = "weekly-retrain/weekly-retrain"
FAST = {"max_reference_dies": 150}  # thresholds: a smaller reference sample


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def fill_log(url: str, records: list[dict]) -> None:
    """Log the records as the service would (one champion decision each), with some labels."""
    with InspectionLog(url) as log:
        for i, r in enumerate(records):
            decision = {"role": "champion", "model_version": "3", "model_kind": "multimodal"}
            decision |= {"defect_class": 0, "flagged": i % 5 == 0}
            log.record(
                r
                | {"wafer_id": r["die_id"].rsplit("-", 1)[0], "route": "off"}
                | {"served_by": "champion", "defect_class": 0, "class_name": "good"}
                | {"confidence": 0.9, "flagged": i % 5 == 0, "model_kind": "multimodal"}
                | {"decisions": [decision], "latency_ms": 40.0 + i % 50}
            )
        assert log.flush(30)
        for r in records[:20]:
            log.add_feedback(r["die_id"], "confirm", "op.a")


def shifted(records: list[dict], reference: dict[str, float], sigmas: float) -> list[dict]:
    """A recipe change: every temperature zone `sigmas` reference sigma higher."""
    out = []
    for r in records:
        log = dict(r["process_log"])
        for name, sd in reference.items():
            log[name] = log.get(name, 0.0) + sigmas * sd
        out.append(r | {"process_log": log, "inspection_id": r["inspection_id"] + "-s"})
        out[-1]["die_id"] = "Z" + r["die_id"]  # other dies: feedback goes to the clean hour
    return out


@pytest.fixture(scope="module")
def site(tiny_data, tmp_path_factory):
    """A log with a clean hour before NOW and a drifted hour before NOW + 7 h."""
    root = tmp_path_factory.mktemp("site")
    store = ImageStore(root / "images")
    url = f"sqlite:///{root / 'log.db'}"
    clean = window_records(tiny_data / "test", store, NOW)
    train = read_split(tiny_data / "train").process
    zones = {c: float(train[c].std()) for c in train.columns if c.startswith("temperature_zone")}
    later = [r | {"received_at": r["received_at"] + 7 * HOUR} for r in clean]
    fill_log(url, clean + shifted(later, zones, 2.0))
    return {"url": url, "images": str(store.root), "reference": str(tiny_data / "train")}


def run_monitor(site, tmp_path, now, history_url=None, **where):
    where.setdefault("tracking_uri", f"sqlite:///{tmp_path / 'mlflow.db'}")  # keeps the reports
    state = monitor(
        log_url=site["url"],
        image_store=site["images"],
        reference_dir=where.pop("reference_dir", site["reference"]),
        report_dir=str(tmp_path / "reports"),
        now=now,
        thresholds=FAST,
        history_url=history_url,
        return_state=True,
        **where,
    )
    return state.result(), state.state_details.flow_run_id


def flagged_hours(url: str, last: datetime, hours: int) -> None:
    """`hours` hourly checks with the process family flagged, the last at `last`."""
    history = History(url)
    for h in range(hours, 0, -1):
        at = last - (h - 1) * HOUR
        family = FamilyDrift("process", 0.2, 0.1, True)
        history.append(DriftResult(at - HOUR, at, 120, {"process": family}))
    history.close()


def drift_events(count: int = 0, timeout_s: float = 30) -> list[dict]:
    """The sustained-drift events on the server, once there are `count` (0: as they are)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            query = {"filter": {"event": {"name": [SUSTAINED_EVENT]}}, "limit": 50}
            events = client.request("POST", "/events/filter", json=query).json()["events"]
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.5)


def artifacts(flow_run_id) -> dict:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_a_clean_hour_publishes_reports_and_starts_nothing(site, tmp_path):
    stale = tmp_path / "reports" / f"{NOW - timedelta(days=31):%Y%m%dT%H%M%SZ}"
    stale.mkdir(parents=True)  # a check's reports from 31 days ago: past the 30-day retention
    result, run_id = run_monitor(site, tmp_path, NOW)
    assert not stale.exists() and (tmp_path / "reports" / f"{NOW:%Y%m%dT%H%M%SZ}").is_dir()
    assert result["drifted"] == [] and result["sustained"] == [] and result["retrain"] is None
    assert result["window"]["inspections"] == 120 and result["window"]["labelled"] == 20
    assert set(result["reports"]) == {"process", "images", "notes"}
    found = artifacts(run_id)
    assert {"monitor-checks", "drift-process", "drift-images", "drift-notes"} <= set(found)
    table = found["monitor-checks"].data
    assert "| process |" in table and "escape rate" in table
    assert_reports_kept_in_mlflow(result, found, tmp_path / "mlflow.db")
    history = History(site["url"])
    assert [c["flagged"] for c in history.series("drift_process")] == [False]
    assert {"escape_rate", "fpr", "latency_p99_ms", "drift_notes"} <= set(history.metrics())
    history.close()
    assert drift_events() == []


def assert_reports_kept_in_mlflow(result: dict, found: dict, db: Path) -> None:
    """Each report is a copy in the check's MLflow run, and its Prefect artifact links it."""
    client = open_store(f"sqlite:///{db}").client
    experiment = client.get_experiment_by_name("dieguard-monitoring")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == f"monitor-{NOW:%Y-%m-%dT%H:%MZ}" and run.info.status == "FINISHED"
    links = result["logged_reports"]
    assert set(links) == set(result["reports"]) == {"process", "images", "notes"}
    for name, local in result["reports"].items():
        assert links[name] == f"{run.info.artifact_uri}/{name}/{Path(local).name}"
        kept = Path(links[name].removeprefix("file://"))
        assert kept.is_relative_to(db.parent / "artifacts" / "dieguard-monitoring")
        assert kept.read_bytes() == Path(local).read_bytes()
        assert found[f"drift-{name}"].data == f"[{links[name]}]({links[name]})"


def test_sustained_drift_emits_one_event_per_episode(site, tmp_path):
    history_url = f"sqlite:///{tmp_path / 'history.db'}"
    drifted_at = NOW + 7 * HOUR
    flagged_hours(history_url, drifted_at - HOUR, 6)
    result, run_id = run_monitor(site, tmp_path, drifted_at, history_url)
    assert result["drifted"] == ["process"] and result["sustained"] == ["drift_process"]
    assert result["retrain"]["deployment"] == DEPLOYMENT
    [event] = drift_events(1)
    assert event["id"] == result["retrain"]["event"]
    assert event["resource"]["prefect.resource.id"] == "dieguard.drift.dieguard"
    assert event["payload"]["families"] == ["process"] and event["payload"]["hours"] == 6
    assert str(tmp_path / "reports") in event["payload"]["report"]
    assert str(run_id) in str(event["related"])  # tied to the monitor's run

    # The next check: still drifted, but this episode has asked for its retrain.
    again, _ = run_monitor(site, tmp_path, drifted_at + timedelta(minutes=1), history_url)
    assert again["drifted"] == ["process"] and again["retrain"] is None
    assert len(drift_events(2, timeout_s=5)) == 1
    last = History(history_url).last_trigger()
    assert last["metrics"] == ["drift_process"] and "drift_process" in last["reason"]

    # With no deployment to ask, sustained drift is only reported.
    quiet = f"sqlite:///{tmp_path / 'quiet.db'}"
    flagged_hours(quiet, drifted_at - HOUR, 6)
    silent, _ = run_monitor(site, tmp_path, drifted_at, quiet, retrain_deployment="")
    assert silent["sustained"] == ["drift_process"] and silent["retrain"] is None
    assert len(drift_events(2, timeout_s=5)) == 1


def test_without_a_reference_the_champions_training_split_is_judged_against(
    site, tiny_data, tmp_path
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = open_store(uri)
    files = build_run(tmp_path / "run")
    files["splits"]["train"] = Split("train-digest", tiny_data / "train", rows=360)
    logged = log_fake_run(store, files)
    version = register(store.client, "dieguard-monitored", logged.serving[KIND], {})
    where = {"reference_dir": None, "model_name": "dieguard-monitored", "tracking_uri": uri}
    with pytest.raises(MlflowException):  # no champion yet: nothing to judge against
        run_monitor(site, tmp_path, NOW, **where)
    install_first(store.client, "dieguard-monitored", version, "first champion")
    result, _ = run_monitor(site, tmp_path, NOW, **where)
    assert result["reference_dir"] == str((tiny_data / "train").resolve())
    assert result["drifted"] == [] and set(result["reports"]) == {"process", "images", "notes"}
