"""The drift-monitor flow end to end: real Prefect (a throwaway server with a real
`weekly-retrain` deployment of a stand-in flow), a real inspection log and image store on
disk, real Evidently, real history tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mlflow.exceptions import MlflowException
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.testing.utilities import prefect_test_harness

from flows.monitor import monitor
from model.contract import read_split
from monitoring.drift import DriftResult, FamilyDrift
from monitoring.history import History
from registry import Split, install_first, open_store, register
from service.image_store import ImageStore
from service.inspection_log import InspectionLog
from tests.monitoring.test_drift import window_records
from tests.registry.fake_run import KIND, build_run, log_fake_run

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEPLOYMENT = "weekly-retrain/weekly-retrain"
FAST = {"max_reference_dies": 150}  # thresholds: a smaller reference sample


@flow(name="weekly-retrain")
def stand_in_retrain(config: str = "configs/cpu.yaml", model_name: str = "dieguard") -> None:
    """The deployment the monitor starts; no worker runs it, so its runs stay Scheduled."""


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        stand_in_retrain.to_deployment(name="weekly-retrain").apply()
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


def retrain_runs() -> list:
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(DEPLOYMENT)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[found.id]))
        )
    return list(runs)


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
    link = found["drift-process"].data  # [file:///.../process.html](file:///...)
    assert link.startswith("[file://") and "process.html" in link
    history = History(site["url"])
    assert [c["flagged"] for c in history.series("drift_process")] == [False]
    assert {"escape_rate", "fpr", "latency_p99_ms", "drift_notes"} <= set(history.metrics())
    history.close()
    assert retrain_runs() == []


def test_sustained_drift_starts_one_retrain(site, tmp_path):
    history_url = f"sqlite:///{tmp_path / 'history.db'}"
    drifted_at = NOW + 7 * HOUR
    flagged_hours(history_url, drifted_at - HOUR, 6)
    result, _ = run_monitor(site, tmp_path, drifted_at, history_url)
    assert result["drifted"] == ["process"] and result["sustained"] == ["drift_process"]
    assert result["retrain"]["started"] is True
    runs = retrain_runs()
    assert [str(r.id) for r in runs] == [result["retrain"]["flow_run_id"]]
    assert runs[0].state.is_scheduled()
    assert {"drift-triggered", "drift:process"} <= set(runs[0].tags)
    reason = artifacts(runs[0].id)["retrain-reason"].data
    assert "drift_process" in reason and str(tmp_path / "reports") in reason

    # The next check: still drifted, but this episode has its retrain.
    again, _ = run_monitor(site, tmp_path, drifted_at + timedelta(minutes=1), history_url)
    assert again["drifted"] == ["process"] and again["retrain"] is None
    assert len(retrain_runs()) == 1

    # Another monitor (its own history) finds the Scheduled run and starts nothing.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    flagged_hours(other, drifted_at - HOUR, 6)
    joined, _ = run_monitor(site, tmp_path, drifted_at, other)
    assert joined["retrain"] == {
        "started": False,
        "flow_run_id": result["retrain"]["flow_run_id"],
        "state": "Scheduled",
    }
    assert len(retrain_runs()) == 1
    last = History(other).last_trigger()
    assert last["started"] is False and last["flow_run_id"] == result["retrain"]["flow_run_id"]


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
